// MLA decode, absorbed form, for at most 16 heads (the TP8 shard of DeepSeek-V3): the keys on
// the wgmma M rows, the heads on N, and a ring of 64-column chunks instead of whole tiles.
//
//   For sequence b and head h: s(h, j) = scale * ([q_lat ; q_pe][b, h] . cache[b, j]) over the
//   latent cache rows [c_kv (512) ; k_pe (64)], p = softmax over j < n_kv,
//   o[b, h, :] = sum_j p(h, j) c_kv[j]. bf16 in and out; fp32 scores, statistics and
//   accumulators; P rounded to bf16 for P V (as mla_decode_wgmma.cu).
//   FLOPs 2 * batch * heads * n_kv * (576 + 512); bytes ~ batch * n_kv * 1152: at 16 heads each
//   cache row is read for 32 FLOPs a byte, so the kernel is bound by HBM.
//
// Why a separate kernel: mla_decode_wgmma.cu puts 64 heads on the M rows, so 16 heads are
// padded 4x, Q takes 72 KiB of shared memory and the ring only two 72 KiB tiles: one tile in
// flight per SM while the other is computed. Here Q is 16 x 576 (18 KiB) and the ring is 25
// chunk slots of 64 keys x 64 columns (8 KiB each, 200 KiB): while one tile (9 chunks) is
// computed, up to 16 more are in flight, and a tile's rope chunk goes back to the producer as
// soon as S has read it. Two consumer warpgroups take alternate tiles, because one (v8)
// cannot overlap its own S, softmax and P V: ~2.7 us a tile, above the ~2.3 us the cache
// stream needs (docs/perf.md, session 13: v8 1-2% slower than the 64-row kernel, v8b +4%).
//
// One CTA per (split, sequence), 384 threads:
//   warpgroup 0, the producer: one thread loads Q (9 boxes of 16 heads x 64 columns; heads past
//     `heads` read as zero) and then the split's chunks in order, chunk n = 9 t + c of tile t
//     into slot n % 25, each slot with a full and an empty mbarrier.
//   warpgroups 1 and 2, the consumers (v8b), g = 0, 1, on tiles g, g + 2, ..., each with its
//     own softmax state, P^T tile and O^T (64 registers a thread). Per tile: S^T[64 keys x 16]
//     = K Q^T (36 m64n16k16, both operands K-major from shared memory), the softmax down each
//     head column (maxima across the 4 warps through shared memory), P^T to shared memory as a
//     K-major [16 heads][64 keys] tile, then O^T[512 x 16] += V^T P^T as 8 m64n16 row tiles,
//     V^T being the tile's latent chunks read MN-major (the transpose-A bit).
// At the end each consumer stages its normalised O and LSE over the ring, and the stagings are
// merged by their LSEs. Split-KV: split `blockIdx.x` takes keys [split * chunk, +chunk), chunk
// a multiple of 64. At one split the kernel writes o; at two the `_pair` entry runs both splits
// of a sequence as one 2-CTA cluster and each CTA merges 8 heads from its own two stagings and
// its peer's (distributed shared memory): no partials, no combine kernel. Other split counts
// write mla.cu's fp32 partials and log2-domain LSE for mla_combine.
#include "hopper.cuh"

using namespace hopper;

namespace mla_keys {

constexpr int DL = 512, DK = 576, CHUNKS = DK / 64, ROPE_CHUNK = CHUNKS - 1;
constexpr int BN = 64;              // keys per tile: the wgmma M of S^T
constexpr int HN = MLA_KEYS_HEADS;  // head columns: the wgmma N of both GEMMs
constexpr int SLOTS = MLA_KEYS_SLOTS, M_TILES = DL / 64;
constexpr int CHUNK_ELEMS = BN * 64, CHUNK_BYTES = CHUNK_ELEMS * 2;
constexpr int Q_CHUNK_ELEMS = HN * 64, Q_BYTES = CHUNKS * Q_CHUNK_ELEMS * 2;
constexpr int CONSUMERS = MLA_KEYS_CONSUMERS, CONSUMER_WARPS = 4, CONSUMER_THREADS = 128;
// Named barriers: per consumer g, its maxima (1 + g), its P^T (3 + g), its sums (5 + g); then
// both consumers' stagings (7).
constexpr int BAR_MAX = 1, BAR_P_FULL = 3, BAR_SUM = 5, BAR_STAGED = 7;
constexpr int STAGE_LD = DL + 4;  // fp32 staging rows: fragment stores hit 32 distinct banks
constexpr float LOG2E = 1.4426950408889634f;

// Per consumer: its P^T tile, its maxima (2 tile parities x 4 warps x HN) and sums (4 x HN).
constexpr int P_BYTES = HN * BN * 2, MAX_FLOATS = 2 * CONSUMER_WARPS * HN, SUM_FLOATS = CONSUMER_WARPS * HN;
constexpr int Q_OFF = 0, RING_OFF = Q_BYTES, P_OFF = RING_OFF + SLOTS * CHUNK_BYTES;
constexpr int MAX_OFF = P_OFF + CONSUMERS * P_BYTES, SUM_OFF = MAX_OFF + CONSUMERS * MAX_FLOATS * 4;
constexpr int BAR_OFF = SUM_OFF + CONSUMERS * SUM_FLOATS * 4;
constexpr int SMEM_BYTES = BAR_OFF + 8 * (1 + 2 * SLOTS) + 1024;  // + alignment slack
static_assert(SMEM_BYTES == MLA_KEYS_SMEM_BYTES, "mla_decode.rs sizes the launch from the same layout");
static_assert(RING_OFF % 1024 == 0 && P_OFF % 1024 == 0, "128-byte swizzled tiles need 1024-byte alignment");
static_assert(SLOTS >= 2 * CHUNKS - 1, "the ring holds the tile being computed and most of the next");
// The epilogue stages each consumer's fp32 o_s[HN][STAGE_LD] and lse[HN] over the ring.
constexpr int STAGE_FLOATS = HN * STAGE_LD + HN;
static_assert(CONSUMERS * STAGE_FLOATS * 4 <= SLOTS * CHUNK_BYTES, "staging fits the ring");

// D[64 x 16] += A[64 x 16] * B[16 x 16], A MN-major (M contiguous: a latent chunk read as
// V^T), B K-major, both from shared memory (wgmma.cuh's wrappers read A K-major only).
__device__ __forceinline__ void wgmma_n16_a_mn(float (&d)[8], uint64_t desc_a, uint64_t desc_b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, p, 1, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "l"(desc_a), "l"(desc_b), "r"(1));
}

__device__ __forceinline__ float4 ld_cluster_f32x4(uint32_t addr) {
    float4 v;
    asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];"
                 : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
                 : "r"(addr)
                 : "memory");
    return v;
}
__device__ __forceinline__ float ld_cluster_f32(uint32_t addr) {
    float v;
    asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(addr) : "memory");
    return v;
}

__device__ __forceinline__ void store_bf16x4(bf16* out, float4 v) {
    *reinterpret_cast<__nv_bfloat162*>(out) = __floats2bfloat162_rn(v.x, v.y);
    *reinterpret_cast<__nv_bfloat162*>(out + 2) = __floats2bfloat162_rn(v.z, v.w);
}

// Calls f(j, i, c) for each of a thread's 8 S^T fragment values sc[4j + 2i + c]: key row
// 16 warp + lane / 4 + 8i of the tile, head column 8j + 2 (lane % 4) + c.
template <typename F>
__device__ __forceinline__ void each_score(F f) {
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int c = 0; c < 2; ++c) f(j, i, c);
}

template <bool PAIR>
__device__ void decode(const MlaDecodeWgmmaParams& p) {
    extern __shared__ unsigned char smem_raw[];
    unsigned char* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    bf16* sQ = reinterpret_cast<bf16*>(smem + Q_OFF);
    bf16* ring = reinterpret_cast<bf16*>(smem + RING_OFF);
    uint64_t* q_full = reinterpret_cast<uint64_t*>(smem + BAR_OFF);
    uint64_t* full = q_full + 1;      // [slot]
    uint64_t* empty = full + SLOTS;  // [slot]

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
            mbar_init(&full[s], 1);
            mbar_init(&empty[s], CONSUMER_WARPS);
        }
        mbar_init_fence();
    }
    __syncthreads();

    const int wg = threadIdx.x / 128, t128 = threadIdx.x % 128, warp = t128 / 32, lane = t128 % 32;
    const int g = wg - 1;  // the consumer
    if (wg == 0) {
        // The producer: Q once, then chunk n of the split into slot n % SLOTS as soon as the
        // consumer of its previous chunk (n - SLOTS) has released it.
        if (threadIdx.x == 0 && n_tiles > 0) {
            tma_prefetch(&p.q_lat);
            tma_prefetch(&p.q_pe);
            tma_prefetch(&p.cache);
            mbar_arrive_expect_tx(q_full, Q_BYTES);
#pragma unroll
            for (int c = 0; c < CHUNKS - 1; ++c) tma_load_4d(sQ + c * Q_CHUNK_ELEMS, &p.q_lat, q_full, 64 * c, 0, b, 0);
            tma_load_4d(sQ + ROPE_CHUNK * Q_CHUNK_ELEMS, &p.q_pe, q_full, 0, 0, b, 0);
            int slot = 0;
            uint32_t parity = 0;
            for (int t = 0; t < n_tiles; ++t)
                for (int c = 0; c < CHUNKS; ++c) {
                    mbar_wait(&empty[slot], parity ^ 1);
                    mbar_arrive_expect_tx(&full[slot], CHUNK_BYTES);
                    tma_load_4d(ring + slot * CHUNK_ELEMS, &p.cache, &full[slot], 64 * c, kb + t * BN, b, 0);
                    if (++slot == SLOTS) slot = 0, parity ^= 1;
                }
        }
        return;
    }

    // Consumer g takes tiles g, g + 2, ... with its own P^T tile, statistics and O^T; the
    // two merge at the end. Its softmax state is per head column of its S^T fragment
    // (each_score), index k = 2j + c.
    unsigned char* sP = smem + P_OFF + g * P_BYTES;                             // [HN heads][BN keys]
    float* sMax = reinterpret_cast<float*>(smem + MAX_OFF) + g * MAX_FLOATS;  // [parity][warp][head]
    float* sSum = reinterpret_cast<float*>(smem + SUM_OFF) + g * SUM_FLOATS;  // [warp][head]
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
    // The slot of chunk c of tile t, and the parity of its fill.
    auto slot_of = [](int t, int c) { return (t * CHUNKS + c) % SLOTS; };
    auto parity_of = [](int t, int c) { return (uint32_t)((t * CHUNKS + c) / SLOTS) & 1u; };

    if (g < n_tiles) mbar_wait(q_full, 0);
    for (int t = g; t < n_tiles; t += CONSUMERS) {
        // S^T[64 keys x 16 heads] = K Q^T, 36 k-steps once the whole tile has landed (a wait
        // between the k-steps makes ptxas serialise the wgmmas, C7520; O^T needs all of it).
#pragma unroll 1
        for (int c = 0; c < CHUNKS; ++c) mbar_wait(&full[slot_of(t, c)], parity_of(t, c));
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < DK / 16; ++kk) {
            const uint64_t da = desc_sw128(ring + slot_of(t, kk / 4) * CHUNK_ELEMS, 16, 1024) + 2 * (kk % 4);
            const uint64_t db = desc_sw128(sQ + (kk / 4) * Q_CHUNK_ELEMS, 16, 1024) + 2 * (kk % 4);
            wgmma_ss<HN, 0>(sc, da, db, kk > 0);
        }
        wgmma_commit();
        wgmma_wait<0>();
        fence_regs(sc);
        // The rope chunk is not part of V: its slot goes back now.
        if (lane == 0) mbar_arrive(&empty[slot_of(t, ROPE_CHUNK)]);

        // Softmax over the keys (the M rows): per head, max over lanes of equal lane % 4, then
        // over the 4 warps through sMax (double-buffered by tile parity: a warp writes tile
        // t + 2's maxima only after all have passed tile t + 1's BAR_MAX).
        const int key0 = kb + t * BN + 16 * warp + lane / 4;
        float mx[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
        each_score([&](int j, int i, int c) {
            float& x = sc[4 * j + 2 * i + c];
            x = key0 + 8 * i < ke ? x * score_log2 : -INFINITY;
            mx[2 * j + c] = fmaxf(mx[2 * j + c], x);
        });
        float* smax = sMax + ((t / CONSUMERS) & 1) * CONSUMER_WARPS * HN;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            mx[k] = fmaxf(mx[k], __shfl_xor_sync(0xffffffffu, mx[k], 4));
            mx[k] = fmaxf(mx[k], __shfl_xor_sync(0xffffffffu, mx[k], 8));
            mx[k] = fmaxf(mx[k], __shfl_xor_sync(0xffffffffu, mx[k], 16));
            if (lane < 4) smax[warp * HN + head_of(k)] = mx[k];
        }
        // Also orders the previous tile's last read of sP (every warp waited for its O^T)
        // before this tile's P^T stores.
        named_sync(BAR_MAX + g, CONSUMER_THREADS);
        float corr[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const int h = head_of(k);
            // The tile's first key is valid (t < n_tiles): m_new is finite.
            const float m_tile = fmaxf(fmaxf(smax[h], smax[HN + h]), fmaxf(smax[2 * HN + h], smax[3 * HN + h]));
            const float m_new = fmaxf(row_max[k], m_tile);
            corr[k] = exp2f(row_max[k] - m_new);
            row_max[k] = m_new;
            row_sum[k] *= corr[k];
        }
        each_score([&](int j, int i, int c) {
            const int k = 2 * j + c;
            const float e = exp2f(sc[4 * j + 2 * i + c] - row_max[k]);
            row_sum[k] += e;
            *reinterpret_cast<bf16*>(sP + sw128(head_of(k), 16 * warp + lane / 4 + 8 * i)) = to_bf16(e);
        });
        // After the first tiles the maxima rarely move: skip the 64 multiplies when no head
        // of the warp's lanes changed.
        if (__any_sync(0xffffffffu, corr[0] != 1.f || corr[1] != 1.f || corr[2] != 1.f || corr[3] != 1.f)) {
#pragma unroll
            for (int mt = 0; mt < M_TILES; ++mt)
#pragma unroll
                for (int e = 0; e < 8; ++e) o[mt][e] *= corr[2 * (e / 4) + e % 2];
        }
        fence_proxy_async();
        named_sync(BAR_P_FULL + g, CONSUMER_THREADS);

        // O^T[512 x 16] += V^T[512 x 64 keys] P^T: V^T is the tile's first 8 chunks read
        // MN-major (latent columns contiguous), one chunk per 64-row tile of O^T.
#pragma unroll
        for (int mt = 0; mt < M_TILES; ++mt) fence_regs(o[mt]);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk)
#pragma unroll
            for (int mt = 0; mt < M_TILES; ++mt)
                wgmma_n16_a_mn(o[mt], desc_sw128(ring + slot_of(t, mt) * CHUNK_ELEMS + kk * 16 * 64, BN * 128, 1024),
                               desc_sw128(sP, 16, 1024) + 2 * kk);
        wgmma_commit();
        wgmma_wait<0>();
#pragma unroll
        for (int mt = 0; mt < M_TILES; ++mt) fence_regs(o[mt]);
        if (lane == 0)
#pragma unroll
            for (int c = 0; c < ROPE_CHUNK; ++c) mbar_arrive(&empty[slot_of(t, c)]);
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
    named_sync(BAR_SUM + g, CONSUMER_THREADS);
    // Each consumer stages over a part of the ring that the other's last tile may still be
    // reading: both are past their last tile first.
    named_sync(BAR_STAGED, CONSUMERS * CONSUMER_THREADS);
    const bool any = g < n_tiles;
    float* stage = reinterpret_cast<float*>(smem + RING_OFF) + g * STAGE_FLOATS;  // o_s[HN][STAGE_LD]
    float* stage_lse = stage + HN * STAGE_LD;                                     // lse[HN], log2
    float inv[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const int h = head_of(k);
        const float total = sSum[h] + sSum[HN + h] + sSum[2 * HN + h] + sSum[3 * HN + h];
        inv[k] = any ? 1.f / total : 0.f;
        if (warp == 0 && lane < 4) stage_lse[h] = any ? row_max[k] + log2f(total) : -INFINITY;
    }
#pragma unroll
    for (int mt = 0; mt < M_TILES; ++mt)
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            const int k = 2 * (e / 4) + e % 2, d = 64 * mt + 16 * warp + lane / 4 + 8 * ((e / 2) % 2);
            stage[head_of(k) * STAGE_LD + d] = o[mt][e] * inv[k];
        }

    // Heads [h_begin, h_end) merged from `n_parts` stagings (shared::cluster addresses: this
    // CTA's own are valid there too), weighted by their LSEs.
    constexpr int VECS = DL / 4;
    const int tid = threadIdx.x - CONSUMER_THREADS;  // 0 .. 255 over both consumers
    const long long row0 = (long long)b * p.heads;
    auto merge = [&](const uint32_t (&parts)[2 * CONSUMERS], int n_parts, int h_begin, int h_end) {
#pragma unroll 2
        for (int idx = tid; idx < (h_end - h_begin) * VECS; idx += CONSUMERS * CONSUMER_THREADS) {
            const int h = h_begin + idx / VECS, d = 4 * (idx % VECS);
            if (h >= p.heads) continue;
            float l[2 * CONSUMERS], m = -INFINITY;
#pragma unroll
            for (int q = 0; q < 2 * CONSUMERS; ++q) {
                l[q] = q < n_parts ? ld_cluster_f32(parts[q] + (HN * STAGE_LD + h) * 4) : -INFINITY;
                m = fmaxf(m, l[q]);
            }
            float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
            float w_sum = 0.f;
#pragma unroll
            for (int q = 0; q < 2 * CONSUMERS; ++q) {
                if (l[q] == -INFINITY) continue;
                const float w = exp2f(l[q] - m);
                const float4 a = ld_cluster_f32x4(parts[q] + (h * STAGE_LD + d) * 4);
                v = make_float4(v.x + w * a.x, v.y + w * a.y, v.z + w * a.z, v.w + w * a.w);
                w_sum += w;
            }
            const float inv_w = w_sum > 0.f ? 1.f / w_sum : 0.f;
            v = make_float4(v.x * inv_w, v.y * inv_w, v.z * inv_w, v.w * inv_w);
            if (PAIR || p.num_splits == 1) {
                store_bf16x4(p.o + (long long)b * p.o_batch_stride + (long long)h * p.o_head_stride + d, v);
            } else {
                *reinterpret_cast<float4*>(p.scratch + ((row0 + h) * p.num_splits + split) * DL + d) = v;
                if (d == 0) lse_out[(row0 + h) * p.num_splits + split] = w_sum > 0.f ? m + log2f(w_sum) : -INFINITY;
            }
        }
    };
    uint32_t parts[2 * CONSUMERS];
    const float* stage0 = reinterpret_cast<const float*>(smem + RING_OFF);
    if constexpr (PAIR) {
        // Split r merges heads [8r, 8r + 8) from its own two stagings and its peer's two.
        cluster_sync();
        const uint32_t rank = cluster_ctarank();
        for (int q = 0; q < CONSUMERS; ++q) {
            parts[q] = smem_addr(stage0 + q * STAGE_FLOATS);
            parts[CONSUMERS + q] = cluster_map(stage0 + q * STAGE_FLOATS, rank ^ 1);
        }
        merge(parts, 2 * CONSUMERS, rank * (HN / 2), (rank + 1) * (HN / 2));
        // Neither CTA leaves while the other may still read its staging.
        cluster_sync();
    } else {
        named_sync(BAR_STAGED, CONSUMERS * CONSUMER_THREADS);
        for (int q = 0; q < CONSUMERS; ++q) parts[q] = parts[CONSUMERS + q] = smem_addr(stage0 + q * STAGE_FLOATS);
        merge(parts, CONSUMERS, 0, HN);
    }
}

}  // namespace mla_keys

extern "C" __global__ void __launch_bounds__(128 * (1 + mla_keys::CONSUMERS), 1) mla_decode_keys(const __grid_constant__ MlaDecodeWgmmaParams p) {
    mla_keys::decode<false>(p);
}

// num_splits == 2: the two splits of a sequence as one 2-CTA cluster, merged in the kernel.
extern "C" __global__ void __cluster_dims__(2, 1, 1) __launch_bounds__(128 * (1 + mla_keys::CONSUMERS), 1)
    mla_decode_keys_pair(const __grid_constant__ MlaDecodeWgmmaParams p) {
    mla_keys::decode<true>(p);
}
