// MoE grouped GEMMs for prefill-sized batches on TMA + wgmma (sm_90a), over the padded
// per-expert layout of moe_align (kernels/moe.cu): sorted rows, each expert's group padded to
// block_m, block_expert[m_block] the local expert of an M-block, total_padded the rows in use.
// Decode (block_m 16) stays on moe.cu's mma.sync weight-streaming kernel, which is at copy
// bandwidth already.
//
//   moe_permute        xs[slot_to_sorted[t k + j]] = x[t], zero for padding rows  (r < total)
//   moe_wgmma_gate_up  act[r, c] = act(xs[r] . W13[e][c]) * (xs[r] . W13[e][I + c])  c < I
//   moe_wgmma_down     c2[r] = act[r] . W2[e]^T                                       [*, H]
// then moe_combine (moe.cu) applies the routing weights, as before.
//
// Dtypes: bf16 in and out, fp32 accumulation; the gate/up epilogue applies the activation to
// the fp32 accumulators and rounds once (no bf16 h13 in between, so it is a little closer to
// the f32 CPU reference than moe.cu's act_mul path). Padding rows of xs are zero, so padding
// rows of act and c2 come out zero (act(0) * 0 = 0): every row written is defined.
//
// Why a permute pass instead of gathering A in the producer: TMA needs A contiguous, and a
// separate pass keeps both operands on the proven TMA path of kernels/gemm_tma.cu (one
// producer thread, 40 registers). It costs R*H*2 bytes written and read once more (DeepSeek-V3
// at 4096 tokens: 0.47 GB, ~0.2 ms against ~6 ms of expert GEMMs); the GEMM then re-reads xs
// from L2 per n-tile as it would any A. Gathering in the producer instead needs a full
// producer warpgroup of cp.async (generic-proxy writes, a proxy fence before wgmma, one
// arrival per thread per stage) or one-row TMA boxes; both are v2 once this one is measured.
// The down GEMM's A (act) is already in sorted order.
//
// GEMM structure (as kernels/gemm_tma.cu, which reaches 668 TFLOP/s on 8192^3): 384 threads;
// warpgroup 0 is the producer (one thread issues TMA into a ring of full/empty mbarriers);
// warpgroups 1-2 consume with m64nNk16 wgmma from shared memory (setmaxnreg 40 / 232).
//   block_m 128: each consumer owns 64 rows x all 256 columns of the tile; a consumer whose
//                64 rows are all padding skips its wgmma (padding costs tensor time at
//                64-row granularity, while each weight tile still serves 128 rows).
//   block_m 64:  both consumers share the 64 rows, each owns 128 columns.
// B is one 4-D tensor map over the expert weights, (k, rows per half, halves, experts): W13 is
// (H, I, 2, E), so a gate/up tile loads, for each consumer, a box of gate rows then the box of
// the matching up rows; each thread then holds gate and up of the same channels (accumulator
// column j and j + box) and the activation runs in registers. Rows past I (or past H) are
// zero-filled by TMA, so no channel tail reads the other half. W2 is (I, H, 1, E).
//
// v2: persistent. The grid is one CTA per SM; each CTA walks the live tiles (M-blocks below
// total_padded, read on the device, times the n-tiles) with a stride of the grid, and the
// ring's K-tile counter runs on across tiles: the producer fills the next tile's stages
// while the consumers run this tile's epilogue, so HBM stays busy at tile boundaries and no
// CTA pays a launch, barrier set-up and pipeline fill per tile (v1 did, one CTA per tile:
// ~1-2 us against 20-90 us of mainloop). Each tile's expert comes from
// block_expert[m_block]; the grid is sized from the worst case, and nothing is read back
// (graph-capturable).
//
// v3: dynamic tile claiming (kernels/moe_sched.cuh). v2's CTAs took tiles b, b + grid, ... and
// drifted apart over a run, so the n-tiles of an M-block, which read the same A rows, ran far
// apart in time and A came back from HBM several times (ncu: 18.2 GB read by DeepSeek-V3's
// gate/up GEMM at 4096 tokens, 15.5 GB of weights and A). Now CTA b takes tile b, then claims
// tiles from a global counter in raster order, so tiles that share an operand start together
// whatever each CTA's history.
//
// v3b (FWDBENCH_MOE_PAIRS=1, block_m 128): the _pair entries run 2-CTA clusters on two tiles
// that share an operand and multicast it (moe_sched.cuh, "CTA pairs"): two M-blocks of one
// expert share the weight tile (48 -> 32 KiB per stage from L2, for the L2-bound rows), or, with
// one M-block per expert, two n-tiles share the A rows (their readers then run in lockstep).
//
// v4 (session 9): pairs by default where the M pairs apply (moe_wgmma.rs, pairs_default:
// >= 2 M-blocks per local expert expected; measured -4.1% / -2.7% on Qwen3 4096 / EP8, while
// the N pairs of one-block experts measured +0.5%), and A loaded evict-last (a_hint): the
// n-tiles of an M-block re-read its A rows from L2, and about a fifth of those reads missed.
//
// v4b: 8-byte epilogue stores (a lane pair swaps one bf16 pair, so a quad writes a full
// 32-byte sector of a row per store): +2% on DeepSeek 4096 against v4. The L2 prefetch of
// the boxes a few K-tiles past the ring's loads (p.prefetch, FWDBENCH_MOE_PREFETCH=k) is off
// by default: at k = 2 it cost 26% on DeepSeek 4096 and 13% on Qwen3 4096.
//
// Raster: tiles numbered in groups of G M-blocks across all n-tiles, M fastest, G the M-blocks
// per local expert (1..8): one expert's M-blocks read each weight tile together, and one
// M-block's n-tiles are G claims apart. Weights are read once, which is the bound at ~128
// rows per expert (DeepSeek-V3 at 4096 tokens x top-8).
//
// Cost per GEMM: FLOPs 2 * rows * n_w * k counting padding rows (n_w = 2I or H); bytes:
// weights of the touched experts once, A once from HBM plus L2 re-reads, C once.
#include "hopper.cuh"
#include "kern_util.cuh"
#include "moe_sched.cuh"

using namespace hopper;

namespace {
constexpr int BK = 64;  // one 128-byte swizzle span of bf16
constexpr int CONSUMER_WARPS = 8;
}  // namespace

// ------------------------------------------------------------------------------------
// moe_permute, token-major: CTA t < tokens copies x[t] to each of its local sorted rows
// (slot_to_sorted), so x is read once rather than once per choice (the row-major v2 read x
// top_k times, from HBM: x is 59 MB at DeepSeek-V3's 4096 tokens, more than L2 keeps across
// a pass in expert order); CTA tokens + b zeroes the padding rows of M-block b. 16 bytes per
// thread per step (hidden % 8 == 0 and 16-byte aligned rows, checked on the host).

extern "C" __global__ void __launch_bounds__(MOE_PERMUTE_THREADS) moe_permute(const MoePermuteParams p) {
    static_assert(MOE_PERMUTE_THREADS >= 128, "a thread per row of a 128-row M-block");
    __shared__ int s_rows[128];
    const int b = blockIdx.x, tid = threadIdx.x;
    // The GEMMs' tile counters (moe_sched.cuh), zeroed here since this kernel runs before
    // both GEMMs of the op.
    if (b == 0 && tid < MOE_TILE_COUNTERS) p.tile_counters[tid] = 0;
    const int chunks = p.hidden / 8;
    const auto row_of = [&](int r) { return reinterpret_cast<uint4*>(p.xs + static_cast<long long>(r) * p.hidden); };
    if (b < p.tokens) {
        if (tid < p.top_k) s_rows[tid] = p.slot_to_sorted[b * p.top_k + tid];  // -1: not local
        __syncthreads();
        const uint4* src = reinterpret_cast<const uint4*>(p.x + static_cast<long long>(b) * p.x_ld);
        for (int c = tid; c < chunks; c += blockDim.x) {
            const uint4 v = __ldg(src + c);
            for (int j = 0; j < p.top_k; ++j)
                if (s_rows[j] >= 0) row_of(s_rows[j])[c] = v;
        }
        return;
    }
    const int first = (b - p.tokens) * p.block_m;
    if (first >= p.total_padded[0]) return;  // uniform over the CTA
    if (tid < p.block_m) s_rows[tid] = p.sorted_slots[first + tid];
    __syncthreads();
    // Groups are padded at their end, so the padding rows of a block are its last ones.
    for (int i = 0; i < p.block_m; ++i) {
        if (s_rows[i] >= 0) continue;
        uint4* dst = row_of(first + i);
        for (int c = tid; c < chunks; c += blockDim.x) dst[c] = make_uint4(0, 0, 0, 0);
    }
}

// ------------------------------------------------------------------------------------
// The grouped GEMM.

// PAIR (block_m 128 only): 2-CTA clusters (moe_sched.cuh, "CTA pairs") on a unit of two tiles
// that share an operand, multicast to both CTAs. With two or more M-blocks per local expert the
// unit is M-blocks 2u and 2u + 1 at one n-tile (one weight tile; units whose two blocks belong
// to different experts load their own); otherwise it is one M-block at n-tiles 2v and 2v + 1
// (one A tile, each CTA loading and multicasting 64 of its 128 rows). The raster runs over units.
template <const MoeWgmmaTile& T, bool GATE_UP, bool PAIR>
__device__ __forceinline__ void moe_wgmma(const MoeWgmmaParams& p) {
    constexpr int BM = T.block_m, BN = T.block_n, STAGES = T.stages;
    constexpr int GROUPS_N = 2 / (BM / 64);  // consumers side by side along N
    constexpr int WN = BN / GROUPS_N;         // columns per consumer
    constexpr int BOX = WN / 2;               // rows per B box: two boxes per consumer
    constexpr int A_STAGE = BM * BK, B_STAGE = BN * BK;  // elements
    static_assert(BM == 64 || BM == 128, "one or two m64 slabs per M-block");
    static_assert(BOX % 8 == 0 && BOX <= 256, "B boxes start on 1024-byte swizzle atoms");
    static_assert(!PAIR || GROUPS_N == 1, "pairs: 128-row M-blocks, A loaded as two 64-row boxes");
    using Ring = TmaRing<STAGES, A_STAGE, B_STAGE>;

    // Persistent (moe_sched.cuh): one CTA per SM claims the tiles of the live M-blocks
    // (total_padded, written by moe_align) in raster order from a global counter. The ring's
    // K-tile counter `it` runs on across tiles, so the producer fills the next tile's stages
    // while the consumers are still in this tile's epilogue.
    const int m_blocks = p.total_padded[0] / BM;
    const bool along_m = PAIR && m_blocks >= 2 * p.experts;
    const MoeRaster raster(p.block_expert, along_m ? (m_blocks + 1) / 2 : m_blocks,
                           PAIR && !along_m ? (p.n_tiles + 1) / 2 : p.n_tiles, p.experts);
    const int tiles = raster.tiles;
    if (static_cast<int>(blockIdx.x) / (PAIR ? 2 : 1) >= tiles) return;  // uniform over the cluster
    const int rank = PAIR ? static_cast<int>(cluster_ctarank()) : 0;

    extern __shared__ unsigned char smem_raw[];
    __shared__ MoeTileMailbox mailbox;
    __shared__ MoePairLink link;
    if (threadIdx.x == 0) {
        mailbox.init(CONSUMER_WARPS);
        if (PAIR) link.init();
    }
    // Pairs: each stage's empty barrier counts both CTAs' consumer warps.
    const Ring ring(smem_raw, CONSUMER_WARPS * (PAIR ? 2 : 1));  // thread 0 fences every init
    if constexpr (PAIR) cluster_sync();
    else __syncthreads();
    const int wg = threadIdx.x / 128, t = threadIdx.x % 128;
    const int k_tiles = (p.k + BK - 1) / BK;

    // This CTA's tile of a raster unit and what its pair multicasts (moe_sched.cuh).
    using Work = MoePairWork;
    const auto work_of = [&](const MoeTile& unit) {
        return moe_pair_work<PAIR>(unit, along_m, rank, p.block_expert, m_blocks);
    };

    if (wg == 0) {
        setmaxnreg_dec<40>();
        if (threadIdx.x == 0) {
            tma_prefetch(&p.a);
            tma_prefetch(&p.b);
            const uint64_t read_once = l2_evict_first_policy(), shared = l2_evict_normal_policy();
            const uint64_t keep = p.a_hint ? l2_evict_last_policy() : shared;
            // L2 prefetch `ahead` K-tiles past the ring's loads (p.prefetch; 0, the default:
            // none, it measured much slower), weights with the normal policy, A as kept.
            const int ahead = p.prefetch;
            const auto prefetch = [&](const Work& v, int kt) {
                if (!v.valid) return;
                const int ab = v.m_block < m_blocks ? v.m_block : v.m_block - 1;
                if constexpr (PAIR) {
#pragma unroll
                    for (int h = 0; h < 2; ++h)
                        if (!v.share_a || h == rank) tma_prefetch_2d(&p.a, kt * BK, ab * BM + h * 64, keep);
                } else {
                    tma_prefetch_2d(&p.a, kt * BK, ab * BM, keep);
                }
#pragma unroll
                for (int q = 0; q < 2 * GROUPS_N; ++q) {
                    if (PAIR && v.share_b && q != rank) continue;
                    const int row = GATE_UP ? v.n_block * (BN / 2) + (q / 2) * BOX : v.n_block * BN + q * BOX;
                    tma_prefetch_4d(&p.b, kt * BK, row, GATE_UP ? q % 2 : 0, v.expert, shared);
                }
            };
            // Pairs claim every unit (rank 0, then sent to rank 1), none by blockIdx: a
            // cluster that is not co-resident at first then finds no work instead of running
            // its first unit after everyone else.
            int it = 0, linear = PAIR ? (rank == 0 ? atomicAdd(p.tile_counter, 1) : 0) : blockIdx.x;
            for (int j = 0;; ++j) {
                if constexpr (PAIR) {
                    if (rank == 0) link.send(j, linear);
                    else linear = link.receive(j);
                }
                mailbox.put(j, linear);
                if (linear >= tiles) break;
                // Claimed now, used after this tile's loads: the atomic's latency hides
                // under them.
                const int next = PAIR ? (rank == 0 ? atomicAdd(p.tile_counter, 1) : 0) : moe_claim_tile(p.tile_counter);
                const Work w = work_of(moe_tile(raster, linear));
                // The next tile, for the L2 prefetches past this tile's last K-tiles (single
                // CTAs only: rank 1 of a pair learns its next unit later).
                Work wn{0, 0, -1, false, false, false};
                if (!PAIR && ahead > 0 && next < tiles) wn = work_of(moe_tile(raster, next));
                linear = next;
                // Pairs load every stage (the peer counts on this CTA's boxes and arrivals).
                if (!PAIR && !w.valid) continue;
                const int a_block = w.m_block < m_blocks ? w.m_block : w.m_block - 1;
                // Evict-first when no other CTA reads this weight tile later (moe_sched.cuh).
                const bool reread = moe_weights_reread(w, a_block, rank, p.block_expert, m_blocks);
                const uint64_t weights_policy = reread ? shared : read_once;
                // A: kept (evict-last) for the M-block's later n-tiles; the last n-tile reads
                // it last (raster order) and demotes it (moe_sched.cuh, l2_evict_last_policy).
                const uint64_t a_policy = p.a_hint && w.n_block >= p.n_tiles - 1 ? read_once : keep;
                for (int kt = 0; kt < k_tiles; ++kt, ++it) {
                    const int s = ring.acquire(it);
                    if (ahead > 0) {
                        const int pk = kt + ahead;
                        if (pk < k_tiles) prefetch(w, pk);
                        else if (pk - k_tiles < k_tiles) prefetch(wn, pk - k_tiles);
                    }
                    if constexpr (PAIR) {
                        // A as two 64-row boxes (the pair entries' A map); sharing A, box h
                        // comes from rank h into both CTAs.
#pragma unroll
                        for (int h = 0; h < 2; ++h) {
                            bf16* dst = ring.a + s * A_STAGE + h * 64 * BK;
                            if (!w.share_a)
                                tma_load_2d_hint(dst, &p.a, &ring.full[s], kt * BK, a_block * BM + h * 64, a_policy);
                            else if (h == rank)
                                tma_load_2d_multicast_hint(dst, &p.a, &ring.full[s], kt * BK, a_block * BM + h * 64,
                                                           0x3, a_policy);
                        }
                    } else {
                        tma_load_2d_hint(ring.a + s * A_STAGE, &p.a, &ring.full[s], kt * BK, a_block * BM, a_policy);
                    }
#pragma unroll
                    for (int q = 0; q < 2 * GROUPS_N; ++q) {
                        // Gate/up: per consumer, its gate rows (half 0) then the same up
                        // rows (half 1). Down: consecutive boxes of W2 rows.
                        const int row = GATE_UP ? w.n_block * (BN / 2) + (q / 2) * BOX : w.n_block * BN + q * BOX;
                        const int half = GATE_UP ? q % 2 : 0;
                        bf16* dst = ring.b + s * B_STAGE + q * BOX * BK;
                        if (PAIR && w.share_b) {
                            // Box q comes from rank q, into both CTAs.
                            if (q == rank)
                                tma_load_4d_multicast(dst, &p.b, &ring.full[s], kt * BK, row, half, w.expert, 0x3,
                                                      weights_policy);
                        } else {
                            tma_load_4d_hint(dst, &p.b, &ring.full[s], kt * BK, row, half, w.expert, weights_policy);
                        }
                    }
                }
            }
            if constexpr (PAIR) cluster_sync();
        }
        return;
    }

    setmaxnreg_inc<232>();
    const int consumer = wg - 1, warp = t / 32, lane = t % 32;
    const int wm = GROUPS_N == 1 ? consumer : 0, wn = GROUPS_N == 1 ? 0 : consumer;
    const int act = p.act;
    constexpr int OUT_COLS = GATE_UP ? BOX : WN;
    // Frees stage s: for pairs in both CTAs (the peer's producer may multicast into it).
    const auto release = [&](int s) {
        if (lane == 0) {
            mbar_arrive(&ring.empty[s]);
            if constexpr (PAIR) mbar_arrive_remote(cluster_map(&ring.empty[s], rank ^ 1));
        }
    };
    int it = 0;
    for (int j = 0;; ++j) {
        const int linear = mailbox.get(j);
        if (linear >= tiles) break;
        const Work w = work_of(moe_tile(raster, linear));
        if (!PAIR && !w.valid) continue;
        const MoeTile tile{w.m_block, w.n_block, w.expert};
        // Groups are padded to BM at their end, so a 64-row slab that starts on a padding
        // row is all padding: with BM 128 that is the second slab of an expert's last block
        // whenever its tail is <= 64 rows. Skipping it keeps the compute of padding at
        // 64-row granularity while the weight tile is still shared by 128 rows; its rows
        // are written as zeros. A pair's CTA without a block only frees the stages.
        const bool all_padding = !w.valid || (GROUPS_N == 1 && p.sorted_slots[tile.m_block * BM + wm * 64] < 0);
        float acc[WN / 2];
#pragma unroll
        for (int i = 0; i < WN / 2; ++i) acc[i] = 0.f;
        if (all_padding) {
            for (int kt = 0; kt < k_tiles; ++kt, ++it) {
                const int s = it % STAGES;
                mbar_wait(&ring.full[s], (it / STAGES) & 1);
                release(s);
            }
            if (!w.valid) continue;
        } else {
            // As TmaRing::consume, on the running counter: one stage's wgmma group stays in
            // flight while the next stage is waited for; the tile's last stage is freed
            // after the final wait, before the epilogue, so the producer can refill it.
            const uint32_t a_offset = wm * 64 * BK, b_offset = wn * WN * BK;
            for (int kt = 0; kt < k_tiles; ++kt, ++it) {
                const int s = it % STAGES;
                mbar_wait(&ring.full[s], (it / STAGES) & 1);
                const uint64_t da = desc_sw128(ring.a + s * A_STAGE + a_offset, 16, 1024);
                const uint64_t db = desc_sw128(ring.b + s * B_STAGE + b_offset, 16, 1024);
                wgmma_fence();
#pragma unroll
                for (int kk = 0; kk < 4; ++kk) wgmma_ss<WN, 0>(acc, da + 2 * kk, db + 2 * kk, 1);
                wgmma_commit();
                wgmma_wait<1>();
                fence_regs(acc);
                if (kt > 0) release((it - 1) % STAGES);
            }
            wgmma_wait<0>();
            fence_regs(acc);
            release((it - 1) % STAGES);
        }

        // Accumulator d[4j + 2i + c]: row 16 warp + lane/4 + 8i, column 8j + 2(lane%4) + c.
        // Every row of a live M-block is < total_padded <= the buffer's rows; n % 8 == 0, so
        // a column pair is all in or all out. Gate/up: columns j < BOX are gate, j + BOX the
        // up of the same channel; down: all WN columns are outputs.
        const int row_base = tile.m_block * BM + wm * 64 + warp * 16 + lane / 4;
        const int col0 =
            (GATE_UP ? tile.n_block * (BN / 2) + wn * BOX : tile.n_block * BN + wn * WN) + 2 * (lane % 4);
        // Stores of 8 bytes (v4): lanes 2q and 2q + 1 swap one bf16 pair, so for column groups
        // j and j + 1 the even lane holds 4 consecutive columns of group j and the odd lane 4
        // of group j + 1; a quad then writes 32 contiguous bytes of a row (a full sector) per
        // store, half the store instructions of the 4-byte stores before. The shuffle runs in
        // every lane; only the store checks the tail (n % 8 == 0: 4 columns all in or out).
        static_assert(OUT_COLS % 16 == 0, "column groups in pairs");
        const bool odd = lane & 1;
#pragma unroll
        for (int j = 0; j < OUT_COLS / 8; j += 2) {
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                float v[4];
#pragma unroll
                for (int h = 0; h < 2; ++h) {
#pragma unroll
                    for (int c = 0; c < 2; ++c) {
                        float x = acc[4 * (j + h) + 2 * i + c];
                        if constexpr (GATE_UP) x = apply_act(x, act) * acc[4 * (j + h + BOX / 8) + 2 * i + c];
                        v[2 * h + c] = x;
                    }
                }
                const uint32_t w0 = pack_bf16x2(v[0], v[1]), w1 = pack_bf16x2(v[2], v[3]);
                const uint32_t recv = __shfl_xor_sync(0xffffffffu, odd ? w0 : w1, 1);
                const int col = col0 + 8 * j + (odd ? 6 : 0);
                if (col < p.n) {
                    bf16* dst = p.c + static_cast<long long>(row_base + 8 * i) * p.c_ld + col;
                    *reinterpret_cast<uint2*>(dst) = odd ? make_uint2(recv, w1) : make_uint2(w0, recv);
                }
            }
        }
    }
    if constexpr (PAIR) cluster_sync();
}

#define MOE_WGMMA_ENTRY(name, tile, gate_up)                                                      \
    extern "C" __global__ void __launch_bounds__(MOE_WGMMA_THREADS, 1) name(const __grid_constant__ MoeWgmmaParams p) { \
        moe_wgmma<tile, gate_up, false>(p);                                                       \
    }
#define MOE_WGMMA_PAIR_ENTRY(name, gate_up)                                                       \
    extern "C" __global__ void __cluster_dims__(2, 1, 1) __launch_bounds__(MOE_WGMMA_THREADS, 1)    \
        name(const __grid_constant__ MoeWgmmaParams p) {                                          \
        moe_wgmma<MOE_WGMMA_TILE_M128, gate_up, true>(p);                                         \
    }
MOE_WGMMA_ENTRY(moe_wgmma_gate_up_m128, MOE_WGMMA_TILE_M128, true)
MOE_WGMMA_ENTRY(moe_wgmma_down_m128, MOE_WGMMA_TILE_M128, false)
MOE_WGMMA_ENTRY(moe_wgmma_gate_up_m64, MOE_WGMMA_TILE_M64, true)
MOE_WGMMA_ENTRY(moe_wgmma_down_m64, MOE_WGMMA_TILE_M64, false)
MOE_WGMMA_PAIR_ENTRY(moe_wgmma_gate_up_m128_pair, true)
MOE_WGMMA_PAIR_ENTRY(moe_wgmma_down_m128_pair, false)
