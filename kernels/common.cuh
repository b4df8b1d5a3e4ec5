// Shared helpers for fwdbench kernels.
//
// Conventions (every kernel file follows them):
// - One `extern "C" __global__` entry per kernel, taking one `Params` struct by value. The
//   structs, the integer codes (ACT_SILU, ...) and the shared constants (tile shapes,
//   vector counts) are defined once, in src/exec/cuda/kernels/<file>.rs; build.rs generates
//   fwdbench_params.h from them, included below. Pointer fields use the typedefs here; sizes
//   are int32 or int64 as documented per field.
// - Activations are bf16 row-major with an explicit row stride ("ld", in elements), so a
//   kernel can read or write a column window of a wider buffer (e.g. q inside fused qkv).
// - Arithmetic in fp32; one rounding to bf16 per stored value.
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;

// The element types behind the pointer aliases of src/exec/cuda/kernels/ptr.rs (u64 device
// addresses on the Rust side, the same 8 bytes here).
typedef bf16* Bf16Ptr;
typedef const bf16* ConstBf16Ptr;
typedef float* F32Ptr;
typedef const float* ConstF32Ptr;
typedef int* I32Ptr;
typedef const int* ConstI32Ptr;
typedef void* VoidPtr;

// A TMA descriptor (CUtensorMap of the driver API: 128 opaque bytes, 128-byte aligned),
// encoded on the host by src/exec/cuda/tma.rs and passed inside a __grid_constant__ Params.
struct alignas(128) TensorMap {
    unsigned long long opaque[16];
};

#include "fwdbench_params.h"

__device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 to_bf16(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over a block of `blockDim.x` threads (a multiple of 32, at most 1024); every thread
// gets the result. `scratch` must hold 32 floats.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : 0.f;
    return warp_sum(v);
}
