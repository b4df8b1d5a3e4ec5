// MLA decode, absorbed form, FlashMLA class: TMA + wgmma, warp-specialised (the fa3 backend's
// MLA decode; mla.cu's mma.sync kernels stay the fa2 backend's and serve other latent widths).
//
//   For sequence b and head h, one new query [q_lat[b, h] (512) ; q_pe[b, h] (64)] over the
//   latent cache rows [c_kv (512) ; k_pe (64)] of that sequence:
//   s(h, j) = scale * ([q_lat ; q_pe] . cache[j]), p = softmax over j < n_kv,
//   o[b, h, :] = sum_j p(h, j) c_kv[j] (512 wide). bf16 in and out, fp32 scores, softmax
//   statistics and accumulators; P is rounded to bf16 for P V.
//   FLOPs 2 * batch * heads * n_kv * (576 + 512); bytes ~ batch * n_kv * 576 * 2 (each cache
//   row is read once per 64 heads: h16, the TP8 shard, is memory bound, h128 compute bound).
//
// mla_decode_wgmma (above 16 heads): one CTA per (split, 64-head tile, sequence); heads past
// `heads` read as zero (TMA boxes past the tensor map), up to 64 wgmma rows. 384 threads:
//   warpgroup 0, the producer (24 registers): one thread loads Q (9 boxes of 64 heads x 64
//     columns) once, then the split's cache tiles of 64 keys x 576 into a 2-stage ring
//     (72 KiB a stage), each stage guarded by a full mbarrier per 64-column chunk (S starts on
//     the first chunk that lands) and one empty mbarrier.
//   warpgroups 1 and 2, the consumers (240 registers), g = 0, 1: warpgroup g computes
//     S_g = Q[64 x 576] . K[keys 32g..32g+31]^T (SS wgmma, both K-major), so no score is
//     computed twice; the two exchange row maxima through shared memory (barrier MAX), each
//     turns its half into P (log2 domain) and writes it, bf16 and 128-byte swizzled, into one
//     64 x 64 P tile for the other; then warpgroup g accumulates its 256 output columns,
//     O_g[64 x 256] += P[64 x 64] . V[64 keys x 256g..256g+255], V being the first 512 columns
//     of the same cache tile read MN-major (transpose bit): the cache is read once. Its own
//     32 keys go first, P from registers (RS wgmma), while the other half crosses (P_FULL).
//   Schedule (v3): softmax(t), P V(t), and S(t + 1) issued right behind it; stage t is
//     released when P V(t) retires, so the load of tile t + 2 has a whole tile of compute to
//     land in. v2 issued S(t) with P V(t - 1) to hide the softmax, but the stage of t - 1 then
//     freed just before S(t + 1) needed the next tile: every tile's load was exposed. Above
//     64 heads (compute bound) S(t + 1) goes between the two halves of P V(t), so softmax(t + 1)
//     runs under the second half.
//   v4 (session 8): Q's last 3 chunks as wgmma A fragments in registers (RS k-steps in S):
//     each warpgroup re-read all of Q from shared memory for every tile.
//   v5 (session 8): S is split along its depth instead of its keys: warpgroup g computes
//     the partial S over k-steps [18g, 18g + 18) for all 64 keys (m64n64: 4 KiB of operands
//     per 32 clk of MMA, v3b's m64n32 moved 3 KiB per 16), 6 of them with Q from registers,
//     so Q's shared-memory reads fall to 48 KiB a tile (v3b 144, v4 96); the halves are
//     summed through two 8 KiB buffers (Q chunks 3 and 8, read only into registers), after
//     which each warpgroup holds v3b's S layout for its 32 keys.
// mla_decode_wgmma_keys (v4, at most 16 heads: the TP8 shard): keys on the wgmma M rows, so
//   16 heads are not padded to 64. One producer warp (Q 16 x 576, then the split's cache tiles
//   into a ring of 25 chunks of 64 keys x 64 columns, each with its full and empty mbarrier:
//   2.8 tiles in flight, plus L2 prefetches of the tile `l2_prefetch_tiles` (3) beyond; a
//   tile's rope chunk is refilled as soon as S^T has read it) and one consumer warpgroup:
//   S^T[64 keys x 16] = K Q^T (SS, both K-major), the softmax per head column (maxima across
//   the 4 warps through shared memory), P^T to shared memory as a K-major [16 heads][64 keys] tile, then
//   O^T[512 x 16] += V^T P^T as 8 m64n16 row tiles, V^T being the tile's latent chunks read
//   MN-major (the transpose-A bit): per tile ~1/4 of v3b's MMA work and ~2/3 of its
//   shared-memory traffic, so the kernel is bound by HBM (v4 measured no faster than v3b's
//   kernel with 2 whole-tile stages: bytes in flight were the bound, hence the ring). The _pair entry runs the two
//   splits of a sequence as a 2-CTA cluster and merges them through distributed shared
//   memory (no partials in global memory, no combine kernel).
// Split-KV: split `blockIdx.x` takes keys [split * chunk, +chunk), chunk a multiple of 64;
// num_splits == 1 writes o, otherwise fp32 partials and log2-domain LSE go to the scratch in
// mla.cu's layout and mla.cu's mla_combine merges them.
// Shared memory: Q 72 KiB + 2 x 72 KiB ring + P 8 KiB + row statistics + barriers (~226 KiB);
// the keys kernel: Q 18 KiB + a 200 KiB chunk ring + P^T 2 KiB + statistics (~222 KiB).
// docs/perf.md "MLA decode v2" and "v3" record each version's prediction and measurement.
#include "hopper.cuh"

using namespace hopper;

namespace mla_wg {

constexpr int DL = 512, DR = 64, DK = DL + DR, CHUNKS = DK / 64;  // 9 column chunks of 64
constexpr int BM = 64, BN = 64, STAGES = 2;
constexpr int CHUNK_ELEMS = 64 * 64;                               // one [64 rows][64] chunk
constexpr int TILE_ELEMS = CHUNKS * CHUNK_ELEMS, TILE_BYTES = TILE_ELEMS * 2;
constexpr int HALF_KEYS = BN / 2, HALF_COLS = DL / 2;              // per consumer warpgroup
constexpr int CONSUMER_WARPS = 8, CONSUMER_THREADS = 256;
constexpr int BAR_MAX = 1, BAR_P_FREE = 2, BAR_P_FULL = 3, BAR_SUM = 4, BAR_XCHG = 5;
constexpr float LOG2E = 1.4426950408889634f;
// S is split along its depth: warpgroup g takes k-steps [18 g, 18 g + 18) of the 36 for all
// 64 keys (m64n64), the first 12 with Q from shared memory, the last 6 from registers.
constexpr int KS_PER_WG = DK / 16 / 2, KS_SMEM = 12, KS_REG = KS_PER_WG - KS_SMEM;
// Q's chunk 3 (k-steps 12-15) is only ever read by warpgroup 0, from registers, and chunk 8
// (32-35) only by warpgroup 1, from registers: after the prologue they hold the two 8 KiB
// partial-score exchange buffers.
constexpr int XCHG_CHUNK0 = 3, XCHG_CHUNK1 = 8;
// v4 (DEPTH_SPLIT false): S split by keys (m64n32 over all 36 k-steps), Q's last 3 chunks
// from registers.
constexpr int Q_REG_CHUNKS = 3, Q_SMEM_KSTEPS = (CHUNKS - Q_REG_CHUNKS) * 4;
static_assert(KS_SMEM == XCHG_CHUNK0 * 4 && KS_PER_WG + KS_SMEM + 2 <= XCHG_CHUNK1 * 4, "register-only chunks");

// Byte offsets inside the 1024-aligned dynamic shared memory.
constexpr int Q_OFF = 0, RING_OFF = TILE_BYTES, P_OFF = RING_OFF + STAGES * TILE_BYTES;
constexpr int MAX_OFF = P_OFF + BM * BN * 2, SUM_OFF = MAX_OFF + 2 * BM * 4, BAR_OFF = SUM_OFF + 2 * BM * 4;
constexpr int SMEM_BYTES = BAR_OFF + 8 * (1 + STAGES * CHUNKS + STAGES) + 1024;  // + alignment slack
static_assert(SMEM_BYTES == MLA_WGMMA_SMEM_BYTES, "mla_decode.rs sizes the launch from the same layout");

// Byte offset of element (row, col) of a 64-column SW128 chunk (16-byte unit XOR row % 8).
__device__ __forceinline__ uint32_t sw128(int row, int col) {
    return row * 128 + ((((col >> 3) ^ row) & 7) << 4) + (col & 7) * 2;
}

// Descriptor d moved by `units` 16-byte units (no carry out of the 14-bit address field).
// The volatile add is recomputed at each use: ptxas would otherwise keep all 36 k-steps'
// loop-invariant Q descriptors live across the loop and spill.
__device__ __forceinline__ uint64_t desc_step(uint64_t d, uint32_t units) {
    uint32_t lo = static_cast<uint32_t>(d), hi = static_cast<uint32_t>(d >> 32);
    asm volatile("add.u32 %0, %0, %1;" : "+r"(lo) : "r"(units));
    return (static_cast<uint64_t>(hi) << 32) | lo;
}

__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

// DEPTH_SPLIT: v5's S (split along its depth, partials exchanged); otherwise v4's.
template <bool DEPTH_SPLIT>
__device__ void decode(const MlaDecodeWgmmaParams& p) {
    extern __shared__ unsigned char smem_raw[];
    unsigned char* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    bf16* sQ = reinterpret_cast<bf16*>(smem + Q_OFF);
    bf16* sK = reinterpret_cast<bf16*>(smem + RING_OFF);
    unsigned char* sP = smem + P_OFF;
    float* sMax = reinterpret_cast<float*>(smem + MAX_OFF);  // [2 warpgroups][64 rows]
    float* sSum = reinterpret_cast<float*>(smem + SUM_OFF);  // [2 warpgroups][64 rows]
    uint64_t* q_full = reinterpret_cast<uint64_t*>(smem + BAR_OFF);
    uint64_t* k_full = q_full + 1;
    uint64_t* k_empty = k_full + STAGES * CHUNKS;  // k_full: [stage][chunk]

    const int split = blockIdx.x, h0 = blockIdx.y * BM, b = blockIdx.z;
    const int per = (p.n_kv + p.num_splits - 1) / p.num_splits;
    const int chunk = (per + BN - 1) / BN * BN;
    const int kb = split * chunk, ke = min(p.n_kv, kb + chunk);
    float* lse_out = p.scratch + (long long)p.batch * p.heads * p.num_splits * DL;
    if (kb >= ke) {  // an empty split (more splits than 64-key tiles): weight 0 in the combine
        if (threadIdx.x < BM && h0 + threadIdx.x < p.heads)
            lse_out[((long long)b * p.heads + h0 + threadIdx.x) * p.num_splits + split] = -INFINITY;
        return;
    }
    const int n_tiles = (ke - kb + BN - 1) / BN;

    if (threadIdx.x == 0) {
        mbar_init(q_full, 1);
        for (int s = 0; s < STAGES; ++s) {
            for (int c = 0; c < CHUNKS; ++c) mbar_init(&k_full[s * CHUNKS + c], 1);
            mbar_init(&k_empty[s], CONSUMER_WARPS);
        }
        mbar_init_fence();
    }
    __syncthreads();

    const int wg = threadIdx.x / 128;
    if (wg == 0) {
        setmaxnreg_dec<24>();
        if (threadIdx.x == 0) {
            tma_prefetch(&p.q_lat);
            tma_prefetch(&p.q_pe);
            tma_prefetch(&p.cache);
            mbar_arrive_expect_tx(q_full, TILE_BYTES);
#pragma unroll
            for (int c = 0; c < CHUNKS - 1; ++c) tma_load_4d(sQ + c * CHUNK_ELEMS, &p.q_lat, q_full, 64 * c, h0, b, 0);
            tma_load_4d(sQ + (CHUNKS - 1) * CHUNK_ELEMS, &p.q_pe, q_full, 0, h0, b, 0);
            for (int t = 0; t < n_tiles; ++t) {
                const int s = t % STAGES;
                mbar_wait(&k_empty[s], ((t / STAGES) & 1) ^ 1);
                bf16* dst = sK + s * TILE_ELEMS;
#pragma unroll
                for (int c = 0; c < CHUNKS; ++c) {
                    uint64_t* full = &k_full[s * CHUNKS + c];
                    mbar_arrive_expect_tx(full, CHUNK_ELEMS * 2);
                    tma_load_4d(dst + c * CHUNK_ELEMS, &p.cache, full, 64 * c, kb + t * BN, b, 0);
                }
            }
        }
        return;
    }

    setmaxnreg_inc<240>();
    const int g = wg - 1, t128 = threadIdx.x % 128, warp = t128 / 32, lane = t128 % 32;
    const int r0 = 16 * warp + lane / 4;  // this thread's rows in the tile: r0 and r0 + 8
    const float score_log2 = p.scale * LOG2E;

    // v5: the partial S_g[64 x 64 keys] of the tile in stage s over warpgroup g's 18 k-steps,
    // each of its chunks (0-4 or 4-8) waited for just before its first k-step (k-steps 0, 0,
    // 6, 10, 14 of warpgroup 1; warpgroup 0 needs them no earlier). One m64n64 k-step moves
    // 4 KiB for 32 clk of MMA where v3b's m64n32 moved 3 KiB for 16, and Q is read once per
    // tile, not twice.
    constexpr int Q_REG_KSTEPS = DEPTH_SPLIT ? KS_REG : Q_REG_CHUNKS * 4;
    uint32_t qa[Q_REG_KSTEPS][4];
    const uint64_t q_desc = desc_sw128(sQ, 16, 1024);
    // v4: S_g for keys 32g..32g+31 over all 36 k-steps, each chunk's as soon as it lands.
    auto s_gemm_keys = [&](float (&sc)[HALF_KEYS / 2], int t) {
        const int s = t % STAGES;
        const bf16* k_tile = sK + s * TILE_ELEMS + g * HALF_KEYS * 64;
#pragma unroll
        for (int kk = 0; kk < DK / 16; ++kk) {
            if (kk % 4 == 0) mbar_wait(&k_full[s * CHUNKS + kk / 4], (t / STAGES) & 1);
            const uint64_t db = desc_sw128(k_tile + (kk / 4) * CHUNK_ELEMS, 16, 1024) + 2 * (kk % 4);
            if (kk < Q_SMEM_KSTEPS) {
                wgmma_ss<HALF_KEYS, 0>(sc, desc_step(q_desc, (kk / 4) * CHUNK_ELEMS * 2 / 16 + 2 * (kk % 4)), db,
                                       kk > 0);
            } else {
                wgmma_rs<HALF_KEYS, 0>(sc, qa[(kk - Q_SMEM_KSTEPS) % Q_REG_KSTEPS], db, kk > 0);
            }
        }
        wgmma_commit();
    };
    auto s_gemm = [&](float (&acc)[BN / 2], int t) {
        const int s = t % STAGES;
        uint64_t* full = &k_full[s * CHUNKS + 4 * g];
        const uint32_t phase = (t / STAGES) & 1;
        const uint64_t k_desc = desc_sw128(sK + s * TILE_ELEMS, 16, 1024);
#pragma unroll
        for (int kl = 0; kl < KS_PER_WG; ++kl) {
            // Recomputed per k-step (volatile), not 18 loop-invariant offsets kept live.
            uint32_t kk = KS_PER_WG * g;
            asm volatile("add.u32 %0, %0, %1;" : "+r"(kk) : "r"(kl));
            const uint32_t units = (kk / 4) * CHUNK_ELEMS * 2 / 16 + 2 * (kk % 4);  // 16-byte units
            // Each wait is followed by a fence: otherwise ptxas injects one on the wait's
            // divergent path and serialises the wgmmas (C7520).
            if (kl == 0) mbar_wait(&full[0], phase), mbar_wait(&full[1], phase), wgmma_fence();
            if (kl == 6) mbar_wait(&full[2], phase), wgmma_fence();
            if (kl == 10) mbar_wait(&full[3], phase), wgmma_fence();
            if (kl == 14) mbar_wait(&full[4], phase), wgmma_fence();
            if (kl < KS_SMEM)
                wgmma_ss<BN, 0>(acc, desc_step(q_desc, units), desc_step(k_desc, units), kl > 0);
            else
                wgmma_rs<BN, 0>(acc, qa[(kl - KS_SMEM) % Q_REG_KSTEPS], desc_step(k_desc, units), 1);
        }
        wgmma_commit();
    };
    // The two partials -> this warpgroup's S half (keys 32g..32g+31, the layout softmax
    // reads): the other half of its partial goes to buffer g, the other warpgroup's partial
    // of this half comes from buffer 1 - g. Both read and write [float4 v][thread], so the
    // same thread of each warpgroup holds the same score positions. A buffer is written again
    // only after both warpgroups have passed the next BAR_MAX, after this read.
    auto xchg_buf = [&](int w) {
        return reinterpret_cast<float4*>(reinterpret_cast<unsigned char*>(sQ) +
                                         (w == 0 ? XCHG_CHUNK0 : XCHG_CHUNK1) * CHUNK_ELEMS * 2);
    };
    float4* const xchg_mine = xchg_buf(g);
    float4* const xchg_other = xchg_buf(1 - g);
    auto exchange = [&](const float (&acc)[BN / 2], float (&sc)[HALF_KEYS / 2]) {
        // Selects on values, not a computed index (that would put acc in local memory).
        const bool first = g == 0;
#pragma unroll
        for (int v = 0; v < 4; ++v) {
            float4 x;
            x.x = first ? acc[16 + 4 * v] : acc[4 * v];
            x.y = first ? acc[17 + 4 * v] : acc[4 * v + 1];
            x.z = first ? acc[18 + 4 * v] : acc[4 * v + 2];
            x.w = first ? acc[19 + 4 * v] : acc[4 * v + 3];
            xchg_mine[v * 128 + t128] = x;
        }
        named_sync(BAR_XCHG, CONSUMER_THREADS);
#pragma unroll
        for (int v = 0; v < 4; ++v) {
            const float4 y = xchg_other[v * 128 + t128];
            sc[4 * v] = (first ? acc[4 * v] : acc[16 + 4 * v]) + y.x;
            sc[4 * v + 1] = (first ? acc[4 * v + 1] : acc[17 + 4 * v]) + y.y;
            sc[4 * v + 2] = (first ? acc[4 * v + 2] : acc[18 + 4 * v]) + y.z;
            sc[4 * v + 3] = (first ? acc[4 * v + 3] : acc[19 + 4 * v]) + y.w;
        }
    };
    // V_g's k-step kk (keys 16kk..16kk+15) of the tile in stage s: MN-major (keys are the K
    // dimension) from the tile's column chunks 4g..4g+3 (leading offset: the next 64 columns).
    auto v_desc = [&](int s, int kk) {
        return desc_sw128(sK + s * TILE_ELEMS + g * 4 * CHUNK_ELEMS + kk * 16 * 64, BN * 128, 1024);
    };

    float o[HALF_COLS / 2];
#pragma unroll
    for (int i = 0; i < HALF_COLS / 2; ++i) o[i] = 0.f;
    float sc[HALF_KEYS / 2], sacc[BN / 2];
    // Issue S(t) into sacc (v5) or sc (v4); after its wait, turn it into this warpgroup's sc.
    auto issue_s = [&](int t) {
        if constexpr (DEPTH_SPLIT)
            s_gemm(sacc, t);
        else
            s_gemm_keys(sc, t);
    };
    auto finish_s = [&]() {
        if constexpr (DEPTH_SPLIT) {
            fence_regs(sacc);
            exchange(sacc, sc);
        } else {
            fence_regs(sc);
        }
    };
    // This warpgroup's P as wgmma A fragments, [k-step][4]: S's accumulator and the A
    // fragment share the thread mapping, so P V on its own keys reads P from registers.
    uint32_t pa[HALF_KEYS / 16][4];
    float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f}, corr[2];

    // Tile t's scores -> P (in pa) and the rescale factors of what O holds, with the other
    // warpgroup's half of the keys through sMax. Keys past the split's end score -inf.
    auto softmax = [&](int t) {
        const int key0 = kb + t * BN + g * HALF_KEYS + 2 * (lane % 4);
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int j = 0; j < HALF_KEYS / 8; ++j)
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int c = 0; c < 2; ++c) {
                    float& x = sc[4 * j + 2 * i + c];
                    x = key0 + 8 * j + c < ke ? x * score_log2 : -INFINITY;
                    mx[i] = fmaxf(mx[i], x);
                }
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
            mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
            if (lane % 4 == 0) sMax[g * BM + r0 + 8 * i] = mx[i];
        }
        named_sync(BAR_MAX, CONSUMER_THREADS);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int r = r0 + 8 * i;
            // The tile's first key is valid and in warpgroup 0's half: m_new is finite.
            const float m_new = fmaxf(row_max[i], fmaxf(sMax[r], sMax[BM + r]));
            corr[i] = exp2f(row_max[i] - m_new);
            row_max[i] = m_new;
            float rs = 0.f;
#pragma unroll
            for (int j = 0; j < HALF_KEYS / 8; ++j) {
                const float e0 = exp2f(sc[4 * j + 2 * i] - m_new), e1 = exp2f(sc[4 * j + 2 * i + 1] - m_new);
                rs += e0 + e1;
                pa[j / 2][2 * (j % 2) + i] = pack_bf16x2(e0, e1);
            }
            row_sum[i] = row_sum[i] * corr[i] + rs;
        }
    };
    // This warpgroup's P into its 32 key columns of the swizzled 64 x 64 tile, for the other
    // warpgroup (after BAR_P_FREE: the other one's P V of the previous tile, the last reader,
    // has retired).
    auto store_p = [&]() {
#pragma unroll
        for (int j = 0; j < HALF_KEYS / 8; ++j)
#pragma unroll
            for (int i = 0; i < 2; ++i)
                *reinterpret_cast<uint32_t*>(sP + sw128(r0 + 8 * i, g * HALF_KEYS + 8 * j + 2 * (lane % 4))) =
                    pa[j / 2][2 * (j % 2) + i];
        fence_proxy_async();
    };
    // After the first tiles the running maximum rarely moves: skip the 128 multiplies when
    // every row of the warp keeps its maximum.
    auto rescale = [&]() {
        if (!__any_sync(0xffffffffu, corr[0] != 1.f || corr[1] != 1.f)) return;
#pragma unroll
        for (int j = 0; j < HALF_COLS / 8; ++j)
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                o[4 * j + 2 * i] *= corr[i];
                o[4 * j + 2 * i + 1] *= corr[i];
            }
    };

    // The other warpgroup's 32 keys of P V(t), P from sP.
    auto pv_other = [&](int s) {
#pragma unroll
        for (int kk = 0; kk < HALF_KEYS / 16; ++kk) {
            const int k_other = 2 * (1 - g) + kk;
            wgmma_ss<HALF_COLS, 1>(o, desc_sw128(sP, 16, 1024) + 2 * k_other, v_desc(s, k_other), 1);
        }
        wgmma_commit();
    };
    // P V(t) has retired: its registers are ours again and stage s may be refilled.
    auto release = [&](int s) {
        fence_regs(o);
#pragma unroll
        for (int kk = 0; kk < HALF_KEYS / 16; ++kk) fence_regs(pa[kk]);
        if (lane == 0) mbar_arrive(&k_empty[s]);
    };

    // Per tile t: softmax(t), then O += P V(t) (own keys from registers, then, once the other
    // warpgroup's P half is in sP, its keys), then S(t + 1) right behind on the tensor cores.
    // Stage t is released as soon as P V(t) completes, so the load of tile t + 2 overlaps
    // S(t + 1), softmax(t + 1) and P V(t + 1): a whole tile of compute.
    mbar_wait(q_full, 0);
    // Q's register k-steps as wgmma A fragments: word r of k-step kk holds row r0 + 8 (r % 2),
    // columns 16 kk + 2 (lane % 4) + 8 (r / 2) and the next one.
#pragma unroll
    for (int k = 0; k < Q_REG_KSTEPS; ++k)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int kk = DEPTH_SPLIT ? KS_PER_WG * g + KS_SMEM + k : Q_SMEM_KSTEPS + k;
            const int col = 16 * (kk % 4) + 2 * (lane % 4) + 8 * (r / 2);
            qa[k][r] = *reinterpret_cast<const uint32_t*>(reinterpret_cast<const unsigned char*>(sQ) +
                                                          (kk / 4) * CHUNK_ELEMS * 2 + sw128(r0 + 8 * (r % 2), col));
        }
    // Both have read their register chunks before either writes an exchange buffer.
    if constexpr (DEPTH_SPLIT) named_sync(BAR_XCHG, CONSUMER_THREADS);
    wgmma_fence();
    issue_s(0);
    wgmma_wait<0>();
    finish_s();
    softmax(0);
    // Several 64-head tiles read each cache tile (through L2), so the kernel is compute bound:
    // S(t + 1) goes ahead of the other half's P V(t) and softmax(t + 1) runs under the latter,
    // at the price of releasing stage t one softmax later. With one head tile (the TP8 shard)
    // loads are the bound, and S(t + 1), which may wait for its chunks, goes last instead.
    const bool softmax_under_pv = p.heads > BM;
    for (int t = 0; t < n_tiles; ++t) {
        const int s = t % STAGES;
        // Both warpgroups' P V(t - 1) have retired: sP may be overwritten.
        named_sync(BAR_P_FREE, CONSUMER_THREADS);
        rescale();
        store_p();
        fence_regs(o);
#pragma unroll
        for (int kk = 0; kk < HALF_KEYS / 16; ++kk) fence_regs(pa[kk]);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < HALF_KEYS / 16; ++kk) wgmma_rs<HALF_COLS, 1>(o, pa[kk], v_desc(s, 2 * g + kk), 1);
        wgmma_commit();
        named_sync(BAR_P_FULL, CONSUMER_THREADS);
        // Each branch holds its path's waits, so ptxas sees every wgmma retired on all of them.
        if (t + 1 < n_tiles && softmax_under_pv) {
            issue_s(t + 1);
            pv_other(s);
            wgmma_wait<1>();
#pragma unroll
            for (int kk = 0; kk < HALF_KEYS / 16; ++kk) fence_regs(pa[kk]);
            finish_s();
            softmax(t + 1);
            wgmma_wait<0>();
            release(s);
        } else if (t + 1 < n_tiles) {
            pv_other(s);
            issue_s(t + 1);
            wgmma_wait<1>();
            release(s);
            wgmma_wait<0>();
            finish_s();
            softmax(t + 1);
        } else {
            pv_other(s);
            wgmma_wait<0>();
            release(s);
        }
    }

    // Row sums: over the quad, then over the two warpgroups' key halves (same row max).
    float total[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        float s = row_sum[i];
        s += __shfl_xor_sync(0xffffffffu, s, 1);
        s += __shfl_xor_sync(0xffffffffu, s, 2);
        if (lane % 4 == 0) sSum[g * BM + r0 + 8 * i] = s;
    }
    named_sync(BAR_SUM, CONSUMER_THREADS);
#pragma unroll
    for (int i = 0; i < 2; ++i) total[i] = sSum[r0 + 8 * i] + sSum[BM + r0 + 8 * i];

    const int col0 = g * HALF_COLS + 2 * (lane % 4);
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const int h = h0 + r0 + 8 * i;
        if (h >= p.heads) continue;
        const float inv = 1.f / total[i];
        const long long row = (long long)b * p.heads + h;
        if (p.num_splits == 1) {
            bf16* out = p.o + (long long)b * p.o_batch_stride + (long long)h * p.o_head_stride + col0;
#pragma unroll
            for (int j = 0; j < HALF_COLS / 8; ++j)
                *reinterpret_cast<__nv_bfloat162*>(out + 8 * j) =
                    __floats2bfloat162_rn(o[4 * j + 2 * i] * inv, o[4 * j + 2 * i + 1] * inv);
        } else {
            float* part = p.scratch + (row * p.num_splits + split) * DL + col0;
#pragma unroll
            for (int j = 0; j < HALF_COLS / 8; ++j)
                *reinterpret_cast<float2*>(part + 8 * j) = make_float2(o[4 * j + 2 * i] * inv, o[4 * j + 2 * i + 1] * inv);
            if (g == 0 && lane % 4 == 0) lse_out[row * p.num_splits + split] = row_max[i] + log2f(total[i]);
        }
    }
}

}  // namespace mla_wg

extern "C" __global__ void __launch_bounds__(384, 1) mla_decode_wgmma(const __grid_constant__ MlaDecodeWgmmaParams p) {
    mla_wg::decode<true>(p);
}

// v4's S (split by keys): selectable for A/B runs (FWDBENCH_MLA_S_SPLIT=keys, mla_decode.rs).
extern "C" __global__ void __launch_bounds__(384, 1)
    mla_decode_wgmma_v4(const __grid_constant__ MlaDecodeWgmmaParams p) {
    mla_wg::decode<false>(p);
}

// ---- v4: keys on the wgmma M rows, for at most 16 heads (the TP8 shard) ----
namespace mla_keys {

using mla_wg::fence_proxy_async;
using mla_wg::sw128;

constexpr int DL = 512, DK = 576, CHUNKS = DK / 64;
constexpr int BN = 64;                    // keys per tile: the wgmma M of S^T
constexpr int HN = MLA_WGMMA_KEYS_HEADS;  // head columns: the wgmma N of both GEMMs
constexpr int M_TILES = DL / 64;  // O^T is 8 row tiles of 64 latent columns
// The ring is 25 slots of one 64-key x 64-column chunk (8 KiB), filled in tile-major chunk
// order i = 9 t + c: 2.8 tiles in flight where whole-tile stages fit only 2 beside Q.
constexpr int SLOTS = 25;
constexpr int KEY_CHUNK_ELEMS = BN * 64, CHUNK_BYTES = KEY_CHUNK_ELEMS * 2;
constexpr int Q_CHUNK_ELEMS = HN * 64, Q_BYTES = CHUNKS * Q_CHUNK_ELEMS * 2;
constexpr int CONSUMER_WARPS = 4, CONSUMER_THREADS = 128;
constexpr int BAR_MAX = 1, BAR_P_FULL = 2, BAR_SUM = 3, BAR_STAGED = 4;
constexpr int STAGE_LD = DL + 4;  // fp32 staging rows: fragment stores hit 32 distinct banks
constexpr float LOG2E = 1.4426950408889634f;

constexpr int Q_OFF = 0, RING_OFF = Q_BYTES, P_OFF = RING_OFF + SLOTS * CHUNK_BYTES;
constexpr int MAX_OFF = P_OFF + HN * BN * 2, SUM_OFF = MAX_OFF + 2 * CONSUMER_WARPS * HN * 4;
constexpr int BAR_OFF = SUM_OFF + CONSUMER_WARPS * HN * 4;
constexpr int SMEM_BYTES = BAR_OFF + 8 * (1 + 2 * SLOTS) + 1024;  // + alignment slack
static_assert(SMEM_BYTES == MLA_WGMMA_KEYS_SMEM_BYTES, "mla_decode.rs sizes the launch from the same layout");
static_assert(RING_OFF % 1024 == 0 && P_OFF % 1024 == 0, "128-byte swizzled tiles need 1024-byte alignment");
// The epilogue stages fp32 o_s[HN][STAGE_LD] and lse[HN] over the ring.
static_assert(HN * STAGE_LD * 4 + HN * 4 <= SLOTS * CHUNK_BYTES, "staging fits the ring");

// D[64 x 16] += A[64 x 16] * B[16 x 16], A MN-major (M contiguous: the V tile read as V^T),
// B K-major, both from shared memory (wgmma.cuh's wrappers read A K-major only).
__device__ __forceinline__ void wgmma_n16_a_mn(float (&d)[8], uint64_t desc_a, uint64_t desc_b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, p, 1, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "l"(desc_a), "l"(desc_b), "r"(1));
}

// Both CTAs of the cluster: release this CTA's shared-memory writes, acquire the peer's.
__device__ __forceinline__ void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;" ::: "memory");
}
__device__ __forceinline__ uint32_t cluster_rank() {
    uint32_t r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
}
// The address of the same shared-memory location in CTA `rank` of the cluster.
__device__ __forceinline__ uint32_t peer_addr(const void* p, uint32_t rank) {
    uint32_t r;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(smem_addr(p)), "r"(rank));
    return r;
}
__device__ __forceinline__ float4 ld_peer_f32x4(uint32_t addr) {
    float4 v;
    asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];"
                 : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
                 : "r"(addr)
                 : "memory");
    return v;
}
__device__ __forceinline__ float ld_peer_f32(uint32_t addr) {
    float v;
    asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(addr) : "memory");
    return v;
}

// The box at these coordinates into L2 only (no shared memory, no barrier).
__device__ __forceinline__ void tma_prefetch_l2_4d(const TensorMap* map, int c0, int c1, int c2, int c3) {
    asm volatile("cp.async.bulk.prefetch.tensor.4d.L2.global.tile [%0, {%1, %2, %3, %4}];" ::"l"(
                     reinterpret_cast<uint64_t>(map)),
                 "r"(c0), "r"(c1), "r"(c2), "r"(c3)
                 : "memory");
}

__device__ __forceinline__ void store_bf16x4(bf16* out, float4 v) {
    *reinterpret_cast<__nv_bfloat162*>(out) = __floats2bfloat162_rn(v.x, v.y);
    *reinterpret_cast<__nv_bfloat162*>(out + 2) = __floats2bfloat162_rn(v.z, v.w);
}

// PAIR: the launch is clusters of the two splits of one sequence (num_splits == 2), merged
// through distributed shared memory; otherwise num_splits == 1 writes o and more splits write
// mla.cu's partials for mla_combine.
template <bool PAIR>
__device__ void decode(const MlaDecodeWgmmaParams& p) {
    extern __shared__ unsigned char smem_raw[];
    unsigned char* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    bf16* sQ = reinterpret_cast<bf16*>(smem + Q_OFF);
    bf16* sK = reinterpret_cast<bf16*>(smem + RING_OFF);
    unsigned char* sP = smem + P_OFF;                         // P^T as [HN heads][BN keys], K-major
    float* sMax = reinterpret_cast<float*>(smem + MAX_OFF);  // [tile parity][warp][head]
    float* sSum = reinterpret_cast<float*>(smem + SUM_OFF);  // [warp][head]
    float* stage = reinterpret_cast<float*>(smem + RING_OFF);  // epilogue: o_s[HN][STAGE_LD]
    float* stage_lse = stage + HN * STAGE_LD;                   // and lse[HN], log2 domain
    uint64_t* q_full = reinterpret_cast<uint64_t*>(smem + BAR_OFF);
    uint64_t* k_full = q_full + 1;      // [slot]
    uint64_t* k_empty = k_full + SLOTS;  // [slot]

    const int split = blockIdx.x, b = blockIdx.z;
    const int per = (p.n_kv + p.num_splits - 1) / p.num_splits;
    const int chunk = (per + BN - 1) / BN * BN;
    const int kb = split * chunk, ke = min(p.n_kv, kb + chunk);
    const int n_tiles = kb < ke ? (ke - kb + BN - 1) / BN : 0;
    float* lse_out = p.scratch + (long long)p.batch * p.heads * p.num_splits * DL;
    if (!PAIR && n_tiles == 0) {  // an empty split: weight 0 in the combine
        if (threadIdx.x < p.heads) lse_out[((long long)b * p.heads + threadIdx.x) * p.num_splits + split] = -INFINITY;
        return;
    }

    if (threadIdx.x == 0) {
        mbar_init(q_full, 1);
        for (int s = 0; s < SLOTS; ++s) {
            mbar_init(&k_full[s], 1);
            mbar_init(&k_empty[s], CONSUMER_WARPS);
        }
        mbar_init_fence();
    }
    __syncthreads();

    const int wg = threadIdx.x / 128, t128 = threadIdx.x % 128, warp = t128 / 32, lane = t128 % 32;
    if (wg == 0) {
        // The producer: Q once (9 boxes of 16 heads x 64 columns), then the split's tiles.
        if (threadIdx.x == 0 && n_tiles > 0) {
            tma_prefetch(&p.q_lat);
            tma_prefetch(&p.q_pe);
            tma_prefetch(&p.cache);
            mbar_arrive_expect_tx(q_full, Q_BYTES);
#pragma unroll
            for (int c = 0; c < CHUNKS - 1; ++c) tma_load_4d(sQ + c * Q_CHUNK_ELEMS, &p.q_lat, q_full, 64 * c, 0, b, 0);
            tma_load_4d(sQ + (CHUNKS - 1) * Q_CHUNK_ELEMS, &p.q_pe, q_full, 0, 0, b, 0);
            for (int t = 0, i = 0; t < n_tiles; ++t)
                for (int c = 0; c < CHUNKS; ++c, ++i) {
                    // Tile t + l2_prefetch_tiles into L2 as tile t starts into the ring: that
                    // many more tiles of DRAM reads in flight per SM without shared memory.
                    const int ahead = t + p.l2_prefetch_tiles;
                    if (p.l2_prefetch_tiles > 0 && ahead < n_tiles)
                        tma_prefetch_l2_4d(&p.cache, 64 * c, kb + ahead * BN, b, 0);
                    const int slot = i % SLOTS;
                    mbar_wait(&k_empty[slot], ((i / SLOTS) & 1) ^ 1);
                    mbar_arrive_expect_tx(&k_full[slot], CHUNK_BYTES);
                    tma_load_4d(sK + slot * KEY_CHUNK_ELEMS, &p.cache, &k_full[slot], 64 * c, kb + t * BN, b, 0);
                }
        }
        // The cluster barrier counts every thread: the producer's match the consumers' two.
        if constexpr (PAIR) {
            cluster_sync();
            cluster_sync();
        }
        return;
    }
    {
        // The consumer warpgroup. This thread's S^T fragment sc[4j + 2i + c] is key row
        // 16 warp + lane / 4 + 8i of the tile and head column 8j + 2 (lane % 4) + c; its
        // softmax state is per head column, index k = 2j + c.
        const float score_log2 = p.scale * LOG2E;
        float o[M_TILES][8];
#pragma unroll
        for (int mt = 0; mt < M_TILES; ++mt)
#pragma unroll
            for (int e = 0; e < 8; ++e) o[mt][e] = 0.f;
        float sc[8], row_max[4], row_sum[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) row_max[k] = -INFINITY, row_sum[k] = 0.f;
        auto head_of = [&](int k) { return 8 * (k / 2) + 2 * (lane % 4) + k % 2; };

        if (n_tiles > 0) mbar_wait(q_full, 0);
        for (int t = 0; t < n_tiles; ++t) {
            // Tile t's chunk c is ring chunk 9 t + c.
            int slot[CHUNKS];
#pragma unroll
            for (int c = 0; c < CHUNKS; ++c) slot[c] = (t * CHUNKS + c) % SLOTS;
            // S^T[64 keys x 16 heads] = K Q^T, 36 k-steps once the whole tile has landed (a
            // wait between the k-steps makes ptxas serialise them here, C7520; the tile's
            // O^T needs all of it anyway).
#pragma unroll
            for (int c = 0; c < CHUNKS; ++c) mbar_wait(&k_full[slot[c]], ((t * CHUNKS + c) / SLOTS) & 1);
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < DK / 16; ++kk) {
                const uint64_t da = desc_sw128(sK + slot[kk / 4] * KEY_CHUNK_ELEMS, 16, 1024) + 2 * (kk % 4);
                const uint64_t db = desc_sw128(sQ + (kk / 4) * Q_CHUNK_ELEMS, 16, 1024) + 2 * (kk % 4);
                wgmma_ss<HN, 0>(sc, da, db, kk > 0);
            }
            wgmma_commit();
            wgmma_wait<0>();
            fence_regs(sc);
            // The rope chunk is S^T's alone: refill it now.
            if (lane == 0) mbar_arrive(&k_empty[slot[CHUNKS - 1]]);

            // Softmax over the keys (the M rows): per head, max over lanes of equal lane % 4,
            // then over the 4 warps through sMax (double-buffered by tile parity: a warp
            // writes tile t + 2's maxima only after all have passed tile t + 1's BAR_MAX).
            const int key0 = kb + t * BN + 16 * warp + lane / 4;
            float mx[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
#pragma unroll
            for (int j = 0; j < 2; ++j)
#pragma unroll
                for (int i = 0; i < 2; ++i)
#pragma unroll
                    for (int c = 0; c < 2; ++c) {
                        float& x = sc[4 * j + 2 * i + c];
                        x = key0 + 8 * i < ke ? x * score_log2 : -INFINITY;
                        mx[2 * j + c] = fmaxf(mx[2 * j + c], x);
                    }
            float* smax = sMax + (t & 1) * CONSUMER_WARPS * HN;
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                mx[k] = fmaxf(mx[k], __shfl_xor_sync(0xffffffffu, mx[k], 4));
                mx[k] = fmaxf(mx[k], __shfl_xor_sync(0xffffffffu, mx[k], 8));
                mx[k] = fmaxf(mx[k], __shfl_xor_sync(0xffffffffu, mx[k], 16));
                if (lane < 4) smax[warp * HN + head_of(k)] = mx[k];
            }
            // Also orders the previous tile's last read of sP (every warp waited for its
            // O^T) before this tile's P^T stores.
            named_sync(BAR_MAX, CONSUMER_THREADS);
            float corr[4];
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                const int h = head_of(k);
                // The tile's first key is valid (t < n_tiles): m_new is finite.
                const float m_new = fmaxf(row_max[k], fmaxf(fmaxf(smax[h], smax[HN + h]), fmaxf(smax[2 * HN + h], smax[3 * HN + h])));
                corr[k] = exp2f(row_max[k] - m_new);
                row_max[k] = m_new;
                row_sum[k] *= corr[k];
            }
#pragma unroll
            for (int j = 0; j < 2; ++j)
#pragma unroll
                for (int i = 0; i < 2; ++i)
#pragma unroll
                    for (int c = 0; c < 2; ++c) {
                        const int k = 2 * j + c;
                        const float e = exp2f(sc[4 * j + 2 * i + c] - row_max[k]);
                        row_sum[k] += e;
                        *reinterpret_cast<bf16*>(sP + sw128(head_of(k), 16 * warp + lane / 4 + 8 * i)) = to_bf16(e);
                    }
            if (__any_sync(0xffffffffu, corr[0] != 1.f || corr[1] != 1.f || corr[2] != 1.f || corr[3] != 1.f)) {
#pragma unroll
                for (int mt = 0; mt < M_TILES; ++mt)
#pragma unroll
                    for (int e = 0; e < 8; ++e) o[mt][e] *= corr[2 * (e / 4) + e % 2];
            }
            fence_proxy_async();
            named_sync(BAR_P_FULL, CONSUMER_THREADS);

            // O^T[512 x 16] += V^T[512 x 64 keys] P^T: V^T is the tile's first 8 chunks read
            // MN-major (latent columns contiguous), one chunk per 64-row tile of O^T.
#pragma unroll
            for (int mt = 0; mt < M_TILES; ++mt) fence_regs(o[mt]);
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < BN / 16; ++kk)
#pragma unroll
                for (int mt = 0; mt < M_TILES; ++mt)
                    wgmma_n16_a_mn(o[mt], desc_sw128(sK + slot[mt] * KEY_CHUNK_ELEMS + kk * 16 * 64, BN * 128, 1024),
                                   desc_sw128(sP, 16, 1024) + 2 * kk);
            wgmma_commit();
            wgmma_wait<0>();
#pragma unroll
            for (int mt = 0; mt < M_TILES; ++mt) fence_regs(o[mt]);
            if (lane == 0)
#pragma unroll
                for (int c = 0; c < CHUNKS - 1; ++c) mbar_arrive(&k_empty[slot[c]]);
        }

        // Per-head sums over all keys: lanes of equal lane % 4, then the warps.
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            float v = row_sum[k];
            v += __shfl_xor_sync(0xffffffffu, v, 4);
            v += __shfl_xor_sync(0xffffffffu, v, 8);
            v += __shfl_xor_sync(0xffffffffu, v, 16);
            if (lane < 4) sSum[warp * HN + head_of(k)] = v;
        }
        // Every warp is past its last tile: the ring (all loads landed and read) becomes the
        // staging area.
        named_sync(BAR_SUM, CONSUMER_THREADS);
        float inv[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const int h = head_of(k);
            const float total = sSum[h] + sSum[HN + h] + sSum[2 * HN + h] + sSum[3 * HN + h];
            inv[k] = n_tiles > 0 ? 1.f / total : 0.f;
            if (warp == 0 && lane < 4) stage_lse[h] = n_tiles > 0 ? row_max[k] + log2f(total) : -INFINITY;
        }
#pragma unroll
        for (int mt = 0; mt < M_TILES; ++mt)
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                const int k = 2 * (e / 4) + e % 2, d = 64 * mt + 16 * warp + lane / 4 + 8 * ((e / 2) % 2);
                stage[head_of(k) * STAGE_LD + d] = o[mt][e] * inv[k];
            }
    }

    const long long row0 = (long long)b * p.heads;
    if constexpr (PAIR) {
        // Split r merges heads [8r, 8r + 8) from its own staging and its peer's.
        cluster_sync();
        {
            const uint32_t rank = cluster_rank(), peer = rank ^ 1;
            const uint32_t peer_stage = peer_addr(stage, peer);
            constexpr int VECS = DL / 4;
#pragma unroll 4
            for (int idx = t128; idx < HN / 2 * VECS; idx += CONSUMER_THREADS) {
                const int h = rank * (HN / 2) + idx / VECS, d = 4 * (idx % VECS);
                if (h >= p.heads) continue;
                const float l_own = stage_lse[h], l_peer = ld_peer_f32(peer_stage + (HN * STAGE_LD + h) * 4);
                const float m = fmaxf(l_own, l_peer);
                const float w_own = l_own == -INFINITY ? 0.f : exp2f(l_own - m);
                const float w_peer = l_peer == -INFINITY ? 0.f : exp2f(l_peer - m);
                const float inv = 1.f / (w_own + w_peer);
                float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
                if (w_own > 0.f) {
                    const float4 a = *reinterpret_cast<const float4*>(stage + h * STAGE_LD + d);
                    v = make_float4(w_own * a.x, w_own * a.y, w_own * a.z, w_own * a.w);
                }
                if (w_peer > 0.f) {
                    const float4 a = ld_peer_f32x4(peer_stage + (h * STAGE_LD + d) * 4);
                    v = make_float4(v.x + w_peer * a.x, v.y + w_peer * a.y, v.z + w_peer * a.z, v.w + w_peer * a.w);
                }
                store_bf16x4(p.o + (long long)b * p.o_batch_stride + (long long)h * p.o_head_stride + d,
                             make_float4(v.x * inv, v.y * inv, v.z * inv, v.w * inv));
            }
        }
        // Neither CTA leaves while the other may still read its staging.
        cluster_sync();
    } else {
        named_sync(BAR_STAGED, CONSUMER_THREADS);
        constexpr int VECS = DL / 4;
#pragma unroll 4
        for (int idx = t128; idx < HN * VECS; idx += CONSUMER_THREADS) {
            const int h = idx / VECS, d = 4 * (idx % VECS);
            if (h >= p.heads) continue;
            const float4 v = *reinterpret_cast<const float4*>(stage + h * STAGE_LD + d);
            if (p.num_splits == 1)
                store_bf16x4(p.o + (long long)b * p.o_batch_stride + (long long)h * p.o_head_stride + d, v);
            else
                *reinterpret_cast<float4*>(p.scratch + ((row0 + h) * p.num_splits + split) * DL + d) = v;
        }
        if (p.num_splits > 1 && t128 < HN && t128 < p.heads)
            lse_out[(row0 + t128) * p.num_splits + split] = stage_lse[t128];
    }
}

}  // namespace mla_keys

extern "C" __global__ void __launch_bounds__(256, 1)
    mla_decode_wgmma_keys(const __grid_constant__ MlaDecodeWgmmaParams p) {
    mla_keys::decode<false>(p);
}

extern "C" __global__ void __cluster_dims__(2, 1, 1) __launch_bounds__(256, 1)
    mla_decode_wgmma_keys_pair(const __grid_constant__ MlaDecodeWgmmaParams p) {
    mla_keys::decode<true>(p);
}
