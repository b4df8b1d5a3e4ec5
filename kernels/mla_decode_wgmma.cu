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
// One CTA per (split, 64-head tile, sequence); heads past `heads` read as zero (TMA boxes
// past the tensor map), so 16 heads are padded to the 64 wgmma rows. 384 threads:
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
//     runs under the second half. Schedule v7 (MLA_SCHEDULE_RELEASE_FIRST, the default at or
//     below 64 heads since session 11, +1.9% at h16): stage t is released before S(t + 1)
//     waits for tile t + 1's chunks, so the load of t + 2 does not wait for t + 1 to land;
//     S(t + 1) then no longer overlaps P V(t).
// Split-KV: split `blockIdx.x` takes keys [split * chunk, +chunk), chunk a multiple of 64;
// num_splits == 1 writes o, otherwise fp32 partials and log2-domain LSE go to the scratch in
// mla.cu's layout and mla.cu's mla_combine merges them. At num_splits == 2 the `_pair` entry
// runs the two splits of a sequence as a 2-CTA cluster: each CTA's warpgroup g sends its
// unnormalised O (fp32) and row statistics into the other CTA's idle ring, the receiving
// warpgroup merges and writes o, and no combine kernel runs (v4 of session 8, +4% at h16).
// L2 prefetch (p.l2_prefetch > 0): the producer prefetches the next tiles that wait for a
// ring stage into L2 (cp.async.bulk.prefetch.tensor), more DRAM reads in flight per SM. The
// launcher's defaults (docs/perf.md "MLA decode v6"): above 64 heads prefetch 1 tile, Q's last
// 3 chunks in registers (`_qreg` entries) and softmax under P V; at the TP8 shard none of them.
// Shared memory: Q 72 KiB + 2 x 72 KiB ring + P 8 KiB + row statistics + barriers (~226 KiB).
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
constexpr int BAR_MAX = 1, BAR_P_FREE = 2, BAR_P_FULL = 3, BAR_SUM = 4;
constexpr float LOG2E = 1.4426950408889634f;

// Byte offsets inside the 1024-aligned dynamic shared memory.
constexpr int Q_OFF = 0, RING_OFF = TILE_BYTES, P_OFF = RING_OFF + STAGES * TILE_BYTES;
constexpr int MAX_OFF = P_OFF + BM * BN * 2, SUM_OFF = MAX_OFF + 2 * BM * 4, BAR_OFF = SUM_OFF + 2 * BM * 4;
constexpr int SMEM_BYTES = BAR_OFF + 8 * (1 + STAGES * CHUNKS + STAGES) + 1024;  // + alignment slack
static_assert(SMEM_BYTES == MLA_WGMMA_SMEM_BYTES, "mla_decode.rs sizes the launch from the same layout");

// desc_sw128 (K-major, SW128) of a shared address. With the address passed through an empty
// volatile asm first, ptxas cannot hoist the loop-invariant Q descriptors out of the tile loop
// (24-36 of them, 2 registers each, live across the loop: with Q's register chunks that spills).
__device__ __forceinline__ uint64_t desc_kmajor_opaque(uint32_t addr) {
    asm volatile("" : "+r"(addr));
    return ((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>(16 >> 4) << 16) | (static_cast<uint64_t>(1024 >> 4) << 32) |
           (1ull << 62);
}

// ---- 2-CTA clusters (the _pair entry: the two splits of a sequence merge through DSMEM) ----
__device__ __forceinline__ void st_cluster_v4(uint32_t addr, float a, float b, float c, float d) {
    asm volatile("st.shared::cluster.v4.f32 [%0], {%1, %2, %3, %4};" ::"r"(addr), "f"(a), "f"(b), "f"(c), "f"(d)
                 : "memory");
}
// Per consumer thread in the exchange buffer: its 128 O values, then row max and sum of its
// two rows; 132 floats (528 bytes: float4 reads of 8 threads hit distinct banks).
constexpr int XCH_FLOATS = 132;
static_assert(CONSUMER_THREADS / 2 * XCH_FLOATS * 4 <= STAGES * TILE_BYTES, "the exchange fits the ring");

template <bool PAIR, bool QREG>
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
            // L2 prefetch (p.l2_prefetch tiles, 0 = off): once tile t >= STAGES - 1 is issued,
            // tiles up to t + l2_prefetch that wait for a stage are fetched into L2, so their
            // DRAM reads overlap the stage wait and the TMA load later hits L2.
            int pf = STAGES;
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
                if (t >= STAGES - 1)
                    for (; pf < n_tiles && pf <= t + p.l2_prefetch; ++pf)
#pragma unroll
                        for (int c = 0; c < CHUNKS; ++c) tma_prefetch_4d(&p.cache, 64 * c, kb + pf * BN, b, 0);
            }
        }
        return;
    }

    setmaxnreg_inc<240>();
    const int g = wg - 1, t128 = threadIdx.x % 128, warp = t128 / 32, lane = t128 % 32;
    const int r0 = 16 * warp + lane / 4;  // this thread's rows in the tile: r0 and r0 + 8
    const float score_log2 = p.scale * LOG2E;

    // QREG: Q's last QREG_CHUNKS chunks (k-steps QREG_K0..35) as wgmma A fragments in
    // registers, loaded once, so those k-steps read only K from shared memory (S at n32 is
    // bound by the shared-memory port: 3 KiB a 16-clock k-step with both operands there).
    constexpr int QREG_CHUNKS = 3, QREG_K0 = (CHUNKS - QREG_CHUNKS) * 4, QREG_STEPS = QREG ? QREG_CHUNKS * 4 : 1;
    uint32_t qa[QREG_STEPS][4];

    // S_g for the tile in stage s: 36 k-steps of 16 over the 9 chunks of Q and of K's half g,
    // each chunk's k-steps issued as soon as that chunk has landed.
    auto s_gemm = [&](float (&sc)[HALF_KEYS / 2], int t) {
        const int s = t % STAGES;
        const bf16* k_tile = sK + s * TILE_ELEMS + g * HALF_KEYS * 64;
        // One descriptor per operand and call; k-step kk adds its chunk (8 KiB >> 4) and its
        // 32 bytes (>> 4) to the address field, which cannot carry (shared addresses < 256 KiB).
        const uint64_t dq = desc_kmajor_opaque(smem_addr(sQ)), dk = desc_sw128(k_tile, 16, 1024);
#pragma unroll
        for (int kk = 0; kk < DK / 16; ++kk) {
            if (kk % 4 == 0) mbar_wait(&k_full[s * CHUNKS + kk / 4], (t / STAGES) & 1);
            const uint64_t step = (kk / 4) * (CHUNK_ELEMS * 2 / 16) + 2 * (kk % 4);
            if (QREG && kk >= QREG_K0) {
                wgmma_rs<HALF_KEYS, 0>(sc, qa[QREG ? kk - QREG_K0 : 0], dk + step, 1);
            } else {
                wgmma_ss<HALF_KEYS, 0>(sc, dq + step, dk + step, kk > 0);
            }
        }
        wgmma_commit();
    };
    // V_g's k-step kk (keys 16kk..16kk+15) of the tile in stage s: MN-major (keys are the K
    // dimension) from the tile's column chunks 4g..4g+3 (leading offset: the next 64 columns).
    auto v_desc = [&](int s, int kk) {
        return desc_sw128(sK + s * TILE_ELEMS + g * 4 * CHUNK_ELEMS + kk * 16 * 64, BN * 128, 1024);
    };

    float o[HALF_COLS / 2];
#pragma unroll
    for (int i = 0; i < HALF_COLS / 2; ++i) o[i] = 0.f;
    float sc[HALF_KEYS / 2];
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
    if constexpr (QREG) {
        // The A fragment of k-step kk, rows r0 / r0 + 8, columns 2 (lane % 4) (+8) of its 16.
#pragma unroll
        for (int ks = 0; ks < QREG_STEPS; ++ks) {
            const int kk = QREG_K0 + ks, col = 16 * (kk % 4) + 2 * (lane % 4);
            const unsigned char* chunk_q = reinterpret_cast<const unsigned char*>(sQ + (kk / 4) * CHUNK_ELEMS);
            qa[ks][0] = *reinterpret_cast<const uint32_t*>(chunk_q + sw128(r0, col));
            qa[ks][1] = *reinterpret_cast<const uint32_t*>(chunk_q + sw128(r0 + 8, col));
            qa[ks][2] = *reinterpret_cast<const uint32_t*>(chunk_q + sw128(r0, col + 8));
            qa[ks][3] = *reinterpret_cast<const uint32_t*>(chunk_q + sw128(r0 + 8, col + 8));
        }
    }
    wgmma_fence();
    s_gemm(sc, 0);
    wgmma_wait<0>();
    fence_regs(sc);
    softmax(0);
    // Several 64-head tiles read each cache tile (through L2), so the kernel is compute bound:
    // S(t + 1) goes ahead of the other half's P V(t) and softmax(t + 1) runs under the latter,
    // at the price of releasing stage t one softmax later. With one head tile (the TP8 shard)
    // loads are the bound, and S(t + 1), which may wait for its chunks, goes last instead
    // (After, v3). ReleaseFirst (v7, the launcher's default there): P V(t) retires and stage t
    // goes back to the producer before S(t + 1) waits for its chunks, so the load of tile t + 2
    // is issued before tile t + 1 has landed (in the After order the release waits for that
    // landing: one tile in flight per SM).
    const bool softmax_under_pv = p.schedule == MLA_SCHEDULE_UNDER_PV;
    const bool release_first = p.schedule == MLA_SCHEDULE_RELEASE_FIRST;
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
            s_gemm(sc, t + 1);
            pv_other(s);
            wgmma_wait<1>();
            fence_regs(sc);
#pragma unroll
            for (int kk = 0; kk < HALF_KEYS / 16; ++kk) fence_regs(pa[kk]);
            softmax(t + 1);
            wgmma_wait<0>();
            release(s);
        } else if (t + 1 < n_tiles && release_first) {
            pv_other(s);
            wgmma_wait<0>();
            release(s);
            wgmma_fence();
            s_gemm(sc, t + 1);
            wgmma_wait<0>();
            fence_regs(sc);
            softmax(t + 1);
        } else if (t + 1 < n_tiles) {
            pv_other(s);
            s_gemm(sc, t + 1);
            wgmma_wait<1>();
            release(s);
            wgmma_wait<0>();
            fence_regs(sc);
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
    if constexpr (PAIR) {
        // The two splits of the sequence are this 2-CTA cluster (num_splits == 2, rank ==
        // split). Warpgroup g of rank g keeps its 256 columns; warpgroup g of the other rank
        // sends it its unnormalised O and row statistics for the same rows and columns into
        // the (now idle) ring, and leaves. No partials, no combine kernel.
        const uint32_t rank = cluster_ctarank(), other = rank ^ 1;
        const int okb = (int)other * chunk;
        const bool partner = okb < min(p.n_kv, okb + chunk);  // the other split has keys
        const bool rows_here = h0 + 16 * warp < p.heads;       // this warp holds a real head
        float* xch = reinterpret_cast<float*>(smem + RING_OFF) + t128 * XCH_FLOATS;
        cluster_sync();  // both CTAs are done reading their rings
        if (partner && g != (int)rank && rows_here) {
            const uint32_t dst = cluster_map(xch, other);
#pragma unroll
            for (int q = 0; q < HALF_COLS / 8; ++q) st_cluster_v4(dst + 16 * q, o[4 * q], o[4 * q + 1], o[4 * q + 2], o[4 * q + 3]);
            st_cluster_v4(dst + 16 * (HALF_COLS / 8), row_max[0], row_max[1], total[0], total[1]);
        }
        cluster_sync();  // the stores above are visible to their receivers
        if (partner && g != (int)rank) return;
        if (!rows_here) return;
        float ca[2], cb[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            if (partner) {
                const float4 st = *reinterpret_cast<const float4*>(xch + HALF_COLS / 2);
                const float m_o = i == 0 ? st.x : st.y, l_o = i == 0 ? st.z : st.w;
                const float m = fmaxf(row_max[i], m_o);
                const float a = exp2f(row_max[i] - m), c = exp2f(m_o - m);
                const float inv = 1.f / (total[i] * a + l_o * c);
                ca[i] = a * inv;
                cb[i] = c * inv;
            } else {
                ca[i] = 1.f / total[i];
                cb[i] = 0.f;
            }
        }
#pragma unroll
        for (int q = 0; q < HALF_COLS / 8; ++q) {
            const float4 x = partner ? *reinterpret_cast<const float4*>(xch + 4 * q) : make_float4(0.f, 0.f, 0.f, 0.f);
            o[4 * q] = o[4 * q] * ca[0] + x.x * cb[0];
            o[4 * q + 1] = o[4 * q + 1] * ca[0] + x.y * cb[0];
            o[4 * q + 2] = o[4 * q + 2] * ca[1] + x.z * cb[1];
            o[4 * q + 3] = o[4 * q + 3] * ca[1] + x.w * cb[1];
        }
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int h = h0 + r0 + 8 * i;
            if (h >= p.heads) continue;
            bf16* out = p.o + (long long)b * p.o_batch_stride + (long long)h * p.o_head_stride + col0;
#pragma unroll
            for (int j = 0; j < HALF_COLS / 8; ++j)
                *reinterpret_cast<__nv_bfloat162*>(out + 8 * j) = __floats2bfloat162_rn(o[4 * j + 2 * i], o[4 * j + 2 * i + 1]);
        }
        return;
    }
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
    mla_wg::decode<false, false>(p);
}
// num_splits == 2: the two splits of a sequence as one 2-CTA cluster, merged in the kernel.
extern "C" __global__ void __cluster_dims__(2, 1, 1) __launch_bounds__(384, 1)
    mla_decode_wgmma_pair(const __grid_constant__ MlaDecodeWgmmaParams p) {
    mla_wg::decode<true, false>(p);
}
// The same two with Q's last 3 chunks in registers (the default above 64 heads).
extern "C" __global__ void __launch_bounds__(384, 1) mla_decode_wgmma_qreg(const __grid_constant__ MlaDecodeWgmmaParams p) {
    mla_wg::decode<false, true>(p);
}
extern "C" __global__ void __cluster_dims__(2, 1, 1) __launch_bounds__(384, 1)
    mla_decode_wgmma_qreg_pair(const __grid_constant__ MlaDecodeWgmmaParams p) {
    mla_wg::decode<true, true>(p);
}
