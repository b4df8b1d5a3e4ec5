// Normalisations: RMSNorm (optionally fused with the residual add), LayerNorm, and the
// per-head RMSNorm of Qwen3's QK-norm.
//
//   rms_norm:      if delta: x = bf16(x + delta)           (residual stream, stored back)
//                  out = bf16(w * bf16(x * rsqrt(mean(x^2) + eps)))
//                  The inner rounding is HF's cast order: normalise in fp32, cast to the
//                  activation dtype, then multiply by the bf16 weight.
//   layer_norm:    same residual handling, then
//                  out = bf16((x - mean) * rsqrt(var + eps) * w + b)   (fp32, population var)
//   head_rms_norm: in place, for each row and head h, the rms_norm formula (no residual)
//                  on x[row, col_offset + h*head_dim .. + head_dim] with weight[head_dim].
//
// dtypes: bf16 in/out/weights, fp32 statistics, rsqrtf.
// Bytes per call (rows x cols): 2*rows*cols*(2 + 2*has_delta) (+ weight, L2-resident);
// head_rms_norm 4*rows*n_heads*head_dim. FLOPs ~5 per value (negligible).
// Launch:
//   rms_norm / layer_norm: one block per row (grid-stride over rows), blockDim a multiple
//     of 32 chosen by the host so that ceil(cols/8) <= blockDim * NORM_VPT: the row then
//     lives in registers between the statistics and the output pass (one HBM read and one
//     write per value). Misaligned rows or wider rows fall back to re-reading the row
//     from global memory (L1/L2 hits), one value per access.
//   head_rms_norm: groups of L lanes per head (L = pow2 >= head_dim/8, at most 32), so a
//     warp covers 32/L heads, 16-byte vectors; misaligned or odd head_dim: a warp per
//     head, one value per access.
#include "kern_util.cuh"

// 16-byte vectors of a row each thread keeps in registers; the host sizes blocks with the
// same constant (int here: it meets signed sizes).
constexpr int NORM_VPT = NORM_VECS_PER_THREAD;
// Same for a head in head_rms_norm (head_dim <= 32 lanes * 4 * 8 = 1024 in registers).
constexpr int HEAD_NORM_VPT = HEAD_NORM_VECS_PER_THREAD;

// Loads one value of the (possibly residual-updated) row: x + delta rounded to bf16 and
// written back when delta is set.
__device__ __forceinline__ float norm_load_scalar(bf16* xr, const bf16* dr, long long c) {
    float v = to_f32(xr[c]);
    if (dr) {
        v = round_bf16(v + to_f32(dr[c]));
        xr[c] = to_bf16(v);
    }
    return v;
}

__device__ __forceinline__ void norm_load_vec(bf16* xr, const bf16* dr, long long c, float (&v)[8]) {
    load8(xr + c, v);
    if (dr) {
        float d[8];
        load8_ro(dr + c, d);
#pragma unroll
        for (int k = 0; k < 8; ++k) v[k] = round_bf16(v[k] + d[k]);
        store8(xr + c, v);
    }
}

// The output of one normalised value: HF's RMSNorm cast order, or LayerNorm's affine map.
template <bool kLayerNorm>
__device__ __forceinline__ float norm_out(float v, float mean, float rstd, float w, float b) {
    if (kLayerNorm) return (v - mean) * rstd * w + b;
    return w * round_bf16(v * rstd);
}

// One block normalises rows blockIdx.x, blockIdx.x + gridDim.x, ...
// For RMSNorm `mean` stays 0 and only the sum of squares is formed.
template <bool kLayerNorm>
__device__ __forceinline__ void norm_rows(bf16* x, int x_ld, const bf16* delta, int delta_ld, const bf16* weight,
                                          const bf16* bias, bf16* out, int out_ld, int rows, int cols, float eps) {
    __shared__ float scratch[32];
    const int tid = threadIdx.x, nt = blockDim.x;
    const bool vec = rows_aligned16(x, x_ld) && rows_aligned16(out, out_ld) && is_aligned16(weight) &&
                     (bias == nullptr || is_aligned16(bias)) && (delta == nullptr || rows_aligned16(delta, delta_ld));
    const int nvec = cols >> 3, tail = cols & 7;
    const bool in_regs = vec && nvec <= nt * NORM_VPT;
    const float inv_cols = 1.f / static_cast<float>(cols);

    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        bf16* xr = x + r * x_ld;
        const bf16* dr = delta ? delta + r * delta_ld : nullptr;
        bf16* outr = out + r * out_ld;
        if (in_regs) {
            float v[NORM_VPT][8];
            float tv = 0.f;  // this thread's value among the cols % 8 tail columns
            const bool has_tail = tid < tail;
            const long long tc = static_cast<long long>(nvec) * 8 + tid;
            float s = 0.f;
#pragma unroll
            for (int k = 0; k < NORM_VPT; ++k) {
                const int i = tid + k * nt;
                if (i < nvec) {
                    norm_load_vec(xr, dr, static_cast<long long>(i) * 8, v[k]);
#pragma unroll
                    for (int j = 0; j < 8; ++j) s += kLayerNorm ? v[k][j] : v[k][j] * v[k][j];
                }
            }
            if (has_tail) {
                tv = norm_load_scalar(xr, dr, tc);
                s += kLayerNorm ? tv : tv * tv;
            }
            s = block_sum(s, scratch);
            float mean = 0.f, rstd;
            if (kLayerNorm) {
                mean = s * inv_cols;
                float q = 0.f;
#pragma unroll
                for (int k = 0; k < NORM_VPT; ++k) {
                    if (tid + k * nt < nvec) {
#pragma unroll
                        for (int j = 0; j < 8; ++j) q += (v[k][j] - mean) * (v[k][j] - mean);
                    }
                }
                if (has_tail) q += (tv - mean) * (tv - mean);
                rstd = rsqrtf(block_sum(q, scratch) * inv_cols + eps);
            } else {
                rstd = rsqrtf(s * inv_cols + eps);
            }
#pragma unroll
            for (int k = 0; k < NORM_VPT; ++k) {
                const int i = tid + k * nt;
                if (i < nvec) {
                    float w[8], b[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, o[8];
                    load8_ro(weight + i * 8, w);
                    if (kLayerNorm) load8_ro(bias + i * 8, b);
#pragma unroll
                    for (int j = 0; j < 8; ++j) o[j] = norm_out<kLayerNorm>(v[k][j], mean, rstd, w[j], b[j]);
                    store8(outr + static_cast<long long>(i) * 8, o);
                }
            }
            if (has_tail) {
                const float b = kLayerNorm ? to_f32(bias[tc]) : 0.f;
                outr[tc] = to_bf16(norm_out<kLayerNorm>(tv, mean, rstd, to_f32(weight[tc]), b));
            }
        } else {
            // Generic path: the first pass applies the residual; later passes re-read the
            // row (each thread revisits the columns it wrote, so no cross-thread hazard).
            float s = 0.f;
            for (long long c = tid; c < cols; c += nt) {
                const float v = norm_load_scalar(xr, dr, c);
                s += kLayerNorm ? v : v * v;
            }
            s = block_sum(s, scratch);
            float mean = 0.f, rstd;
            if (kLayerNorm) {
                mean = s * inv_cols;
                float q = 0.f;
                for (long long c = tid; c < cols; c += nt) {
                    const float d = to_f32(xr[c]) - mean;
                    q += d * d;
                }
                rstd = rsqrtf(block_sum(q, scratch) * inv_cols + eps);
            } else {
                rstd = rsqrtf(s * inv_cols + eps);
            }
            for (long long c = tid; c < cols; c += nt) {
                const float b = kLayerNorm ? to_f32(bias[c]) : 0.f;
                outr[c] = to_bf16(norm_out<kLayerNorm>(to_f32(xr[c]), mean, rstd, to_f32(weight[c]), b));
            }
        }
    }
}

extern "C" __global__ void rms_norm(const RmsNormParams p) {
    norm_rows<false>(p.x, p.x_ld, p.delta, p.delta_ld, p.weight, nullptr, p.out, p.out_ld, p.rows, p.cols, p.eps);
}

extern "C" __global__ void layer_norm(const LayerNormParams p) {
    norm_rows<true>(p.x, p.x_ld, p.delta, p.delta_ld, p.weight, p.bias, p.out, p.out_ld, p.rows, p.cols, p.eps);
}

// Sum over aligned groups of `lanes` lanes (a power of two); every lane of the group
// gets its group's sum. All 32 lanes must call it.
__device__ __forceinline__ float group_sum(float v, int lanes) {
    for (int o = lanes >> 1; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

extern "C" __global__ void head_rms_norm(const HeadRmsNormParams p) {
    const int lane = threadIdx.x & 31;
    const bf16* base = p.x + p.col_offset;
    const int hvec = p.head_dim >> 3;
    const bool vec = (p.head_dim & 7) == 0 && rows_aligned16(base, p.ld) && is_aligned16(p.weight) &&
                     hvec <= 32 * HEAD_NORM_VPT;
    int lanes = 32;  // lanes per head
    if (vec)
        while (lanes > 1 && (lanes >> 1) >= hvec) lanes >>= 1;
    const int heads_per_warp = 32 / lanes;
    const int sub = lane % lanes, slot = lane / lanes;
    const long long items = static_cast<long long>(p.rows) * p.n_heads;
    const long long warp0 = (blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x) >> 5;
    const long long nwarps = (static_cast<long long>(gridDim.x) * blockDim.x) >> 5;
    const float inv_dim = 1.f / static_cast<float>(p.head_dim);

    // The loop bound is warp-uniform so every lane takes part in the shuffles.
    for (long long w = warp0; w * heads_per_warp < items; w += nwarps) {
        const long long item = w * heads_per_warp + slot;
        const bool valid = item < items;
        const long long row = valid ? item / p.n_heads : 0;
        const int head = valid ? static_cast<int>(item - row * p.n_heads) : 0;
        bf16* h = p.x + row * p.ld + p.col_offset + static_cast<long long>(head) * p.head_dim;
        if (vec) {
            float v[HEAD_NORM_VPT][8];
            float s = 0.f;
#pragma unroll
            for (int k = 0; k < HEAD_NORM_VPT; ++k) {
                const int i = sub + k * lanes;
                if (valid && i < hvec) {
                    load8(h + i * 8, v[k]);
#pragma unroll
                    for (int j = 0; j < 8; ++j) s += v[k][j] * v[k][j];
                }
            }
            const float rstd = rsqrtf(group_sum(s, lanes) * inv_dim + p.eps);
#pragma unroll
            for (int k = 0; k < HEAD_NORM_VPT; ++k) {
                const int i = sub + k * lanes;
                if (valid && i < hvec) {
                    float w8[8];
                    load8_ro(p.weight + i * 8, w8);
#pragma unroll
                    for (int j = 0; j < 8; ++j) v[k][j] = w8[j] * round_bf16(v[k][j] * rstd);
                    store8(h + i * 8, v[k]);
                }
            }
        } else {
            float s = 0.f;
            for (int c = lane; c < p.head_dim; c += 32) {
                const float v = to_f32(h[c]);
                s += v * v;
            }
            const float rstd = rsqrtf(warp_sum(s) * inv_dim + p.eps);
            for (int c = lane; c < p.head_dim; c += 32)
                h[c] = to_bf16(to_f32(p.weight[c]) * round_bf16(to_f32(h[c]) * rstd));
        }
    }
}
