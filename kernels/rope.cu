// Rotary position embedding, in place, on a column window of q/k rows.
//
// Head h's rotary part starts at column col_offset + h*head_stride + rope_offset and spans
// rotary_dim values (d). With pos = positions[row], c_i = cos_sin[pos, i] and
// s_i = cos_sin[pos, d/2 + i] (host table: cos/sin(pos * inv_freq_i) * attention_factor),
// each pair (a, b) with frequency i becomes
//     a' = a*c_i - b*s_i,    b' = b*c_i + a*s_i
// where the pair is (x_i, x_{i+d/2}) for rotate-half (NeoX, ROPE_STYLE_CODE_ROTATE_HALF)
// and (x_{2i}, x_{2i+1}) for interleaved (GPT-J, ROPE_STYLE_CODE_INTERLEAVED). head_stride
// and rope_offset let one kernel serve plain heads (stride = head_dim, offset 0) and
// DeepSeek MLA q (stride 192, offset 128: rope on the last 64 dims).
//
// dtypes: bf16 x, int32 positions, fp32 table and math, one rounding per stored value;
// products and sums use __fmul_rn/__fadd_rn so the fp32 result matches a plain CPU
// evaluation exactly (no fused multiply-add).
// Bytes per call: 4 * rows * n_heads * d (x read + write) + 8*d per distinct position;
// 6 FLOPs per pair.
// Launch: 1-D grid-stride over (row, head, group of 4 pairs), 256 threads. Groups use 8-
// (rotate-half) or 16-byte (interleaved) vectors and float4 table reads when strides and
// offsets allow; otherwise one pair per thread.
#include "kern_util.cuh"

__device__ __forceinline__ void rope_pair(float& a, float& b, float c, float s) {
    const float a2 = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    const float b2 = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
    a = a2;
    b = b2;
}

// Four consecutive bf16 values through one 8-byte access.
__device__ __forceinline__ void load4(const bf16* p, float (&f)[4]) {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
    const float2 t0 = __bfloat1622float2(h[0]), t1 = __bfloat1622float2(h[1]);
    f[0] = t0.x, f[1] = t0.y, f[2] = t1.x, f[3] = t1.y;
}

__device__ __forceinline__ void store4(bf16* p, const float (&f)[4]) {
    uint2 u;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&u);
    h[0] = __floats2bfloat162_rn(f[0], f[1]);
    h[1] = __floats2bfloat162_rn(f[2], f[3]);
    *reinterpret_cast<uint2*>(p) = u;
}

extern "C" __global__ void rope(const RopeParams p) {
    const int half = p.rotary_dim >> 1;
    const bf16* base = p.x + p.col_offset + p.rope_offset;
    const bool interleaved = p.interleaved != ROPE_STYLE_CODE_ROTATE_HALF;
    // Elements per vector access: rotate-half reads 4 values from each half (8 bytes),
    // interleaved reads 4 adjacent pairs (16 bytes).
    const int align = interleaved ? 8 : 4;
    const bool vec = (half & 3) == 0 && (p.ld % align) == 0 && (p.head_stride % align) == 0 &&
                     (reinterpret_cast<uintptr_t>(base) % (align * sizeof(bf16))) == 0 && is_aligned16(p.cos_sin);
    const int pairs = vec ? 4 : 1;
    const long long groups = half / pairs;
    const long long per_row = static_cast<long long>(p.n_heads) * groups;
    const long long total = static_cast<long long>(p.rows) * per_row;
    const bool fits32 = total < (1ll << 32);

    for (long long idx = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; idx < total;
         idx += static_cast<long long>(gridDim.x) * blockDim.x) {
        const RowChunk rc = split_index(idx, per_row, fits32);
        const int chunk = static_cast<int>(rc.chunk), ngroups = static_cast<int>(groups);
        const int head = chunk / ngroups;
        const int i = (chunk - head * ngroups) * pairs;  // first frequency index
        bf16* h = p.x + rc.row * p.ld + p.col_offset + static_cast<long long>(head) * p.head_stride + p.rope_offset;
        const float* cs = p.cos_sin + static_cast<long long>(p.positions[rc.row]) * p.rotary_dim;
        if (vec) {
            const float4 c4 = __ldg(reinterpret_cast<const float4*>(cs + i));
            const float4 s4 = __ldg(reinterpret_cast<const float4*>(cs + half + i));
            const float c[4] = {c4.x, c4.y, c4.z, c4.w}, s[4] = {s4.x, s4.y, s4.z, s4.w};
            if (interleaved) {
                float v[8];
                load8(h + 2 * i, v);
#pragma unroll
                for (int k = 0; k < 4; ++k) rope_pair(v[2 * k], v[2 * k + 1], c[k], s[k]);
                store8(h + 2 * i, v);
            } else {
                float a[4], b[4];
                load4(h + i, a);
                load4(h + half + i, b);
#pragma unroll
                for (int k = 0; k < 4; ++k) rope_pair(a[k], b[k], c[k], s[k]);
                store4(h + i, a);
                store4(h + half + i, b);
            }
        } else {
            const int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
            float a = to_f32(h[ia]), b = to_f32(h[ib]);
            rope_pair(a, b, cs[i], cs[half + i]);
            h[ia] = to_bf16(a);
            h[ib] = to_bf16(b);
        }
    }
}
