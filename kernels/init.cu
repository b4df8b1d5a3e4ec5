// Synthetic weights on the device: the counter-based normal generator of
// src/weights/rng.rs, evaluated for a window of an HF tensor.
//
//   dst[r, c] = value(seed, idx),  idx = transposed ? (src_col0 + c) * src_ld + (src_row0 + r)
//                                                   : (src_row0 + r) * src_ld + (src_col0 + c)
//   value = fma(std, unit(seed, idx), mean)   (bf16: rounded once with __float2bfloat16_rn)
//
// `seed` is rng.rs `tensor_seed(global_seed, hf_name)`, `src_ld` the row length of the full
// HF tensor, (src_row0, src_col0) where this rank's shard starts in it; `transposed` writes
// the shard in the transposed layout (e.g. a weight the GEMM wants as [in, out]) while
// indexing the HF [out, in] tensor, so every rank and the CPU reference agree on each value.
//
// dtypes: bf16 (fill_normal_bf16) or fp32 (fill_normal_f32, router weights and correction
// bias) output; all sizes int64. Bytes per call: rows*cols*{2,4} written, nothing read;
// about 40 integer instructions per value (three 64-bit multiplies), so on an H200 it is
// integer-bound near the write bandwidth.
// Launch: 1-D grid-stride over (row, 8-value chunk), 256 threads; full chunks of 16-byte
// aligned rows are written with 16-byte stores (one uint4 of bf16 or two float4), the rest
// one value at a time. Consecutive threads write consecutive chunks (coalesced).
#include "kern_util.cuh"

// ---- Exact mirror of src/weights/rng.rs. Any change there must be made here too. ----

// rng.rs `mix64` (splitmix64 finaliser).
__device__ __forceinline__ unsigned long long rng_mix64(unsigned long long z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// rng.rs multiplier applied to the element index before mixing.
constexpr unsigned long long RNG_INDEX_MUL = 0xD1B54A32D192ED03ull;

// rng.rs `value`, given `index * RNG_INDEX_MUL` (wrapping) already formed, so a loop can
// step the product by addition. Four 16-bit fields summed as integers (exact), one
// conversion, one subtraction (exact: both below 2^24), one rounded multiply by
// IRWIN_HALL_SCALE, one fused multiply-add: the same roundings as the Rust code.
__device__ __forceinline__ float rng_value_premul(unsigned long long seed, unsigned long long index_times_mul,
                                                  float mean, float std) {
    const unsigned long long h = rng_mix64(seed ^ index_times_mul);
    const unsigned s = static_cast<unsigned>(h & 0xffff) + static_cast<unsigned>((h >> 16) & 0xffff) +
                       static_cast<unsigned>((h >> 32) & 0xffff) + static_cast<unsigned>(h >> 48);
    const float z = __fmul_rn(__fsub_rn(static_cast<float>(s), 131070.0f), 2.6428997e-5f);
    return __fmaf_rn(std, z, mean);
}

// rng.rs `value(seed, index, mean, std)`.
__device__ __forceinline__ float rng_value(unsigned long long seed, unsigned long long index, float mean, float std) {
    return rng_value_premul(seed, index * RNG_INDEX_MUL, mean, std);
}

// ---- Kernels ----

__device__ __forceinline__ void store_chunk(bf16* d, const float (&v)[8]) { store8(d, v); }
__device__ __forceinline__ void store_chunk(float* d, const float (&v)[8]) {
    reinterpret_cast<float4*>(d)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(d)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ __forceinline__ void store_one(bf16* d, float v) { *d = __float2bfloat16_rn(v); }
__device__ __forceinline__ void store_one(float* d, float v) { *d = v; }

// One FillNormalParams serves both entries; its untyped `dst` holds T values.
template <typename T>
__device__ __forceinline__ void fill_normal(const FillNormalParams& p) {
    constexpr long long kValuesPer16B = 16 / sizeof(T);
    const bool vec = is_aligned16(p.dst) && (p.dst_ld % kValuesPer16B) == 0;
    const long long per_row = (p.cols + 7) >> 3;
    const long long total = p.rows * per_row;
    const bool fits32 = total < (1ll << 32);
    // Index step between neighbouring columns, premultiplied.
    const unsigned long long col_step = p.transposed ? static_cast<unsigned long long>(p.src_ld) : 1ull;
    const unsigned long long col_step_mul = col_step * RNG_INDEX_MUL;
    for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<long long>(gridDim.x) * blockDim.x) {
        const RowChunk rc = split_index(i, per_row, fits32);
        const long long r = rc.row, c0 = rc.chunk * 8;
        // Unsigned (wrapping) index arithmetic, like the u64 indices of rng.rs.
        const unsigned long long sr = p.src_row0 + r, sc = p.src_col0 + c0, src_ld = p.src_ld;
        const unsigned long long index0 = p.transposed ? sc * src_ld + sr : sr * src_ld + sc;
        unsigned long long im = index0 * RNG_INDEX_MUL;
        const int n = static_cast<int>(min(8ll, p.cols - c0));
        T* d = static_cast<T*>(p.dst) + r * p.dst_ld + c0;
        float v[8];
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            v[k] = rng_value_premul(p.seed, im, p.mean, p.std);
            im += col_step_mul;
        }
        if (vec && n == 8) {
            store_chunk(d, v);
        } else {
#pragma unroll
            for (int k = 0; k < 8; ++k)
                if (k < n) store_one(d + k, v[k]);
        }
    }
}

extern "C" __global__ void fill_normal_bf16(const FillNormalParams p) { fill_normal<bf16>(p); }

extern "C" __global__ void fill_normal_f32(const FillNormalParams p) { fill_normal<float>(p); }
