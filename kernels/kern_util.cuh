// Helpers shared by the memory-bound kernels (embed, norm, rope, act, init, route, misc).
//
// The bf16 kernels move data in 16-byte chunks of eight values when every row they touch
// starts on a 16-byte boundary, and fall back to one value per access otherwise, so a
// kernel is correct for any width, row stride and column offset and fast for the shapes
// that matter (hidden sizes are multiples of 8, buffers come from cudaMalloc).
#pragma once
#include "common.cuh"

// True when `p` can be accessed as uint4 (16 bytes).
__device__ __forceinline__ bool is_aligned16(const void* p) {
    return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// True when every row of a bf16 matrix starting at `p` with stride `ld` elements is
// 16-byte aligned, so rows can be read in chunks of eight.
__device__ __forceinline__ bool rows_aligned16(const bf16* p, long long ld) {
    return is_aligned16(p) && (ld & 7) == 0;
}

__device__ __forceinline__ void load8(const bf16* p, float (&f)[8]) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 t = __bfloat1622float2(h[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}

// Read-only variant (weights, inputs the kernel never writes): goes through the
// non-coherent cache path.
__device__ __forceinline__ void load8_ro(const bf16* p, float (&f)[8]) {
    const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 t = __bfloat1622float2(h[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}

// Rounds eight floats to bf16 (round-to-nearest-even, once each) and stores 16 bytes.
__device__ __forceinline__ void store8(bf16* p, const float (&f)[8]) {
    uint4 u;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&u);
#pragma unroll
    for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    *reinterpret_cast<uint4*>(p) = u;
}

// Rounds each float to bf16 and back, so later arithmetic sees the stored value.
__device__ __forceinline__ float round_bf16(float x) { return to_f32(to_bf16(x)); }

// Splits a flat work index into (row, chunk) for `per_row` chunks per row. 32-bit
// division when the whole range fits, since 64-bit division is a long software routine.
struct RowChunk {
    long long row;
    long long chunk;
};
__device__ __forceinline__ RowChunk split_index(long long i, long long per_row, bool fits32) {
    if (fits32) {
        const unsigned q = static_cast<unsigned>(i) / static_cast<unsigned>(per_row);
        return {static_cast<long long>(q), i - static_cast<long long>(q) * per_row};
    }
    const long long q = i / per_row;
    return {q, i - q * per_row};
}

// `act` is an `Act` code of the generated header (ACT_NONE: identity).
__device__ __forceinline__ float apply_act(float g, int act) {
    switch (act) {
        case ACT_SILU:
            return g / (1.f + expf(-g));
        case ACT_GELU_TANH: {
            // 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))
            const float inner = 0.7978845608028654f * (g + 0.044715f * g * g * g);
            return 0.5f * g * (1.f + tanhf(inner));
        }
        case ACT_GELU_ERF:
            return 0.5f * g * (1.f + erff(g * 0.7071067811865476f));
        default:
            return g;
    }
}
