// The persistent tile schedule the MoE grouped GEMMs share (kernels/moe_wgmma.cu bf16,
// kernels/moe_fp8.cu FP8): dynamic tile claiming, the raster that keeps the CTAs sharing an
// operand together, and the L2 policies of the weight boxes.
//
// Claiming. One CTA per SM. CTA b takes tile b first; every later tile comes from a global
// counter (`gridDim.x + atomicAdd(counter, 1)`), so tiles start in raster order as SMs free
// up, whatever each CTA's history. With a static stride (tile b + i * grid, v2) the CTAs that
// read the same A rows drift apart over a run (their per-tile times differ by a few per cent,
// and the differences add up over 30-50 tiles), and an A tile read by the 16-28 n-tiles of its
// M-block came from HBM ~6.7 times instead of once: ncu measured 18.2 GB of DRAM reads in
// DeepSeek-V3's gate/up GEMM against 15.5 GB of weights and A (docs/perf.md, MoE v3). The
// counter lives in moe.rs's scratch right after total_padded and is zeroed by the permute
// kernel that runs before the gate/up GEMM (one i32 per GEMM), so nothing needs a memset node
// and the sequence stays graph-capturable.
//
// Mailbox. The producer thread claims; the consumers learn each tile id from a two-slot
// mailbox in shared memory guarded by full/empty mbarriers (mbarrier.arrive releases and
// try_wait acquires at CTA scope, so the plain store of the id is visible after the wait).
// An id >= tiles tells everyone to stop.
//
// Raster. Tiles are numbered in groups of G M-blocks across all n-tiles, the M-blocks of a
// group fastest: tile (m, n) and (m + 1, n) of one expert read the same weight tile, tile (m,
// n) and (m, n + 1) the same A rows, and with claiming in raster order both pairs run within
// about G * n_tiles / grid of a tile's time of each other. G = M-blocks per local expert
// (total blocks / experts, 1..8): 1 for DeepSeek-V3 at 4096 tokens (nothing to share along
// M, so an M-block's n-tiles are consecutive), 2 for Qwen3-235B at 4096, 4 and 8 at 16384.
#pragma once
#include "hopper.cuh"

namespace hopper {

constexpr int MOE_GROUP_M_MAX = 8;

// L2 policies for the weight boxes (PTX ISA "createpolicy"). A weight tile of an expert with
// a single M-block (DeepSeek-V3 at 4096 tokens: 128 rows per expert) is read once: evict it
// first, so the stream of weights (22.5 GB per layer in bf16) does not push out the A rows
// that every n-tile re-reads. An expert with several M-blocks keeps the normal policy for
// its second reader.
__device__ __forceinline__ uint64_t l2_evict_first_policy() {
    uint64_t policy;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    return policy;
}
__device__ __forceinline__ uint64_t l2_evict_normal_policy() {
    uint64_t policy;
    asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(policy));
    return policy;
}

// Evict-last, for the A rows that every n-tile of an M-block re-reads from L2 (moe_wgmma.cu,
// session 9): with the normal policy about a fifth of those reads missed L2 although the
// readers start within ~16 us of each other, the weight stream (evict-first, 4+ TB/s) filling
// more than L2 in that time. The last n-tile's reads demote the rows to evict-first again, so
// finished M-blocks do not crowd L2 for the kernels after.
__device__ __forceinline__ uint64_t l2_evict_last_policy() {
    uint64_t policy;
    asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(policy));
    return policy;
}

// hopper.cuh's tma_load_2d with an L2 cache policy.
__device__ __forceinline__ void tma_load_2d_hint(void* dst, const TensorMap* map, uint64_t* bar, int c0, int c1,
                                                 uint64_t policy) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1, "
        "{%3, %4}], [%2], %5;" ::"r"(smem_addr(dst)),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(c0), "r"(c1), "l"(policy)
        : "memory");
}

// hopper.cuh's tma_load_4d with an L2 cache policy.
__device__ __forceinline__ void tma_load_4d_hint(void* dst, const TensorMap* map, uint64_t* bar, int c0, int c1,
                                                 int c2, int c3, uint64_t policy) {
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1, "
        "{%3, %4, %5, %6}], [%2], %7;" ::"r"(smem_addr(dst)),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "l"(policy)
        : "memory");
}

// The raster over the live M-blocks of one GEMM launch (every thread computes the same).
struct MoeRaster {
    const int* block_expert;
    int m_blocks, n_tiles, group_m, tiles;

    __device__ __forceinline__ MoeRaster(const int* block_expert_, int m_blocks_, int n_tiles_, int experts)
        : block_expert(block_expert_), m_blocks(m_blocks_), n_tiles(n_tiles_) {
        group_m = max(1, min(MOE_GROUP_M_MAX, m_blocks / max(experts, 1)));
        tiles = m_blocks * n_tiles;
    }
};

// One output tile: its M-block, n-tile and expert (< 0: no expert, nothing to do).
struct MoeTile {
    int m_block, n_block, expert;
};

__device__ __forceinline__ MoeTile moe_tile(const MoeRaster& r, int linear) {
    const int group_first = linear / (r.group_m * r.n_tiles) * r.group_m;
    const int group_rows = min(r.group_m, r.m_blocks - group_first);
    const int in_group = linear - group_first * r.n_tiles;
    MoeTile tile;
    tile.m_block = group_first + in_group % group_rows;
    tile.n_block = in_group / group_rows;
    tile.expert = r.block_expert[tile.m_block];
    return tile;
}

// The tile one CTA of a raster unit works on (moe_wgmma.cu and moe_fp8.cu alike): its M-block
// (pairs along M: 2u + rank, which may be one past the last for an odd count: `valid` false,
// and the CTA reloads its peer's rows and drains), its n-tile (pairs along N: 2v + rank,
// possibly past N: zero-filled weights, nothing stored), its expert, and what the pair
// multicasts (share_b: both M-blocks use one expert's weight tile; share_a: one A tile).
struct MoePairWork {
    int m_block, n_block, expert;
    bool valid, share_b, share_a;
};

template <bool PAIR>
__device__ __forceinline__ MoePairWork moe_pair_work(const MoeTile& unit, bool along_m, int rank,
                                                     const int* block_expert, int m_blocks) {
    MoePairWork w;
    w.share_b = w.share_a = false;
    if (along_m) {
        const int m0 = 2 * unit.m_block;
        const int e0 = block_expert[m0], e1 = m0 + 1 < m_blocks ? block_expert[m0 + 1] : -1;
        w.m_block = m0 + rank;
        w.n_block = unit.n_block;
        w.valid = w.m_block < m_blocks && (rank ? e1 : e0) >= 0;
        w.expert = rank && w.valid ? e1 : e0;
        w.share_b = e0 >= 0 && e0 == e1;
    } else {
        w.m_block = unit.m_block;
        w.n_block = PAIR ? 2 * unit.n_block + rank : unit.n_block;
        w.expert = unit.expert;
        w.valid = unit.expert >= 0;
        w.share_a = PAIR;
    }
    return w;
}


// Whether another CTA reads this tile's weight tile later, i.e. another M-block of the expert
// lies outside the multicast pair (evict-first otherwise). `a_block`: the M-block whose A
// rows the CTA loads (its own, or its peer's past the last block).
__device__ __forceinline__ bool moe_weights_reread(const MoePairWork& w, int a_block, int rank, const int* block_expert,
                                                   int m_blocks) {
    const int lo = w.share_b ? a_block - rank : a_block, hi = w.share_b ? lo + 1 : a_block;
    return (lo > 0 && block_expert[lo - 1] == w.expert) || (hi + 1 < m_blocks && block_expert[hi + 1] == w.expert);
}

// The producer's next tile: a global claim (the counter starts at 0, so claims begin right
// after the grid's first tiles).
__device__ __forceinline__ int moe_claim_tile(int* counter) {
    return static_cast<int>(gridDim.x) + atomicAdd(counter, 1);
}

// Producer thread -> consumer warps: the j-th tile id of this CTA.
struct MoeTileMailbox {
    uint64_t full[2], empty[2];
    int linear[2];

    // Thread 0, before the ring's barrier-init fence and the __syncthreads after it.
    __device__ __forceinline__ void init(int consumer_warps) {
        for (int s = 0; s < 2; ++s) {
            mbar_init(&full[s], 1);
            mbar_init(&empty[s], consumer_warps);
        }
    }

    __device__ __forceinline__ void put(int j, int value) {
        const int s = j & 1;
        mbar_wait(&empty[s], ((j >> 1) & 1) ^ 1);
        *reinterpret_cast<volatile int*>(&linear[s]) = value;
        mbar_arrive(&full[s]);
    }

    // Every thread of each consumer warp; lane 0 frees the slot once the warp has read it.
    __device__ __forceinline__ int get(int j) {
        const int s = j & 1;
        mbar_wait(&full[s], (j >> 1) & 1);
        const int value = *reinterpret_cast<volatile int*>(&linear[s]);
        __syncwarp();
        if (threadIdx.x % 32 == 0) mbar_arrive(&empty[s]);
        return value;
    }
};

// ---- CTA pairs (2-CTA clusters): one expert weight tile multicast to two M-blocks ----
//
// A bf16 128 x 256 tile reads 48 KiB from L2 per 4.2 MFLOP (85 FLOP/B); at the ~6.5-7.8 TB/s
// the H200's L2 delivered to our GEMMs (docs/perf.md) that caps them at 550-670 TFLOP/s, which
// is where the compute-bound MoE rows sit. A pair of CTAs on M-blocks m and m + 1 of the same
// expert and the same n-tile needs the weight tile once: each CTA loads one of its two 128-row
// boxes and multicasts it to both, so a CTA reads 32 KiB per stage (128 FLOP/B). With one
// M-block per expert (DeepSeek-V3 at 4096 tokens, DRAM-bound) the pair takes two n-tiles of
// one M-block instead and multicasts the A rows: the two readers of each A tile then run in
// lockstep, where claiming alone left ~20% of the A reads missing L2 (ncu, MoE v3). Each
// stage's empty barrier counts both CTAs' consumer warps, so neither producer refills a stage
// its peer still reads. Pairs whose M-blocks belong to different experts load their own
// tiles (same barriers, no multicast).



// An arrival on a barrier of another CTA of the cluster, with release at cluster scope: for
// the link below, whose data a plain store wrote to the peer (compiles to a GPU-scope fence,
// so once per tile only).
__device__ __forceinline__ void mbar_arrive_cluster(uint32_t cluster_addr) {
    asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];" ::"r"(cluster_addr) : "memory");
}

// The same arrival with the default (CTA-scope) semantics, as CUTLASS's ClusterBarrier::arrive
// does for consumer releases: what it orders is this thread's completed wgmma reads of its own
// shared memory before the peer's TMA refills it, which needs no fence. The release.cluster
// form costs a MEMBAR.ALL.GPU per stage per warp (seen in the SASS).
__device__ __forceinline__ void mbar_arrive_remote(uint32_t cluster_addr) {
    asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];" ::"r"(cluster_addr) : "memory");
}

// mbar_wait with cluster-scope acquire: for data a peer CTA stored before its arrive.
__device__ __forceinline__ void mbar_wait_cluster(uint64_t* bar, uint32_t parity) {
    const uint32_t addr = smem_addr(bar);
    uint32_t done = 0;
    while (!done) {
        asm volatile(
            "{\n.reg .pred p;\n"
            "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n"
            "selp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(addr), "r"(parity)
            : "memory");
    }
}


// tma_load_4d_hint, the box written at the same offset of every CTA in `mask` and completing
// bytes on each one's barrier at `bar`'s offset.
__device__ __forceinline__ void tma_load_4d_multicast(void* dst, const TensorMap* map, uint64_t* bar, int c0, int c1,
                                                      int c2, int c3, uint16_t mask, uint64_t policy) {
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster.L2::"
        "cache_hint [%0], [%1, {%3, %4, %5, %6}], [%2], %7, %8;" ::"r"(smem_addr(dst)),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "h"(mask),
        "l"(policy)
        : "memory");
}

// hopper.cuh's tma_load_2d, multicast as tma_load_4d_multicast.
__device__ __forceinline__ void tma_load_2d_multicast(void* dst, const TensorMap* map, uint64_t* bar, int c0, int c1,
                                                      uint16_t mask) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster [%0], "
        "[%1, {%3, %4}], [%2], %5;" ::"r"(smem_addr(dst)),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(c0), "r"(c1), "h"(mask)
        : "memory");
}

// tma_load_2d_hint, multicast as tma_load_4d_multicast.
__device__ __forceinline__ void tma_load_2d_multicast_hint(void* dst, const TensorMap* map, uint64_t* bar, int c0,
                                                           int c1, uint16_t mask, uint64_t policy) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster.L2::"
        "cache_hint [%0], [%1, {%3, %4}], [%2], %5, %6;" ::"r"(smem_addr(dst)),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(c0), "r"(c1), "h"(mask), "l"(policy)
        : "memory");
}

// Rank 0's producer claims the pair's tiles and sends each id to rank 1's producer: a
// two-slot buffer in rank 1's shared memory, its full barriers there, the empty ones in rank
// 0 (both CTAs hold the struct at the same offset).
struct MoePairLink {
    uint64_t full[2], empty[2];
    int linear[2];

    __device__ __forceinline__ void init() {
        for (int s = 0; s < 2; ++s) {
            mbar_init(&full[s], 1);
            mbar_init(&empty[s], 1);
        }
    }

    __device__ __forceinline__ void send(int j, int value) {
        const int s = j & 1;
        mbar_wait(&empty[s], ((j >> 1) & 1) ^ 1);
        asm volatile("st.shared::cluster.u32 [%0], %1;" ::"r"(cluster_map(&linear[s], 1)), "r"(value) : "memory");
        mbar_arrive_cluster(cluster_map(&full[s], 1));
    }

    __device__ __forceinline__ int receive(int j) {
        const int s = j & 1;
        mbar_wait_cluster(&full[s], (j >> 1) & 1);
        const int value = *reinterpret_cast<volatile int*>(&linear[s]);
        mbar_arrive_cluster(cluster_map(&empty[s], 0));
        return value;
    }
};

}  // namespace hopper
