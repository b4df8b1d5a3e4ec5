// Helpers shared by the attention kernels (attention_prefill.cu, attention_decode.cu, mla.cu):
// cp.async tile loads, ldmatrix / mma.sync m16n8k16 bf16 wrappers, and the split-KV
// combine step.
//
// mma.sync m16n8k16 fragment layout (g = lane / 4, t = lane % 4), used throughout:
//   A 16x16 row-major: a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..)
//   B 16x8 (k x n):    b0 = (k 2t..2t+1, n g), b1 = (k 2t+8.., n g)
//   C 16x8 fp32:       c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..2t+1)
// Shared-memory tiles are row-major with rows padded by 8 bf16 (16 bytes): for a row
// length that is a multiple of 16 elements the padded stride is an odd number of 16-byte
// chunks, so the 8 row addresses of one ldmatrix phase fall in 8 distinct bank groups.
#pragma once
#include "common.cuh"

namespace attn {

constexpr float LOG2E = 1.4426950408889634f;

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global->shared copy that bypasses L1; with `valid` false nothing is read and the
// 16 shared bytes are zero-filled, which is how out-of-range rows and padded head-dim
// columns become exact zeros in the mma (gmem must still be a mapped address).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)),
                 "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldsm_x4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                                        const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                                          const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(smem_addr(p)));
}

// c += a * b, bf16 inputs, fp32 accumulators.
__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats -> one register of two bf16, `lo` in the low half (the lower column index).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
}

// A-fragment of a 16x16 tile stored row-major in shared memory at `tile` (row stride `ld`
// elements): lanes 0-15 address rows 0-15 at column 0, lanes 16-31 the same rows at column 8.
__device__ __forceinline__ void load_a_frag(uint32_t a[4], const bf16* tile, int ld, int lane) {
    ldsm_x4(a[0], a[1], a[2], a[3], tile + (lane & 15) * ld + (lane >> 4) * 8);
}

// B-fragments for two adjacent n8 tiles of B = K^T, where K is stored [key][dim] in shared
// memory (16 keys starting at `tile`, 16 dims): b[0..1] for keys 0-7, b[2..3] for keys 8-15.
__device__ __forceinline__ void load_kt_frag(uint32_t b[4], const bf16* tile, int ld, int lane) {
    ldsm_x4(b[0], b[1], b[2], b[3],
            tile + ((lane & 7) + ((lane >> 4) << 3)) * ld + ((lane >> 3) & 1) * 8);
}

// B-fragments for two adjacent n8 tiles of B = V, V stored [key][dim] (16 keys, 16 dims from
// `tile`), transposed by ldmatrix: b[0..1] for dims 0-7, b[2..3] for dims 8-15.
__device__ __forceinline__ void load_v_frag(uint32_t b[4], const bf16* tile, int ld, int lane) {
    ldsm_x4_t(b[0], b[1], b[2], b[3],
              tile + ((lane & 7) + (((lane >> 3) & 1) << 3)) * ld + (lane >> 4) * 8);
}

// Score transform in the log2 domain: scale, optional tanh soft cap (Grok), then * log2(e)
// so the softmax can use exp2.
__device__ __forceinline__ float score_log2(float qk, float scale, float softcap) {
    float s = qk * scale;
    if (softcap > 0.f) s = softcap * tanhf(s / softcap);
    return s * LOG2E;
}

// Split-KV partial results in `scratch` (fp32): o_part[rows][num_splits][d_v] followed by
// lse[rows][num_splits] (log2-domain log-sum-exp; -inf marks a split with no keys), where
// rows = batch * heads ordered (b, h). Merges one (b, h) row per block into bf16 `o`.
__device__ __forceinline__ void combine_splits(const float* scratch, bf16* o, long long o_batch_stride,
                                               long long o_head_stride, int batch, int heads, int d_v,
                                               int num_splits) {
    const int h = blockIdx.x, b = blockIdx.y;
    const long long row = (long long)b * heads + h;
    const float* o_part = scratch + row * num_splits * d_v;
    const float* lse = scratch + (long long)batch * heads * num_splits * d_v + row * num_splits;
    float lse_max = -INFINITY;
    for (int s = 0; s < num_splits; ++s) lse_max = fmaxf(lse_max, lse[s]);
    float wsum = 0.f;
    for (int s = 0; s < num_splits; ++s) wsum += lse[s] == -INFINITY ? 0.f : exp2f(lse[s] - lse_max);
    const float inv = 1.f / wsum;
    bf16* out = o + b * o_batch_stride + h * o_head_stride;
    for (int c = threadIdx.x * 4; c < d_v; c += blockDim.x * 4) {
        float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
        for (int s = 0; s < num_splits; ++s) {
            if (lse[s] == -INFINITY) continue;  // empty split: its o_part was never written
            const float w = exp2f(lse[s] - lse_max) * inv;
            const float4 v = *reinterpret_cast<const float4*>(o_part + (long long)s * d_v + c);
            acc.x += w * v.x; acc.y += w * v.y; acc.z += w * v.z; acc.w += w * v.w;
        }
        out[c] = to_bf16(acc.x); out[c + 1] = to_bf16(acc.y);
        out[c + 2] = to_bf16(acc.z); out[c + 3] = to_bf16(acc.w);
    }
}

}  // namespace attn
