// Fused-MoE expert computation on one rank (the routed experts this rank owns).
//
// Math, for each token t with router choices (topk_ids[t, j], topk_weights[t, j]), j < k:
//   y[t] = sum_{j : topk_ids[t,j] - e0 in [0, E_local)}
//            topk_weights[t,j] * W2[e] . ( act(W13[e][0:I] . x[t]) * (W13[e][I:2I] . x[t]) )
// with e = topk_ids[t,j] - e0. Choices of non-local experts add nothing: another rank owns
// them and the engine all-reduces afterwards.
//
// Call sequence (one stream, graph-capturable: no host sync, every size is a worst case
// known when the graph is captured; src/exec/cuda/kernels/moe.rs gives buffer sizes):
//   1. moe_align    topk_ids -> slots (s = t*k + j) grouped by local expert, each expert's
//                   group padded to a multiple of block_m; sorted_slots, block_expert,
//                   slot_to_sorted, total_padded.
//   2. moe_gemm_m16 h13[r] = x[sorted_slots[r] / k] . W13[e]^T   (gather from x, [*, 2I])
//   3. act_mul      (kernels/act.cu) a[r] = act(h13[r, 0:I]) * h13[r, I:2I]       ([*, I])
//   4. moe_gemm_m16 c2[r] = a[r] . W2[e]^T                        (rows already sorted)
//   5. moe_combine  y[t] = sum_j w[t,j] * c2[slot_to_sorted[t*k+j]]
// Steps 2-4 are this file's only for block_m 16 (decode); block_m 64 and 128 (prefill) run
// kernels/moe_wgmma.cu's permute and TMA + wgmma GEMMs instead, between the same align and
// combine.
//
// Padding rows (sorted_slots[r] == -1) are never written by moe_gemm, so h13 / a / c2 hold
// whatever was there before in those rows; moe_gemm reads an A row only when its slot is
// >= 0 (padding rows of A are zero-filled in shared memory), and moe_combine reads only
// real rows, so that garbage (even NaN) never reaches y.
//
// Dtypes: x, W13, W2, h13, a, c2, y bf16; topk_weights fp32; accumulation fp32 (mma.sync
// m16n8k16 bf16 -> fp32); one rounding per stored value (h13, c2, y).
//
// Cost per layer, R = number of local (token, expert) pairs, U = distinct local experts
// touched: FLOPs 2*R*3*H*I (plus padding rows' wasted MMA work, at most E_local*(BM-1)
// rows); weight bytes U*3*H*I*2 (decode: these dominate, the goal is HBM bandwidth);
// activation bytes ~ R*(H + 2I + I + H)*2.
//
// Launch shapes (see the *_launch functions in moe.rs):
//   moe_align   grid E_local, 512 threads, smem 4*E_local bytes.
//   moe_gemm_m* grid (ceil(n/BN), max_blocks_m), config per entry below; blocks past
//               total_padded exit at once.
//   moe_combine grid tokens, 256 threads.
//
// GEMM version (one template, one entry; the Rust side picks by tokens*k/E):
//   moe_gemm_m16   BM 16, BN 32, BK 64, 4 warps splitting K inside each 64-wide tile, 8
//                  stages: decode; each expert has a handful of rows, the kernel streams
//                  weights, many small CTAs keep every SM's loads in flight.
// Measured on H200 (a sweep with the former standalone harness): decode streams the touched
// weights at 3.4-4.4 TB/s. The former m64/m128 entries of this template reached 240-300
// TFLOP/s of useful work on prefill, near what mma.sync sustains on Hopper; moe_wgmma.cu
// replaces them (docs/perf.md, "MoE v2 (wgmma)").
// All: cp.async 16-byte copies into XOR-swizzled shared tiles (ldmatrix conflict-free),
// multi-stage pipeline, ldmatrix.x4 fragments, mma.sync.m16n8k16 bf16.
#include "common.cuh"

// Params, thread counts, the top_k limit and the GEMM tile shapes (MOE_TILE_*) come from
// the generated header (src/exec/cuda/kernels/moe.rs). The host's unsigned counts become
// ints here so loop arithmetic stays signed (the compiler may then assume no wrap-around).
constexpr int ALIGN_THREADS = MOE_ALIGN_THREADS, COMBINE_THREADS = MOE_COMBINE_THREADS, MAX_TOP_K = MOE_MAX_TOP_K;

#define MOE_GROUP_M 8

// ------------------------------------------------------------------------------------
// moe_align (v1, the default): one CTA per local expert. Every CTA counts all experts (cheap: topk_ids is
// T*k ints, L2-resident) so it knows its own offset without a second launch or a grid
// barrier; then it scans the slots in order and writes its own group, which makes the
// order inside each group the slot order, independent of scheduling.

__device__ __forceinline__ int block_sum_int(int v, int* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : 0;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Exclusive prefix sum of v over the CTA (warp shuffles, then the warp totals); also returns
// the CTA's total. Two __syncthreads, so every thread must call it.
__device__ __forceinline__ int block_exclusive_scan_int(int v, int* scratch, int& total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    int inclusive = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const int n = __shfl_up_sync(0xffffffffu, inclusive, o);
        if (lane >= o) inclusive += n;
    }
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 31) scratch[warp] = inclusive;
    __syncthreads();
    int before = 0;
    total = 0;
    for (int w = 0; w < nwarps; ++w) {
        const int c = scratch[w];
        before += w < warp ? c : 0;
        total += c;
    }
    return before + inclusive - v;
}

// Slots each thread reads per round of the two passes: independent loads in flight, so a
// round costs about one L2 latency instead of one per 512 slots (the passes are latency-
// bound: DeepSeek at 16384 tokens has 131072 slots, each CTA scans all of them twice).
constexpr int ALIGN_ITEMS = 16;

extern "C" __global__ void __launch_bounds__(ALIGN_THREADS) moe_align(const MoeAlignParams p) {
    extern __shared__ int s_count[];  // [num_local_experts]
    __shared__ int s_scratch[32];

    const int tid = threadIdx.x, lane = tid & 31;
    const int num_local = p.num_local_experts, me = blockIdx.x, bm = p.block_m;
    const int slots = p.tokens * p.top_k;
    const int per_round = ALIGN_ITEMS * blockDim.x;
    const int rounds = (slots + per_round - 1) / per_round;

    for (int e = tid; e < num_local; e += blockDim.x) s_count[e] = 0;
    __syncthreads();

    // Pass 1: per-expert counts. Item i of a round covers one coalesced row of blockDim
    // slots; lanes holding the same expert add once per warp.
    for (int round = 0; round < rounds; ++round) {
        int local[ALIGN_ITEMS];
#pragma unroll
        for (int i = 0; i < ALIGN_ITEMS; ++i) {
            const int slot = (round * ALIGN_ITEMS + i) * blockDim.x + tid;
            local[i] = slot < slots ? p.topk_ids[slot] - p.expert_start : -1;
        }
#pragma unroll
        for (int i = 0; i < ALIGN_ITEMS; ++i) {
            const int chunk = round * ALIGN_ITEMS + i, slot = chunk * blockDim.x + tid;
            const int l = local[i] >= 0 && local[i] < num_local ? local[i] : -1;
            const unsigned peers = __match_any_sync(0xffffffffu, l);
            if (l >= 0 && lane == __ffs(peers) - 1) atomicAdd(&s_count[l], __popc(peers));
            // Non-local slots get -1; chunks are shared out round-robin over the CTAs.
            if (slot < slots && l < 0 && chunk % gridDim.x == me) p.slot_to_sorted[slot] = -1;
        }
    }
    __syncthreads();

    // Offsets: my group starts after the padded groups of experts < me.
    int before = 0, all = 0;
    for (int e = tid; e < num_local; e += blockDim.x) {
        const int padded = (s_count[e] + bm - 1) / bm * bm;
        all += padded;
        if (e < me) before += padded;
    }
    const int offset = block_sum_int(before, s_scratch);
    const int total = block_sum_int(all, s_scratch);
    const int my_count = s_count[me];
    const int my_padded = (my_count + bm - 1) / bm * bm;

    if (me == 0 && tid == 0) p.total_padded[0] = total;
    for (int b = offset / bm + tid; b < (offset + my_padded) / bm; b += blockDim.x) p.block_expert[b] = me;
    for (int r = offset + my_count + tid; r < offset + my_padded; r += blockDim.x) p.sorted_slots[r] = -1;
    // The unused tail (past total) is shared out over the CTAs.
    const int max_blocks = p.max_sorted / bm;
    for (int b = total / bm + me * blockDim.x + tid; b < max_blocks; b += gridDim.x * blockDim.x)
        p.block_expert[b] = -1;
    for (int r = total + me * blockDim.x + tid; r < p.max_sorted; r += gridDim.x * blockDim.x)
        p.sorted_slots[r] = -1;

    // Pass 2: my slots in slot order. Each thread owns ALIGN_ITEMS consecutive slots of a
    // round, so one CTA-wide scan of the per-thread counts places a whole round.
    // `placed` is block-uniform, so the early exit is too.
    int placed = 0;
    for (int round = 0; round < rounds && placed < my_count; ++round) {
        const int first = round * per_round + tid * ALIGN_ITEMS;
        unsigned mine = 0;
#pragma unroll
        for (int i = 0; i < ALIGN_ITEMS; ++i) {
            const int slot = first + i;
            if (slot < slots && p.topk_ids[slot] - p.expert_start == me) mine |= 1u << i;
        }
        int round_total;
        int pos = offset + placed + block_exclusive_scan_int(__popc(mine), s_scratch, round_total);
#pragma unroll
        for (int i = 0; i < ALIGN_ITEMS; ++i) {
            if (mine >> i & 1u) {
                p.sorted_slots[pos] = first + i;
                p.slot_to_sorted[first + i] = pos;
                ++pos;
            }
        }
        placed += round_total;
    }
}

// moe_align v2 (FWDBENCH_MOE_ALIGN=v2), two launches over warp chunks of ALIGN_CHUNK
// consecutive slots (v1 above scans every slot twice in each of E CTAs: O(E * T * k), 0.5 ms
// at DeepSeek-V3's 16384 tokens; v2 0.06 ms, docs/perf.md "moe_align v2"):
//   moe_align_count  warp chunk c counts its slots per local expert into counts[c][e].
//   moe_align_place  every CTA sums the counts (each expert's total, and what the chunks
//                    before its own hold), scans the padded totals into group offsets,
//                    writes its share of block_expert, the padding rows and the unused tail,
//                    then each warp places its chunk's slots at offset[e] + (slots of e in
//                    earlier chunks) + (earlier slots of e in its chunk), the rank within a
//                    round of 32 from the lanes' bit ballots (warp_peers).
// Within each group the order is the slot order, independent of scheduling, as in v1.
// ALIGN_THREADS / 32 warps a CTA, one chunk each; the counts are the scratch's align_counts
// (moe.rs, align_chunks rows of num_local). Slots of other ranks' experts get slot_to_sorted -1.

constexpr int ALIGN_CHUNK = MOE_ALIGN_CHUNK, ALIGN_WARPS = ALIGN_THREADS / 32;
// A chunk is read ALIGN_BATCH rounds of 32 slots at a time, the next batch's loads issued
// before this one is ranked (so a chunk waits on memory about once), and a warp stops after
// the batch holding its chunk's last slot (decode: one batch). The batches keep the kernels
// small: all 32 rounds unrolled made moe_align_place 160 KB of code, and after the bench's
// L2 flush fetching it cost ~45 us a launch (docs/perf.md, session 16); now 29 KB.
constexpr int ALIGN_BATCH = 4;
static_assert(ALIGN_CHUNK % (32 * ALIGN_BATCH) == 0, "a chunk is whole batches of rounds");

// The lanes holding the same local expert as this one (-1: not local), as __match_any_sync
// would give, from one ballot per bit of the id: match.any costs grew with the distinct
// values of a warp (~1 us a round at 30 experts in 32 lanes), this is one ballot for
// validity and one per bit of the largest id, num_local - 1.
__device__ __forceinline__ unsigned warp_peers(int l, int num_local) {
    const int bits = 32 - __clz(max(num_local - 1, 0));
    const unsigned valid = __ballot_sync(0xffffffffu, l >= 0);
    unsigned m = l >= 0 ? valid : ~valid;
#pragma unroll 1
    for (int b = 0; b < bits; ++b) {
        const bool set = (l >> b) & 1;
        const unsigned with = __ballot_sync(0xffffffffu, set);
        m &= set ? with : ~with;
    }
    return m;
}

// Lane `lane`'s slot of each round of the batch starting at slot `first`, as a local expert
// (-1: past the slots or another rank's expert). The loads are all issued before any is used.
__device__ __forceinline__ void batch_experts(const MoeAlignParams& p, int first, int slots, int lane,
                                              int (&l)[ALIGN_BATCH]) {
#pragma unroll
    for (int r = 0; r < ALIGN_BATCH; ++r) {
        const int slot = first + 32 * r + lane;
        l[r] = slot < slots ? p.topk_ids[slot] - p.expert_start : -1;
    }
}

// Runs `round(slot, local expert)` over chunk `chunk`'s slots, 32 a round (one per lane) in
// slot order, ALIGN_BATCH rounds a batch, the next batch in flight while one is ranked.
template <class Round>
__device__ __forceinline__ void for_chunk_rounds(const MoeAlignParams& p, int chunk, int lane, Round round) {
    const int slots = p.tokens * p.top_k, first = chunk * ALIGN_CHUNK;
    const int end = min(first + ALIGN_CHUNK, slots);  // warp-uniform
    int l[ALIGN_BATCH], next[ALIGN_BATCH] = {};
    batch_experts(p, first, slots, lane, l);
#pragma unroll 1
    for (int b = first; b < end; b += 32 * ALIGN_BATCH) {
        if (b + 32 * ALIGN_BATCH < end) batch_experts(p, b + 32 * ALIGN_BATCH, slots, lane, next);
#pragma unroll
        for (int r = 0; r < ALIGN_BATCH; ++r) {
            const int e = l[r] >= 0 && l[r] < p.num_local_experts ? l[r] : -1;
            round(b + 32 * r + lane, e);
        }
#pragma unroll
        for (int r = 0; r < ALIGN_BATCH; ++r) l[r] = next[r];
    }
}

// Warp `chunk`'s slots per local expert into this warp's `hist` row of shared memory, and
// into counts[chunk][*] for moe_align_place unless it is the one counting (fused_count).
__device__ __forceinline__ void count_chunk(const MoeAlignParams& p, int* hist, int chunk) {
    const int lane = threadIdx.x & 31, num_local = p.num_local_experts;
    const int slots = p.tokens * p.top_k, chunks = (slots + ALIGN_CHUNK - 1) / ALIGN_CHUNK;
#pragma unroll 1
    for (int e = lane; e < num_local; e += 32) hist[e] = 0;
    __syncwarp();
    if (chunk >= chunks) return;
    // The lanes of one expert add once (no two leaders of a round share an expert, and only
    // this warp writes its row).
    for_chunk_rounds(p, chunk, lane, [&](int, int l) {
        const unsigned peers = warp_peers(l, num_local);
        if (l >= 0 && lane == __ffs(peers) - 1) hist[l] += __popc(peers);
        __syncwarp();
    });
    if (p.fused_count) return;  // the placing CTA reads its rows of hist directly
#pragma unroll 1
    for (int e = lane; e < num_local; e += 32) p.counts[(long long)chunk * num_local + e] = hist[e];
}

extern "C" __global__ void __launch_bounds__(ALIGN_THREADS) moe_align_count(const MoeAlignParams p) {
    extern __shared__ int s_hist[];  // [ALIGN_WARPS][num_local]
    const int warp = threadIdx.x >> 5;
    count_chunk(p, s_hist + warp * p.num_local_experts, blockIdx.x * ALIGN_WARPS + warp);
}

extern "C" __global__ void __launch_bounds__(ALIGN_THREADS) moe_align_place(const MoeAlignParams p) {
    // [ALIGN_WARPS][num_local] running positions, [num_local + 1] group offsets (the last:
    // total_padded), [num_local] group counts.
    extern __shared__ int s_run[];
    __shared__ int s_scratch[32];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int num_local = p.num_local_experts, bm = p.block_m;
    const int slots = p.tokens * p.top_k, chunks = (slots + ALIGN_CHUNK - 1) / ALIGN_CHUNK;
    const int c0 = blockIdx.x * ALIGN_WARPS;
    int* s_off = s_run + ALIGN_WARPS * num_local;
    int* s_cnt = s_off + num_local + 1;
    // This CTA's chunks' counts as the rows of s_run. One CTA (<= ALIGN_WARPS chunks): they
    // are this launch's own (no moe_align_count ran), counted into those rows.
    if (p.fused_count) {
        count_chunk(p, s_run + warp * num_local, warp);
    } else {
        for (int i = tid; i < ALIGN_WARPS * num_local; i += blockDim.x)
            s_run[i] = c0 + i / num_local < chunks ? p.counts[(long long)c0 * num_local + i] : 0;
    }
    __syncthreads();

    // Each thread takes consecutive experts e0 .. e0 + per - 1: the slots of the chunks of
    // earlier CTAs (parked in s_off until the scan) and the totals over all chunks.
    const int per = (num_local + blockDim.x - 1) / blockDim.x, e0 = tid * per;
    const int c1 = min(c0 + ALIGN_WARPS, chunks);
    int padded_sum = 0;
    for (int i = 0; i < per; ++i) {
        const int e = e0 + i;
        if (e >= num_local) break;
        int before = 0, total = 0;
#pragma unroll 4
        for (int c = 0; c < c0; ++c) before += p.counts[(long long)c * num_local + e];
#pragma unroll 4
        for (int c = c1; c < chunks; ++c) total += p.counts[(long long)c * num_local + e];
#pragma unroll 1
        for (int w = 0; w < ALIGN_WARPS; ++w) total += s_run[w * num_local + e];
        total += before;
        s_off[e] = before;
        s_cnt[e] = total;
        padded_sum += (total + bm - 1) / bm * bm;
    }
    int all;
    int off = block_exclusive_scan_int(padded_sum, s_scratch, all);
    for (int i = 0; i < per; ++i) {
        const int e = e0 + i;
        if (e >= num_local) break;
        // Warp w of this CTA starts after the group offset, the earlier CTAs' slots and its
        // own CTA's earlier chunks; its count row becomes its running positions.
        int run = off + s_off[e];
        s_off[e] = off;
        off += (s_cnt[e] + bm - 1) / bm * bm;
#pragma unroll 1
        for (int w = 0; w < ALIGN_WARPS; ++w) {
            const int n = s_run[w * num_local + e];
            s_run[w * num_local + e] = run;
            run += n;
        }
    }
    if (tid == 0) s_off[num_local] = all;
    __syncthreads();

    // This CTA's share of the rows and blocks outside the slots: each group's padding rows,
    // the expert of every block in use and -1 past total, -1 rows past total.
    const int stride = gridDim.x * blockDim.x, start = blockIdx.x * blockDim.x + tid;
    if (start == 0) p.total_padded[0] = all;
    // A warp an expert's padding rows (fewer than block_m), the CTAs' warps over the experts.
    for (int e = blockIdx.x * ALIGN_WARPS + warp; e < num_local; e += gridDim.x * ALIGN_WARPS)
        for (int r = s_off[e] + s_cnt[e] + lane; r < s_off[e + 1]; r += 32) p.sorted_slots[r] = -1;
    const int max_blocks = p.max_sorted / bm;
    for (int b = start; b < max_blocks; b += stride) {
        int expert = -1;
        if (b * bm < all) {
            // The last group whose offset is <= b * bm (offsets ascend; empty groups share
            // their successor's offset, so take the last).
            int lo = 0, hi = num_local - 1;
            while (lo < hi) {
                const int mid = (lo + hi + 1) / 2;
                if (s_off[mid] <= b * bm) lo = mid;
                else hi = mid - 1;
            }
            expert = lo;
        }
        p.block_expert[b] = expert;
    }
    for (int r = all + start; r < p.max_sorted; r += stride) p.sorted_slots[r] = -1;

    // Place this warp's chunk, 32 slots a round in slot order.
    const int chunk = c0 + warp;
    if (chunk < chunks) {
        int* run = s_run + warp * num_local;
        const unsigned below = (1u << lane) - 1u;
        for_chunk_rounds(p, chunk, lane, [&](int slot, int l) {
            const unsigned peers = warp_peers(l, num_local);
            if (l >= 0) {
                const int pos = run[l] + __popc(peers & below);
                p.sorted_slots[pos] = slot;
                p.slot_to_sorted[slot] = pos;
            } else if (slot < slots) {
                p.slot_to_sorted[slot] = -1;
            }
            __syncwarp();
            if (l >= 0 && lane == __ffs(peers) - 1) run[l] += __popc(peers);
            __syncwarp();
        });
    }
}

// ------------------------------------------------------------------------------------
// moe_gemm: grouped GEMM over m-blocks, each block a single expert.

__device__ __forceinline__ void cp_async16(void* smem_dst, const void* gmem_src, bool valid) {
    const unsigned dst = (unsigned)__cvta_generic_to_shared(smem_dst);
    const int src_bytes = valid ? 16 : 0;  // 0: the 16 bytes are zero-filled, nothing is read
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem_src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem_src) {
    const unsigned addr = (unsigned)__cvta_generic_to_shared(smem_src);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Tiles are BK = 64 bf16 wide: one 128-byte row = 8 chunks of 16 bytes. Chunk c of row r
// lives at chunk c ^ (r & 7), so the 8 rows an ldmatrix phase reads hit 8 distinct bank
// groups, and a warp's cp.async stores (4 full rows) stay conflict-free too.
__device__ __forceinline__ int swz(int row, int chunk) { return row * 64 + ((chunk ^ (row & 7)) << 3); }

template <int BM_, int BN_, int WARPS_M_, int WARPS_N_, int WARPS_K_, int STAGES_>
struct MoeGemmConfig {
    static constexpr int BM = BM_, BN = BN_, BK = MOE_GEMM_BLOCK_K;
    static constexpr int WARPS_M = WARPS_M_, WARPS_N = WARPS_N_, WARPS_K = WARPS_K_, STAGES = STAGES_;
    static constexpr int THREADS = 32 * WARPS_M * WARPS_N * WARPS_K;
    static constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;
    static constexpr int MI = WM / 16, NI = WN / 8;
    static constexpr int K_STEPS = BK / 16 / WARPS_K;  // k16 steps per warp per tile
    static constexpr int A_CHUNKS = BM * BK / 8 / THREADS, B_CHUNKS = BN * BK / 8 / THREADS;
    static constexpr int STAGE_ELEMS = (BM + BN) * BK;
    static constexpr int PIPE_BYTES = STAGES * STAGE_ELEMS * 2;
    static constexpr int REDUCE_BYTES = (WARPS_K - 1) * WARPS_M * WARPS_N * MI * NI * 4 * 32 * 4;
    static constexpr int SMEM_BYTES = PIPE_BYTES > REDUCE_BYTES ? PIPE_BYTES : REDUCE_BYTES;
    static_assert(BM % (16 * WARPS_M) == 0 && BN % (16 * WARPS_N) == 0, "warp tile must be 16-aligned");
    static_assert(NI % 2 == 0, "B fragments load two n8 tiles per ldmatrix.x4");
    static_assert((BK / 16) % WARPS_K == 0, "K split must divide the k16 steps of a tile");
    static_assert(BM * BK / 8 % THREADS == 0 && BN * BK / 8 % THREADS == 0, "whole chunks per thread");
    static_assert(THREADS % 8 == 0, "a thread keeps one chunk column across its rows");
    static_assert(REDUCE_BYTES <= PIPE_BYTES, "the host (MoeGemmTile::new) sizes smem as the pipeline");
};

template <class Cfg>
__device__ __forceinline__ void moe_gemm_body(const MoeGemmParams& p) {
    constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK, STAGES = Cfg::STAGES, MI = Cfg::MI, NI = Cfg::NI;
    extern __shared__ __align__(128) unsigned char smem_raw[];
    __shared__ int s_row_slot[BM];
    bf16* smem = reinterpret_cast<bf16*>(smem_raw);

    // CTA raster. The hardware dispatches CTAs roughly in linear order; walking a group of
    // MOE_GROUP_M m-blocks across all n-tiles before the next group means an expert's weight
    // tile is read by all of its m-blocks at about the same time (one HBM read, then L2
    // hits), and the group's A rows stay in L2 across n-tiles. Plain (x = n, y = m) order
    // re-reads every weight tile from HBM for each m-block of a large expert.
    const int n_tiles = gridDim.x, m_blocks = gridDim.y;
    const int linear = blockIdx.y * n_tiles + blockIdx.x;
    const int group = linear / (MOE_GROUP_M * n_tiles);
    const int group_first = group * MOE_GROUP_M;
    const int group_rows = min(MOE_GROUP_M, m_blocks - group_first);
    const int in_group = linear - group_first * n_tiles;
    const int m_block = group_first + in_group % group_rows, n_block = in_group / group_rows;
    if (m_block * BM >= p.total_padded[0]) return;
    const int expert = p.block_expert[m_block];
    if (expert < 0) return;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int warp_k = warp / (Cfg::WARPS_M * Cfg::WARPS_N);
    const int warp_mn = warp % (Cfg::WARPS_M * Cfg::WARPS_N);
    const int warp_m = warp_mn / Cfg::WARPS_N, warp_n = warp_mn % Cfg::WARPS_N;
    const int row0 = m_block * BM;

    for (int r = tid; r < BM; r += Cfg::THREADS) s_row_slot[r] = p.sorted_slots[row0 + r];

    // Each thread copies the same chunk column of fixed rows in every k-tile. A rows are
    // gathered, so keep their source row (-1: padding, zero-filled); B rows are consecutive,
    // so one base pointer serves all of a thread's rows. Few live registers either way.
    const int chunk_col = tid & 7, thread_row = tid >> 3;
    constexpr int ROW_STEP = Cfg::THREADS / 8;
    int a_row[Cfg::A_CHUNKS];
#pragma unroll
    for (int i = 0; i < Cfg::A_CHUNKS; ++i) {
        const int r = thread_row + i * ROW_STEP;
        const int slot = p.sorted_slots[row0 + r];
        a_row[i] = slot < 0 ? -1 : (p.a_rows_are_tokens ? slot / p.top_k : row0 + r);
    }
    const int n_first = n_block * BN + thread_row;
    const bf16* b_base = p.w + expert * p.w_expert_stride + (long long)n_first * p.k + chunk_col * 8;

    auto load_tile = [&](int stage, int k_tile) {
        bf16* sa = smem + stage * Cfg::STAGE_ELEMS;
        bf16* sb = sa + BM * BK;
        const int k0 = k_tile * BK;
        const bool k_ok = k0 + chunk_col * 8 < p.k;  // k % 8 == 0: chunks are all in or all out
#pragma unroll
        for (int i = 0; i < Cfg::A_CHUNKS; ++i) {
            const bool ok = a_row[i] >= 0 && k_ok;
            const bf16* src = ok ? p.a + (long long)a_row[i] * p.a_ld + k0 + chunk_col * 8 : p.a;
            cp_async16(sa + swz(thread_row + i * ROW_STEP, chunk_col), src, ok);
        }
#pragma unroll
        for (int i = 0; i < Cfg::B_CHUNKS; ++i) {
            const bool ok = n_first + i * ROW_STEP < p.n && k_ok;
            const bf16* src = ok ? b_base + (long long)i * ROW_STEP * p.k + k0 : p.w;
            cp_async16(sb + swz(thread_row + i * ROW_STEP, chunk_col), src, ok);
        }
    };

    float acc[MI][NI][4];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
            for (int q = 0; q < 4; ++q) acc[mi][ni][q] = 0.f;

    const int k_tiles = (p.k + BK - 1) / BK;
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < k_tiles) load_tile(s, s);
        cp_async_commit();
    }

    for (int kt = 0; kt < k_tiles; ++kt) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();  // tile kt visible to all; the stage refilled below was drained at kt-1
        {
            const int next = kt + STAGES - 1;
            if (next < k_tiles) load_tile(next % STAGES, next);
            cp_async_commit();
        }
        const bf16* sa = smem + (kt % STAGES) * Cfg::STAGE_ELEMS;
        const bf16* sb = sa + BM * BK;
#pragma unroll
        for (int ks = 0; ks < Cfg::K_STEPS; ++ks) {
            const int kk = ks * Cfg::WARPS_K + warp_k;  // k16 step inside the tile
            uint32_t af[MI][4];
            uint32_t bfr[NI][2];
#pragma unroll
            for (int mi = 0; mi < MI; ++mi) {
                const int r = warp_m * Cfg::WM + mi * 16 + (lane & 15);
                ldmatrix_x4(af[mi], sa + swz(r, kk * 2 + (lane >> 4)));
            }
#pragma unroll
            for (int nj = 0; nj < NI / 2; ++nj) {
                const int r = warp_n * Cfg::WN + nj * 16 + (lane & 7) + ((lane >> 4) << 3);
                uint32_t t[4];
                ldmatrix_x4(t, sb + swz(r, kk * 2 + ((lane >> 3) & 1)));
                bfr[2 * nj][0] = t[0];
                bfr[2 * nj][1] = t[1];
                bfr[2 * nj + 1][0] = t[2];
                bfr[2 * nj + 1][1] = t[3];
            }
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                for (int ni = 0; ni < NI; ++ni) mma_bf16_16816(acc[mi][ni], af[mi], bfr[ni][0], bfr[ni][1]);
        }
    }
    cp_async_wait<0>();

    if constexpr (Cfg::WARPS_K > 1) {
        // Warps that split K hand their partial tiles to warp_k == 0 through shared memory
        // (the pipeline buffers are free now). Layout [partial][value][lane]: conflict-free.
        __syncthreads();
        float* red = reinterpret_cast<float*>(smem_raw);
        constexpr int VALS = MI * NI * 4;
        if (warp_k > 0) {
            float* dst = red + ((warp_k - 1) * Cfg::WARPS_M * Cfg::WARPS_N + warp_mn) * VALS * 32;
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                for (int ni = 0; ni < NI; ++ni)
#pragma unroll
                    for (int q = 0; q < 4; ++q) dst[((mi * NI + ni) * 4 + q) * 32 + lane] = acc[mi][ni][q];
        }
        __syncthreads();
        if (warp_k > 0) return;
#pragma unroll
        for (int part = 0; part < Cfg::WARPS_K - 1; ++part) {
            const float* src = red + (part * Cfg::WARPS_M * Cfg::WARPS_N + warp_mn) * VALS * 32;
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                for (int ni = 0; ni < NI; ++ni)
#pragma unroll
                    for (int q = 0; q < 4; ++q) acc[mi][ni][q] += src[((mi * NI + ni) * 4 + q) * 32 + lane];
        }
    } else {
        __syncthreads();  // s_row_slot written before the main loop; make the order explicit
    }

    // Epilogue: accumulator (row lane/4 [+8], cols 2*(lane%4) + {0,1}) -> bf16, real rows only.
    const bool pair_ok = (p.c_ld % 2 == 0) && ((reinterpret_cast<uintptr_t>(p.c) & 3) == 0);
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int r = warp_m * Cfg::WM + mi * 16 + (lane >> 2) + half * 8;
            if (s_row_slot[r] < 0) continue;
            bf16* c_row = p.c + (long long)(row0 + r) * p.c_ld;
#pragma unroll
            for (int ni = 0; ni < NI; ++ni) {
                const int col = n_block * BN + warp_n * Cfg::WN + ni * 8 + (lane & 3) * 2;
                const float v0 = acc[mi][ni][half * 2], v1 = acc[mi][ni][half * 2 + 1];
                if (pair_ok && col + 1 < p.n) {
                    *reinterpret_cast<__nv_bfloat162*>(c_row + col) = __floats2bfloat162_rn(v0, v1);
                } else {
                    if (col < p.n) c_row[col] = to_bf16(v0);
                    if (col + 1 < p.n) c_row[col + 1] = to_bf16(v1);
                }
            }
        }
    }
}

template <const MoeGemmShape& S>
using MoeGemmFor = MoeGemmConfig<S.block_m, S.block_n, S.warps_m, S.warps_n, S.warps_k, S.stages>;
using MoeGemmM16 = MoeGemmFor<MOE_TILE_M16>;

extern "C" __global__ void __launch_bounds__(MoeGemmM16::THREADS, 4) moe_gemm_m16(const MoeGemmParams p) {
    moe_gemm_body<MoeGemmM16>(p);
}

// ------------------------------------------------------------------------------------
// moe_combine: one CTA per token; 8 bf16 per thread per step when layouts allow it.

extern "C" __global__ void __launch_bounds__(COMBINE_THREADS) moe_combine(const MoeCombineParams p) {
    __shared__ int s_pos[MAX_TOP_K];
    __shared__ float s_w[MAX_TOP_K];
    __shared__ int s_used;
    const int t = blockIdx.x, tid = threadIdx.x;
    if (tid == 0) {
        // Compact to the local choices, keeping j order so the fp32 sum order is fixed.
        int used = 0;
        for (int j = 0; j < p.top_k; ++j) {
            const int pos = p.slot_to_sorted[t * p.top_k + j];
            if (pos >= 0) {
                s_pos[used] = pos;
                s_w[used] = p.topk_weights[t * p.top_k + j];
                ++used;
            }
        }
        s_used = used;
    }
    __syncthreads();
    const int used = s_used;
    bf16* y = p.y + (long long)t * p.y_ld;

    const bool vec = p.hidden % 8 == 0 && p.c2_ld % 8 == 0 && p.y_ld % 8 == 0 &&
                     ((reinterpret_cast<uintptr_t>(p.c2) | reinterpret_cast<uintptr_t>(p.y)) & 15) == 0;
    if (vec) {
        for (int h = tid * 8; h < p.hidden; h += COMBINE_THREADS * 8) {
            float sum[8];
            if (p.accumulate) {
                const uint4 raw = *reinterpret_cast<const uint4*>(y + h);
                const bf16* v = reinterpret_cast<const bf16*>(&raw);
#pragma unroll
                for (int q = 0; q < 8; ++q) sum[q] = to_f32(v[q]);
            } else {
#pragma unroll
                for (int q = 0; q < 8; ++q) sum[q] = 0.f;
            }
            for (int j = 0; j < used; ++j) {
                const uint4 raw = *reinterpret_cast<const uint4*>(p.c2 + (long long)s_pos[j] * p.c2_ld + h);
                const bf16* v = reinterpret_cast<const bf16*>(&raw);
                const float w = s_w[j];
#pragma unroll
                for (int q = 0; q < 8; ++q) sum[q] = fmaf(w, to_f32(v[q]), sum[q]);
            }
            uint4 out;
            bf16* o = reinterpret_cast<bf16*>(&out);
#pragma unroll
            for (int q = 0; q < 8; ++q) o[q] = to_bf16(sum[q]);
            *reinterpret_cast<uint4*>(y + h) = out;
        }
    } else {
        for (int h = tid; h < p.hidden; h += COMBINE_THREADS) {
            float sum = p.accumulate ? to_f32(y[h]) : 0.f;
            for (int j = 0; j < used; ++j) sum = fmaf(s_w[j], to_f32(p.c2[(long long)s_pos[j] * p.c2_ld + h]), sum);
            y[h] = to_bf16(sum);
        }
    }
}
