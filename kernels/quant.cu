// FP8 e4m3 block quantization (DeepSeek-V3's format; the host twin is src/quant/).
//
//   quant_act_fp8:    per row r and 128-column group g of a bf16 activation x[rows, cols]
//                     scale[g, r] = max(amax(x[r, g*128 .. g*128+128]), 1e-10) / 448
//                     code[r, c]  = e4m3_rne_satfinite(x[r, c] / scale[g, r])
//                     codes row-major [rows, cols]; scales "outer-dimension major"
//                     ([groups, rows], what cuBLASLt's VEC128_32F scale mode reads).
//   quant_weight_fp8: the same per 128x128 block of an f32 weight [count, rows, cols]
//                     (random weights generated in f32 by fill_normal_f32), scales
//                     [count, row_blocks, scale_ld] (cuBLASLt's BLK128x128_32F layout).
//
// Numerics: one IEEE fp32 division for the scale and one per value (no fast-math), then
// cvt.rn.satfinite.e4m3: bit-identical to src/quant/mod.rs, so the CPU reference sees the
// same codes. NaN inputs give NaN codes (they fail checks instead of hiding).
// Bytes per call (activations): 2*rows*cols read, rows*cols + 4*rows*groups written.
// Launch: quant_act_fp8 one warp per (row, group), 8 warps per block (4 values a lane);
// quant_weight_fp8 one 256-thread block per 128x128 block.
#include <cuda_fp8.h>

#include "common.cuh"

__device__ __forceinline__ unsigned char to_e4m3(float v) {
    return static_cast<unsigned char>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
}

__device__ __forceinline__ float group_scale(float amax) { return fmaxf(amax, static_cast<float>(QUANT_AMAX_EPS)) / static_cast<float>(QUANT_E4M3_MAX);
}

extern "C" __global__ void quant_act_fp8(const QuantActParams p) {
    const int lane = threadIdx.x & 31;
    const long long item = static_cast<long long>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int groups = (p.cols + QUANT_BLOCK - 1) / QUANT_BLOCK;
    if (item >= static_cast<long long>(p.rows) * groups) return;  // whole warps exit together
    const int r = static_cast<int>(item / groups), g = static_cast<int>(item % groups);
    const int c0 = g * QUANT_BLOCK + lane * QUANT_VALUES_PER_LANE;
    const bf16* src = p.src + static_cast<long long>(r) * p.src_ld;
    float v[QUANT_VALUES_PER_LANE];
    float amax = 0.f;
#pragma unroll
    for (int j = 0; j < QUANT_VALUES_PER_LANE; ++j) {
        v[j] = c0 + j < p.cols ? to_f32(src[c0 + j]) : 0.f;
        amax = fmaxf(amax, fabsf(v[j]));
    }
    const float scale = group_scale(warp_max(amax));
    unsigned char* dst = static_cast<unsigned char*>(p.codes) + static_cast<long long>(r) * p.cols;
#pragma unroll
    for (int j = 0; j < QUANT_VALUES_PER_LANE; ++j)
        if (c0 + j < p.cols) dst[c0 + j] = to_e4m3(v[j] / scale);
    if (lane == 0) p.scales[static_cast<long long>(g) * p.rows + r] = scale;
}

extern "C" __global__ void quant_weight_fp8(const QuantWeightParams p) {
    __shared__ float warp_amax[32];
    const int cb = blockIdx.x, rb = blockIdx.y, index = blockIdx.z;
    const long long r0 = static_cast<long long>(rb) * QUANT_BLOCK, c0 = static_cast<long long>(cb) * QUANT_BLOCK;
    const int h = static_cast<int>(min(static_cast<long long>(QUANT_BLOCK), p.rows - r0));
    const int w = static_cast<int>(min(static_cast<long long>(QUANT_BLOCK), p.cols - c0));
    const long long base = static_cast<long long>(index) * p.rows * p.cols + r0 * p.cols + c0;
    float amax = 0.f;
    for (int i = threadIdx.x; i < h * w; i += blockDim.x) amax = fmaxf(amax, fabsf(p.src[base + (i / w) * p.cols + i % w]));
    amax = warp_max(amax);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    if (lane == 0) warp_amax[warp] = amax;
    __syncthreads();
    amax = lane < nwarps ? warp_amax[lane] : 0.f;
    const float scale = group_scale(warp_max(amax));
    unsigned char* dst = static_cast<unsigned char*>(p.codes);
    for (int i = threadIdx.x; i < h * w; i += blockDim.x) {
        const long long at = base + (i / w) * p.cols + i % w;
        dst[at] = to_e4m3(p.src[at] / scale);
    }
    if (threadIdx.x == 0)
        p.scales[(static_cast<long long>(index) * gridDim.y + rb) * p.scale_ld + cb] = scale;
}
