// The Hopper (sm_90a) layer our TMA + wgmma kernels share: mbarrier pipelines, TMA tile
// loads, the wgmma shared-memory descriptor and issue/commit/wait, named barriers and
// setmaxnreg. Raw PTX, one line of formula per helper; the PTX ISA sections are named where
// a rule is easy to get wrong.
//
// Shared-memory tile convention (both TMA and wgmma agree on it): a tile of R rows by C bf16
// columns is stored as C/64 column chunks, each [R][64] with the 128-byte swizzle (16-byte
// chunk index XOR row % 8), chunk c at byte c * R * 128. TMA writes that layout from a box
// {64, R} with CU_TENSOR_MAP_SWIZZLE_128B (src/exec/cuda/tma.rs); its base must be
// 1024-byte aligned.
#pragma once
#include "common.cuh"
#include "wgmma.cuh"

namespace hopper {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ---- mbarrier (PTX ISA "Parallel synchronization: mbarrier") ----

__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t arrivals) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(arrivals) : "memory");
}

// Makes initialised barriers visible to the async (TMA) proxy; follow with __syncthreads.
__device__ __forceinline__ void mbar_init_fence() {
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

// One arrival that also tells the barrier to expect `bytes` of TMA transactions.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes)
                 : "memory");
}

__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}

// Waits until the barrier's phase with this parity has completed. A fresh barrier is in
// phase 0, so waiting for parity 1 passes at once: producers wait on "empty" barriers with
// the consumer parity ^ 1 and their first pass through the ring does not block.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
    const uint32_t addr = smem_addr(bar);
    uint32_t done = 0;
    while (!done) {
        asm volatile(
            "{\n.reg .pred p;\n"
            "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
            "selp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(addr), "r"(parity)
            : "memory");
    }
}

// A 1-D bulk copy global -> this CTA's shared memory (PTX ISA "cp.async.bulk"), its bytes
// counted on `bar` as transaction bytes: `bytes` a multiple of 16, both addresses 16-byte aligned.
__device__ __forceinline__ void bulk_load(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                     smem_addr(dst)),
                 "l"(src), "r"(bytes), "r"(smem_addr(bar))
                 : "memory");
}

// ---- TMA (cp.async.bulk.tensor), tensor maps passed as __grid_constant__ params ----

__device__ __forceinline__ void tma_prefetch(const TensorMap* map) {
    asm volatile("prefetch.tensormap [%0];" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

// Loads the box at coordinates (c0 innermost .. c3) into `dst`; completes `bytes` on `bar`
// (the caller's expect_tx counts the full box, zero-filled parts included).
__device__ __forceinline__ void tma_load_2d(void* dst, const TensorMap* map, uint64_t* bar, int c0, int c1) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];" ::"r"(
            smem_addr(dst)),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(c0), "r"(c1)
        : "memory");
}

__device__ __forceinline__ void tma_load_4d(void* dst, const TensorMap* map, uint64_t* bar, int c0, int c1, int c2,
                                            int c3) {
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5, "
        "%6}], [%2];" ::"r"(smem_addr(dst)),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
        : "memory");
}

// ---- warpgroup register reallocation and named barriers ----

template <int REGS>
__device__ __forceinline__ void setmaxnreg_inc() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(REGS));
}
template <int REGS>
__device__ __forceinline__ void setmaxnreg_dec() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(REGS));
}

// Barrier `id` (1..15; 0 is __syncthreads) over `threads` threads, a multiple of 32.
__device__ __forceinline__ void named_sync(int id, int threads) {
    asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_arrive(int id, int threads) {
    asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

// ---- wgmma (PTX ISA "Asynchronous Warpgroup Level Matrix Multiply-Accumulate") ----

// Byte offset of element (row, col) of a 64-column bf16 tile in the 128-byte swizzle that
// desc_sw128 describes (16-byte unit XOR row % 8): where threads store into such a tile.
__device__ __forceinline__ uint32_t sw128(int row, int col) {
    return row * 128 + ((((col >> 3) ^ row) & 7) << 4) + (col & 7) * 2;
}

// Shared-memory matrix descriptor with the 128-byte swizzle: start address, leading and
// stride byte offsets (each >> 4), swizzle mode 1 in bits 62-63.
//   K-major operand (rows x K, K contiguous): lbo unused, sbo = 1024 (next 8 rows); step K by
//   16 bf16 with +32 bytes, the next 64-column chunk with + rows * 128 bytes.
//   MN-major operand (K x N, N contiguous, chunks of 64 N): lbo = K rows * 128 (next N
//   chunk), sbo = 1024 (next 8 K rows); step K by 16 with + 2048 bytes.
__device__ __forceinline__ uint64_t desc_sw128(const void* p, uint32_t lbo, uint32_t sbo) {
    const uint64_t addr = smem_addr(p);
    return ((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>((lbo & 0x3FFFF) >> 4) << 16) |
           (static_cast<uint64_t>((sbo & 0x3FFFF) >> 4) << 32) | (1ull << 62);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int PENDING>
__device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(PENDING) : "memory");
}

// Keeps the compiler from moving reads or writes of accumulator registers across an
// issue/wait pair (they are written asynchronously by the tensor cores).
template <int N>
__device__ __forceinline__ void fence_regs(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

template <int N>
__device__ __forceinline__ void fence_regs(uint32_t (&a)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+r"(a[i])::"memory");
}

// D[64 x N] (+)= A * B with both operands in shared memory.
template <int N, int TRANS_B>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, int accumulate) {
    if constexpr (N == 16) wgmma_ss_n16<TRANS_B>(d, desc_a, desc_b, accumulate);
    else if constexpr (N == 32) wgmma_ss_n32<TRANS_B>(d, desc_a, desc_b, accumulate);
    else if constexpr (N == 64) wgmma_ss_n64<TRANS_B>(d, desc_a, desc_b, accumulate);
    else if constexpr (N == 80) wgmma_ss_n80<TRANS_B>(d, desc_a, desc_b, accumulate);
    else if constexpr (N == 128) wgmma_ss_n128<TRANS_B>(d, desc_a, desc_b, accumulate);
    else {
        static_assert(N == 256, "add the shape to scripts/gen_wgmma.py");
        wgmma_ss_n256<TRANS_B>(d, desc_a, desc_b, accumulate);
    }
}

// D[64 x N] (+)= A * B with A in registers.
template <int N, int TRANS_B>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b, int accumulate) {
    if constexpr (N == 16) wgmma_rs_n16<TRANS_B>(d, a, desc_b, accumulate);
    else if constexpr (N == 32) wgmma_rs_n32<TRANS_B>(d, a, desc_b, accumulate);
    else if constexpr (N == 64) wgmma_rs_n64<TRANS_B>(d, a, desc_b, accumulate);
    else if constexpr (N == 80) wgmma_rs_n80<TRANS_B>(d, a, desc_b, accumulate);
    else if constexpr (N == 128) wgmma_rs_n128<TRANS_B>(d, a, desc_b, accumulate);
    else {
        static_assert(N == 256, "add the shape to scripts/gen_wgmma.py");
        wgmma_rs_n256<TRANS_B>(d, a, desc_b, accumulate);
    }
}

// Two floats rounded to one bf16x2 word (first in the low half), the A-fragment element pair.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
}

// ---- a TMA -> wgmma ring of K tiles (BK = 64, one swizzle span), for GEMM mainloops ----
// STAGES stages of an A tile (A_ELEMS bf16) and a B tile (B_ELEMS), each guarded by a "full"
// barrier (one producer arrival + the TMA bytes) and an "empty" barrier (one arrival per
// consumer warp). K tile kt lives in stage kt % STAGES, phase (kt / STAGES) & 1.
template <int STAGES, int A_ELEMS, int B_ELEMS>
struct TmaRing {
    bf16* a;
    bf16* b;
    uint64_t* full;
    uint64_t* empty;

    // Dynamic shared memory this ring needs, with 1 KiB of slack for the 1024-byte alignment
    // of 128-byte swizzled TMA destinations.
    static constexpr int SMEM_BYTES = STAGES * (A_ELEMS + B_ELEMS) * 2 + 16 * STAGES + 1024;

    // Carves the ring out of `raw` and, in thread 0, initialises the barriers; the caller
    // __syncthreads() before any thread uses it.
    __device__ __forceinline__ TmaRing(unsigned char* raw, int consumer_warps) {
        unsigned char* base = raw + ((1024 - (smem_addr(raw) & 1023)) & 1023);
        a = reinterpret_cast<bf16*>(base);
        b = a + STAGES * A_ELEMS;
        full = reinterpret_cast<uint64_t*>(b + STAGES * B_ELEMS);
        empty = full + STAGES;
        if (threadIdx.x == 0) {
            for (int s = 0; s < STAGES; ++s) {
                mbar_init(&full[s], 1);
                mbar_init(&empty[s], consumer_warps);
            }
            mbar_init_fence();
        }
    }

    // Producer, one thread: waits until K tile kt's stage is free and arms its full barrier
    // for a whole A and B tile plus `extra_bytes` of other copies (bulk_load) completing on it;
    // returns the stage for the TMA loads.
    __device__ __forceinline__ int acquire(int kt, uint32_t extra_bytes = 0) const {
        const int s = kt % STAGES;
        mbar_wait(&empty[s], ((kt / STAGES) & 1) ^ 1);
        mbar_arrive_expect_tx(&full[s], (A_ELEMS + B_ELEMS) * 2 + extra_bytes);
        return s;
    }

    // One consumer warpgroup: acc (+)= A[a_offset slab] * B[b_offset slab]^T over k_tiles,
    // both K-major; keeps one stage's wgmma group in flight while it waits for the next.
    template <int N>
    __device__ __forceinline__ void consume(float (&acc)[N / 2], int a_offset, int b_offset, int k_tiles) const {
        const int lane = threadIdx.x % 32;
        for (int kt = 0; kt < k_tiles; ++kt) {
            const int s = kt % STAGES;
            mbar_wait(&full[s], (kt / STAGES) & 1);
            const uint64_t da = desc_sw128(a + s * A_ELEMS + a_offset, 16, 1024);
            const uint64_t db = desc_sw128(b + s * B_ELEMS + b_offset, 16, 1024);
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < 4; ++kk) wgmma_ss<N, 0>(acc, da + 2 * kk, db + 2 * kk, 1);
            wgmma_commit();
            // The previous stage's group is done once at most this one is pending: free it.
            wgmma_wait<1>();
            fence_regs(acc);
            if (kt > 0 && lane == 0) mbar_arrive(&empty[(kt - 1) % STAGES]);
        }
        wgmma_wait<0>();
        fence_regs(acc);
    }

    // A consumer warpgroup with nothing to compute still frees every stage it would have
    // read (the producer counts all consumer warps).
    __device__ __forceinline__ void drain(int k_tiles) const {
        for (int kt = 0; kt < k_tiles; ++kt) {
            const int s = kt % STAGES;
            mbar_wait(&full[s], (kt / STAGES) & 1);
            if (threadIdx.x % 32 == 0) mbar_arrive(&empty[s]);
        }
    }
};

// ---- Clusters (2-CTA pairs: moe_sched.cuh's CTA pairs, mla_decode_wgmma.cu's split merge) ----
__device__ __forceinline__ uint32_t cluster_ctarank() {
    uint32_t r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
}

// The shared::cluster address of `p` (this CTA's shared memory) in CTA `rank` of the cluster.
__device__ __forceinline__ uint32_t cluster_map(const void* p, uint32_t rank) {
    uint32_t out;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(out) : "r"(smem_addr(p)), "r"(rank));
    return out;
}

// Every non-exited thread of the cluster, release/acquire at cluster scope (barrier inits
// and DSMEM stores visible to the peer; no CTA leaves while its peer may still arrive on its
// barriers, multicast into it or read its shared memory).
__device__ __forceinline__ void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;" ::: "memory");
}

// Orders this thread's generic-proxy shared-memory writes before later async-proxy (TMA,
// wgmma) accesses of them.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

// L2 prefetches of TMA boxes (PTX ISA "cp.async.bulk.prefetch.tensor"): no shared memory, no
// barrier, with an L2 cache policy or (the 4-D one) without. moe_wgmma.cu's producer issues them
// a few K-tiles ahead of its ring, mla_decode_wgmma.cu's a tile ahead of its stages.
__device__ __forceinline__ void tma_prefetch_2d(const TensorMap* map, int c0, int c1, uint64_t policy) {
    asm volatile("cp.async.bulk.prefetch.tensor.2d.L2.global.tile.L2::cache_hint [%0, {%1, %2}], %3;" ::"l"(
                     reinterpret_cast<uint64_t>(map)),
                 "r"(c0), "r"(c1), "l"(policy)
                 : "memory");
}
__device__ __forceinline__ void tma_prefetch_4d(const TensorMap* map, int c0, int c1, int c2, int c3, uint64_t policy) {
    asm volatile("cp.async.bulk.prefetch.tensor.4d.L2.global.tile.L2::cache_hint [%0, {%1, %2, %3, %4}], %5;" ::"l"(
                     reinterpret_cast<uint64_t>(map)),
                 "r"(c0), "r"(c1), "r"(c2), "r"(c3), "l"(policy)
                 : "memory");
}

__device__ __forceinline__ void tma_prefetch_4d(const TensorMap* map, int c0, int c1, int c2, int c3) {
    asm volatile("cp.async.bulk.prefetch.tensor.4d.L2.global.tile [%0, {%1, %2, %3, %4}];" ::"l"(
                     reinterpret_cast<uint64_t>(map)),
                 "r"(c0), "r"(c1), "r"(c2), "r"(c3)
                 : "memory");
}

}  // namespace hopper
