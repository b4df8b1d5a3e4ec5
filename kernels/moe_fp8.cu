// FP8 MoE experts (e4m3 weights with 128x128 block scales, DeepSeek-V3's format) for any
// batch, over moe_align's padded per-expert layout (kernels/moe.cu; block_m 64 or 128, the
// host never picks 16 for FP8), on TMA + wgmma with DeepGEMM-style promotion:
//
//   moe_fp8_quant_permute  xq[r], sx[:, r] = quant_1x128(x[t]), r = slot_to_sorted[t k + j]
//                          (zero codes and scales for padding rows below total)
//   moe_fp8_gate_up        h[r, c]  = act(xq[r] . W13[e][c]) * (xq[r] . W13[e][I + c]) (fp32)
//                          aq[r], sa[:, r] = quant_1x128(h[r])                          c < I
//   moe_fp8_down           c2[r] = aq[r] . W2[e]^T  (bf16)                              [*, H]
// then moe_combine (moe.cu) applies the routing weights, as for bf16.
//
// Quantization is quant_act_fp8's (kernels/quant.cu) operation for operation: scale =
// max(amax, 1e-10) / 448 in fp32, one IEEE division per value, cvt.rn.satfinite to e4m3. The
// CPU reference (exec::cpu::ops::moe) quantizes each expert's token rows and its fp32
// act-and-multiply output the same way, so the down GEMM's input codes differ from the CPU's
// only where h itself differs (fp32 summation order, expf), never by the quantizer. h is
// quantized from the fp32 accumulators in the gate/up epilogue: no bf16 rounding in between,
// as on the CPU.
//
// Each GEMM: a consumer warpgroup owns 64 rows against 256 weight rows, K 128 bytes per stage
// (one swizzle row of e4m3); block_m 128 stacks the two consumers on one M-block (CTA tile
// 128 x 256, both consumers on one weight tile, so it is read from L2 once per M-block), block_m
// 64 puts them side by side (64 x 512). Per 128-deep K block a consumer runs two groups of 4
// m64n128k32, one per 128-row weight half, each into a fresh accumulator promoted as
// acc * sa[kb, row] * sw[e, rb, kb] into its fp32 total (fp8_block.cuh, shared with
// kernels/gemm_fp8.cu). A slab of padding only is skipped (a whole tile outright, the second
// slab of a 128-row tile by its consumer). B stages hold one TMA box per consumer unit (v5)
// from a 4-D map (k, rows per half, halves, experts):
//   gate/up: a consumer's halves are gate rows c0 .. c0 + 128 and the same up rows, so each
//            thread holds gate and up of the same channels (total[i] and total[64 + i]); the
//            128 channels are one weight scale block of each half and one activation
//            quantization group of h, whose amax reduces over the four lanes of a quad.
//   down:    a consumer's halves are rows n0 .. n0 + 256 of W2, two weight scale blocks.
// v5 (session 9): that box is the whole unit (gate/up 128 rows x both halves, down 256 rows),
// 2 boxes per stage at block_m 128 where v3 took 5 (four of 64 weight rows): +1% Qwen3-235B,
// +3% DeepSeek-V3 at 4096 tokens (docs/perf.md, FP8 MoE v5). Measured and kept off (v4): CTA
// pairs (PAIR below, FWDBENCH_MOE_FP8_PAIRS=1: -2% to -6%) and consumer turns (fp8_block.cuh
// Fp8Turns, FWDBENCH_MOE_FP8_ORDER=1: -1% to -2%).
// v3: persistent, as moe_wgmma.cu (kernels/moe_sched.cuh): one CTA per SM claims tiles from a
// counter in raster order (groups of M-blocks per expert across all n-tiles), the ring's stage
// counter carried across tiles so tile i+1's loads run under tile i's epilogue; weights of an
// expert with a single M-block are loaded evict-first. v2 launched one CTA per tile, and every
// CTA paid an empty ring (a DRAM round trip plus the fill) and an epilogue under which nothing
// loaded: 15-25% of a down GEMM's CTA (12-16 K blocks).
// 384 threads: a producer warpgroup (one TMA thread, 40 registers), two consumers (232).
//
// Cost per GEMM: FLOPs 2 * rows * n_w * k with padding rows of live slabs; bytes: touched
// experts' FP8 weights once, A codes once plus L2 re-reads, outputs once.
#include <cuda_fp8.h>

#include "fp8_block.cuh"
#include "kern_util.cuh"
#include "moe_sched.cuh"

using namespace hopper;

namespace {
constexpr int SLAB = 64;   // rows of one CTA tile: one m64 wgmma slab
constexpr int BK = 128;    // bytes of e4m3 per stage: one 128-byte swizzle row
constexpr int WN = 128;    // weight rows of one half: one scale block
constexpr int BOX = 64;    // weight rows per 8 KiB of a stage (the B stage's unit of layout)
constexpr int CONSUMER_WARPS = 8;

__device__ __forceinline__ float group_scale(float amax) {
    return fmaxf(amax, static_cast<float>(QUANT_AMAX_EPS)) / static_cast<float>(QUANT_E4M3_MAX);
}

// Two values to two e4m3 codes (the first in the low byte), rounded as quant.cu rounds one.
__device__ __forceinline__ uint16_t e4m3x2(float lo, float hi) {
    return static_cast<uint16_t>(__nv_cvt_float2_to_fp8x2(make_float2(lo, hi), __NV_SATFINITE, __NV_E4M3));
}
}  // namespace

// ------------------------------------------------------------------------------------
// moe_fp8_quant_permute, token-major: CTA t < tokens quantizes x[t] once, one warp per
// 128-column group (4 values a lane), and writes its codes and scales to each of the token's
// local sorted rows (slot_to_sorted); CTA tokens + b writes zero codes and scales into the
// padding rows of M-block b. v2 ran one CTA per sorted row and read and quantized x top_k
// times. hidden % 128 == 0 (checked on the host).

extern "C" __global__ void __launch_bounds__(MOE_FP8_PERMUTE_THREADS) moe_fp8_quant_permute(const MoeFp8PermuteParams p) {
    static_assert(MOE_FP8_PERMUTE_THREADS >= 128, "a thread per row of a 128-row M-block");
    __shared__ int s_rows[128];
    const int b = blockIdx.x, tid = threadIdx.x;
    // The GEMMs' tile counters (moe_sched.cuh), zeroed before either GEMM runs.
    if (b == 0 && tid < MOE_TILE_COUNTERS) p.tile_counters[tid] = 0;
    const int lane = tid % 32, groups = p.hidden / QUANT_BLOCK;
    unsigned char* codes = static_cast<unsigned char*>(p.codes);
    if (b < p.tokens) {
        if (tid < p.top_k) s_rows[tid] = p.slot_to_sorted[b * p.top_k + tid];  // -1: not local
        __syncthreads();
        for (int g = tid / 32; g < groups; g += blockDim.x / 32) {
            const int c0 = g * QUANT_BLOCK + lane * 4;
            const bf16* src = p.x + static_cast<long long>(b) * p.x_ld + c0;
            float v[4];
#pragma unroll
            for (int j = 0; j < 4; ++j) v[j] = to_f32(src[j]);
            float amax = 0.f;
#pragma unroll
            for (int j = 0; j < 4; ++j) amax = fmaxf(amax, fabsf(v[j]));
            const float scale = group_scale(warp_max(amax));
            const uint32_t word =
                e4m3x2(v[0] / scale, v[1] / scale) | (uint32_t(e4m3x2(v[2] / scale, v[3] / scale)) << 16);
            for (int j = 0; j < p.top_k; ++j) {
                const int r = s_rows[j];
                if (r < 0) continue;
                *reinterpret_cast<uint32_t*>(codes + static_cast<long long>(r) * p.hidden + c0) = word;
                if (lane == 0) p.scales[static_cast<long long>(g) * p.rows + r] = scale;
            }
        }
        return;
    }
    // Padding rows: zero codes and a zero scale, so their products are exactly zero.
    const int first = (b - p.tokens) * p.block_m;
    if (first >= p.total_padded[0]) return;  // uniform over the CTA
    if (tid < p.block_m) s_rows[tid] = p.sorted_slots[first + tid];
    __syncthreads();
    for (int i = 0; i < p.block_m; ++i) {
        if (s_rows[i] >= 0) continue;
        const int r = first + i;
        for (int c = tid * 16; c < p.hidden; c += blockDim.x * 16)
            *reinterpret_cast<uint4*>(codes + static_cast<long long>(r) * p.hidden + c) = make_uint4(0, 0, 0, 0);
        for (int g = tid; g < groups; g += blockDim.x) p.scales[static_cast<long long>(g) * p.rows + r] = 0.f;
    }
}

// ------------------------------------------------------------------------------------
// The grouped GEMMs. SLABS = block_m / 64 slabs per CTA tile; each consumer owns one 64-row
// slab against 256 weight rows (two 128-row halves, fp8_block.cuh):
//   SLABS 2 (block_m 128): the consumers stack along M on one M-block and share its 256
//            weight rows, so an expert's weight tile is read from L2 once per M-block;
//   SLABS 1 (block_m 64): the consumers sit side by side along N on one 64-row block.
//
// PAIR (block_m 128 only, FWDBENCH_MOE_FP8_PAIRS): 2-CTA clusters on a unit of two tiles that
// share an operand, multicast to both CTAs, as moe_wgmma.cu's v3b (moe_sched.cuh, "CTA
// pairs"). With two or more M-blocks per local expert (Qwen3-235B at 4096 tokens) the unit is
// M-blocks 2u and 2u + 1 at one n-tile: one weight tile, rank 0 loading the unit's box and
// multicasting it (L2 -> SM bytes per CTA and K block 48 -> 32 KiB: 170 -> 256 FLOP/B); units whose two blocks belong to different experts load their own. Otherwise
// (DeepSeek-V3 at 4096: one M-block per expert) it is one M-block at n-tiles 2v and 2v + 1:
// one A tile, each CTA loading and multicasting 64 of its 128 rows (48 -> 40 KiB), and the
// A tile's two readers run in lockstep. The raster runs over units; every CTA of a pair loads
// and drains every stage of every unit (the peer counts on its boxes and its arrivals).

template <bool GATE_UP, int SLABS, bool PAIR>
__device__ __forceinline__ void moe_fp8(const MoeFp8Params& p) {
    constexpr int NPARTS = 2 / SLABS;  // consumers along N
    constexpr int STAGES = SLABS == 2 ? MOE_FP8_STAGES_M128 : MOE_FP8_STAGES_M64;
    constexpr int A_STAGE = SLABS * SLAB * BK / 2, B_STAGE = NPARTS * 4 * BOX * BK / 2;
    static_assert(!PAIR || SLABS == 2, "pairs: 128-row M-blocks, A loaded as two 64-row boxes");
    using Ring = TmaRing<STAGES, A_STAGE, B_STAGE>;
    // p.smem_scales: a K block's scales come into shared memory with its stage, bulk copies on
    // the stage's full barrier, behind the ring's barriers: the M-block's activation scales
    // (block_m floats, contiguous in sa's [k / 128, rows]), then for each consumer unit and
    // weight half the 16-byte run of its weight-scale row holding block kb (rows padded to 4
    // blocks, sw_ld). Consumers read them once the stage has landed: no global load is left
    // in their mainloop (v5 __ldg'd four values a block ahead, and the SASS stall sampling
    // showed the weight scales' copy waiting on that load before the second half's wgmma).
    // At block_m 64 the weight scales stay __ldg'd a block ahead: reading them from shared
    // memory there makes ptxas spill in both entries (12 bytes).
    constexpr bool W_SMEM = SLABS == 2;
    static_assert(!W_SMEM || NPARTS == 1, "weight scales in shared memory: one consumer unit per tile");
    constexpr int SX = SLABS * SLAB, SX_STAGE = SX + (W_SMEM ? 2 * 4 : 0);
    // Weight-scale row blocks (128-row blocks of the expert's [n_w, k]) of consumer unit
    // `unit`'s two halves: gate/up the gate block and the up block of its channels, down the
    // two blocks of its 256 columns (the second clamped to the last: past H its products are
    // zero-filled and never stored).
    const auto weight_blocks = [&](int unit) {
        return int2{GATE_UP ? unit : 2 * unit, GATE_UP ? p.n / WN + unit : min(2 * unit + 1, p.w_row_blocks - 1)};
    };
    // Persistent (moe_sched.cuh): one CTA per SM claims the tiles of the live M-blocks (one
    // M-block of block_m = SLABS * 64 rows per tile) in raster order; the ring's stage
    // counter `it` runs on across tiles, so the next tile's loads run under this one's
    // epilogue (v2 launched a CTA per tile, and each exposed its fill and its epilogue).
    const int m_blocks = p.total_padded[0] / p.block_m;
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
    const Ring ring(smem_raw, CONSUMER_WARPS * (PAIR ? 2 : 1));  // thread 0 fences every barrier init
    float* const sx = reinterpret_cast<float*>(ring.empty + STAGES);  // STAGES x SX_STAGE, 16-byte aligned
    const bool smem_scales = p.smem_scales != 0;
    if constexpr (PAIR) cluster_sync();
    else __syncthreads();
    const int wg = threadIdx.x / 128, t = threadIdx.x % 128;
    const int k_blocks = p.k / BK;

    // This CTA's tile of a raster unit and what its pair multicasts (moe_sched.cuh).
    // `valid` false: nothing to compute. A tile of padding only (groups are padded at their
    // end, so a tile starting on padding is all padding; combine never reads its rows) or
    // without an expert is skipped by every role alike, or, in a pair, loaded and drained.
    using Work = MoePairWork;
    const auto work_of = [&](const MoeTile& unit) {
        Work w = moe_pair_work<PAIR>(unit, along_m, rank, p.block_expert, m_blocks);
        if (w.valid && p.sorted_slots[w.m_block * p.block_m] < 0) w.valid = false;
        return w;
    };

    if (wg == 0) {
        setmaxnreg_dec<40>();
        if (threadIdx.x == 0) {
            tma_prefetch(&p.a);
            tma_prefetch(&p.b);
            const uint64_t read_once = l2_evict_first_policy(), shared = l2_evict_normal_policy();
            // Pairs claim every unit (rank 0, then sent to rank 1), none by blockIdx: a cluster
            // that is not co-resident at first then finds no work instead of running its first
            // unit after everyone else.
            int it = 0, linear = PAIR ? (rank == 0 ? atomicAdd(p.tile_counter, 1) : 0) : blockIdx.x;
            for (int j = 0;; ++j) {
                if constexpr (PAIR) {
                    if (rank == 0) link.send(j, linear);
                    else linear = link.receive(j);
                }
                mailbox.put(j, linear);
                if (linear >= tiles) break;
                // Claimed now, used after this tile's loads: the atomic's latency hides under them.
                const int next =
                    PAIR ? (rank == 0 ? atomicAdd(p.tile_counter, 1) : 0) : moe_claim_tile(p.tile_counter);
                const Work w = work_of(moe_tile(raster, linear));
                linear = next;
                if (!PAIR && !w.valid) continue;
                // Past the last M-block (odd count, rank 1): reload the peer's rows.
                const int a_block = w.m_block < m_blocks ? w.m_block : w.m_block - 1;
                // Evict-first when no other CTA reads this weight tile later (moe_sched.cuh).
                const bool reread = moe_weights_reread(w, a_block, rank, p.block_expert, m_blocks);
                const uint64_t weights_policy = reread ? shared : read_once;
                // The tile's weight-scale rows as the consumer picks them, clamped (a drained
                // unit or a pair's empty tile copies in-bounds bytes it never reads), as 32-bit
                // float offsets into p.sw (the producer runs on 40 registers).
                int wrow[2] = {0, 0};
                if constexpr (W_SMEM) {
                    const int e = min(max(w.expert, 0), p.experts - 1);
                    const int2 wb = weight_blocks(w.n_block);
                    wrow[0] = (e * p.w_row_blocks + min(wb.x, p.w_row_blocks - 1)) * p.sw_ld;
                    wrow[1] = (e * p.w_row_blocks + min(wb.y, p.w_row_blocks - 1)) * p.sw_ld;
                }
                // Gate/up: 128 channels per consumer (its gate rows, then the same up rows);
                // down: 256 columns per consumer.
                const int unit_first = w.n_block * NPARTS, r_first = a_block * p.block_m;
                for (int kb = 0; kb < k_blocks; ++kb, ++it) {
                    const int s = ring.acquire(it, smem_scales ? SX_STAGE * 4 : 0);
                    if (smem_scales) {
                        float* slot = sx + s * SX_STAGE;
                        bulk_load(slot, p.sa + static_cast<long long>(kb) * p.rows + r_first, SX * 4, &ring.full[s]);
                        if constexpr (W_SMEM) {
#pragma unroll
                            for (int h = 0; h < 2; ++h)
                                bulk_load(slot + SX + 4 * h, p.sw + wrow[h] + (kb & ~3), 16, &ring.full[s]);
                        }
                    }
                    if constexpr (PAIR) {
                        // A as two 64-row boxes (the pair entries' A map); sharing A, box h
                        // comes from rank h into both CTAs.
#pragma unroll
                        for (int h = 0; h < 2; ++h) {
                            bf16* dst = ring.a + s * A_STAGE + h * SLAB * BK / 2;
                            if (!w.share_a)
                                tma_load_2d(dst, &p.a, &ring.full[s], kb * BK, r_first + h * SLAB);
                            else if (h == rank)
                                tma_load_2d_multicast(dst, &p.a, &ring.full[s], kb * BK, r_first + h * SLAB, 0x3);
                        }
                    } else {
                        tma_load_2d(ring.a + s * A_STAGE, &p.a, &ring.full[s], kb * BK, r_first);
                    }
                    // B: one box per consumer unit (v5; v3 took four boxes of 64 rows): gate/up
                    // 128 gate rows and the same up rows as one 128 x 2 box of the (k, I, 2, E)
                    // map, down 256 rows of W2 (moe_fp8.rs, b_box). The box lands as [half][row][k],
                    // the layout consume_fp8 reads. Each TMA box of 128-byte rows costs the SM's
                    // copy engine time on top of its bytes (docs/perf.md, FP8 MoE v5).
#pragma unroll
                    for (int q = 0; q < NPARTS; ++q) {
                        const int unit = unit_first + q;
                        const int row = GATE_UP ? unit * WN : unit * 2 * WN;
                        const int half = 0;
                        bf16* dst = ring.b + s * B_STAGE + q * 4 * BOX * BK / 2;
                        if (PAIR && w.share_b) {
                            // The unit's box comes from rank 0 into both CTAs.
                            if (rank == 0)
                                tma_load_4d_multicast(dst, &p.b, &ring.full[s], kb * BK, row, half, w.expert, 0x3,
                                                      weights_policy);
                        } else {
                            tma_load_4d_hint(dst, &p.b, &ring.full[s], kb * BK, row, half, w.expert, weights_policy);
                        }
                    }
                }
            }
            if constexpr (PAIR) cluster_sync();
        }
        return;
    }

    setmaxnreg_inc<232>();
    const int q = wg - 1, warp = t / 32, lane = t % 32;
    const int slab = SLABS == 2 ? q : 0;
    const int row_in_slab = warp * 16 + lane / 4;
    // Frees stage s: for pairs in both CTAs (the peer's producer may multicast into it).
    const auto release = [&](int s) {
        if (lane == 0) {
            mbar_arrive(&ring.empty[s]);
            if constexpr (PAIR) mbar_arrive_remote(cluster_map(&ring.empty[s], rank ^ 1));
        }
    };
    // Turns (fp8_block.cuh) need both consumers on every tile: block_m 128's stacked pair.
    Fp8Turns turns{SLABS == 2 && p.order ? q : -1};
    int it = 0;
    for (int j = 0;; ++j) {
        const int linear = mailbox.get(j);
        if (linear >= tiles) break;
        const Work w = work_of(moe_tile(raster, linear));
        if (!PAIR && !w.valid) continue;
        const int expert = w.expert, r_first = w.m_block * p.block_m;
        const int unit = w.n_block * NPARTS + (SLABS == 2 ? 0 : q);
        const int slab_first = r_first + slab * SLAB;
        // A consumer with nothing to compute (a pair's CTA without a tile), whose columns lie
        // past the output, or whose slab is padding only (the last slab of an expert's
        // M-block) only frees the stages.
        const int col_first = GATE_UP ? unit * WN : unit * 2 * WN;
        if (!w.valid || col_first >= p.n ||
            (slab > 0 && (slab_first >= p.rows || p.sorted_slots[slab_first] < 0))) {
            for (int kb = 0; kb < k_blocks; ++kb, ++it) {
                const int s = it % STAGES;
                turns.skip();
                mbar_wait(&ring.full[s], (it / STAGES) & 1);
                turns.skip();
                release(s);
            }
            continue;
        }
        // Accumulator d[64h + 4j + 2i + c]: row 16 warp + lane/4 + 8i, column 128h + 8j + 2(lane%4) + c.
        const int r0 = slab_first + row_in_slab, r1 = r0 + 8;
        const float* sw = p.sw + static_cast<long long>(expert) * p.w_row_blocks * p.sw_ld;
        const int2 wb = weight_blocks(unit);
        const float* sw0 = sw + static_cast<long long>(wb.x) * p.sw_ld;
        const float* sw1 = sw + static_cast<long long>(wb.y) * p.sw_ld;
        float total[2 * WN / 2];
#pragma unroll
        for (int i = 0; i < WN; ++i) total[i] = 0.f;
        consume_fp8<2>(
            ring, slab * SLAB * BK / 2, (SLABS == 2 ? 0 : q) * 4 * BOX * BK / 2, k_blocks, total,
            [&](int kb) {
                if (smem_scales && W_SMEM) return Fp8Scales{0.f, 0.f, 0.f, 0.f};
                if (smem_scales) return Fp8Scales{0.f, 0.f, __ldg(sw0 + kb), __ldg(sw1 + kb)};
                const float* sa = p.sa + static_cast<long long>(kb) * p.rows;
                return Fp8Scales{__ldg(sa + r0), __ldg(sa + r1), __ldg(sw0 + kb), __ldg(sw1 + kb)};
            },
            [&](int kb, int s, Fp8Scales& c) {
                if (!smem_scales) return;
                const float* slot = sx + s * SX_STAGE;
                c.x0 = slot[slab * SLAB + row_in_slab];
                c.x1 = slot[slab * SLAB + row_in_slab + 8];
                if constexpr (W_SMEM) {
                    c.w0 = slot[SX + (kb & 3)];  // the tile's one consumer unit: halves 0 and 1
                    c.w1 = slot[SX + 4 + (kb & 3)];
                }
            },
            release, turns, it);
        it += k_blocks;

        if constexpr (GATE_UP) {
            // h for channels col_first + 8j + 2(lane%4) + c, j < 16: gate at total[4j + 2i + c],
            // up 64 further; h overwrites the gate values. The row's 128-channel group lies in
            // the four lanes of a quad.
            float amax[2] = {0.f, 0.f};
#pragma unroll
            for (int i = 0; i < WN / 2; ++i) {
                total[i] = apply_act(total[i], p.act) * total[WN / 2 + i];
                amax[(i >> 1) & 1] = fmaxf(amax[(i >> 1) & 1], fabsf(total[i]));
            }
            unsigned char* codes = static_cast<unsigned char*>(p.c);
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                amax[i] = fmaxf(amax[i], __shfl_xor_sync(0xffffffffu, amax[i], 1));
                amax[i] = fmaxf(amax[i], __shfl_xor_sync(0xffffffffu, amax[i], 2));
                const int row = i ? r1 : r0;
                const float scale = group_scale(amax[i]);
                unsigned char* dst = codes + static_cast<long long>(row) * p.n + col_first + 2 * (lane % 4);
#pragma unroll
                for (int j = 0; j < WN / 8; ++j)
                    *reinterpret_cast<uint16_t*>(dst + 8 * j) =
                        e4m3x2(total[4 * j + 2 * i] / scale, total[4 * j + 2 * i + 1] / scale);
                if (lane % 4 == 0) p.c_scales[static_cast<long long>(unit) * p.rows + row] = scale;
            }
        } else {
            bf16* out = static_cast<bf16*>(p.c);
#pragma unroll
            for (int j = 0; j < WN / 4; ++j) {
                const int col = col_first + (j / 16) * WN + 8 * (j % 16) + 2 * (lane % 4);
                if (col >= p.n) continue;
#pragma unroll
                for (int i = 0; i < 2; ++i) {
                    bf16* dst = out + static_cast<long long>(i ? r1 : r0) * p.n + col;
                    *reinterpret_cast<__nv_bfloat162*>(dst) = __floats2bfloat162_rn(total[4 * j + 2 * i], total[4 * j + 2 * i + 1]);
                }
            }
        }
    }
    turns.finish();
    if constexpr (PAIR) cluster_sync();
}

#define MOE_FP8_ENTRY(name, gate_up, slabs)                                                                  \
    extern "C" __global__ void __launch_bounds__(MOE_FP8_THREADS, 1) name(const __grid_constant__ MoeFp8Params p) { \
        moe_fp8<gate_up, slabs, false>(p);                                                                   \
    }
#define MOE_FP8_PAIR_ENTRY(name, gate_up)                                                                    \
    extern "C" __global__ void __cluster_dims__(2, 1, 1) __launch_bounds__(MOE_FP8_THREADS, 1)               \
        name(const __grid_constant__ MoeFp8Params p) {                                                       \
        moe_fp8<gate_up, 2, true>(p);                                                                        \
    }
MOE_FP8_ENTRY(moe_fp8_gate_up_m128, true, 2)
MOE_FP8_ENTRY(moe_fp8_gate_up_m64, true, 1)
MOE_FP8_ENTRY(moe_fp8_down_m128, false, 2)
MOE_FP8_ENTRY(moe_fp8_down_m64, false, 1)
MOE_FP8_PAIR_ENTRY(moe_fp8_gate_up_m128_pair, true)
MOE_FP8_PAIR_ENTRY(moe_fp8_down_m128_pair, false)
