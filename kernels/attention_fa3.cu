// Causal prefill attention, FlashAttention-3 class: TMA + wgmma, warp-specialised.
//
//   Query i of sequence b sits at position n_kv - n_q + i and sees keys 0..=that position.
//   Query head h reads K head h*k_heads/q_heads and V head h*v_heads/q_heads (MHA, GQA and
//   Sigma's DiffQKV, where k_heads != v_heads and d_qk != d_v).
//   s = scale * q.k (Grok: s = softcap * tanh(s / softcap)); o = softmax(s) V, bf16 in and out,
//   fp32 scores, softmax statistics and accumulators; P is rounded to bf16 for P V.
//   FLOPs (causal, n_q == n_kv = s): ~ 2 * b * q_heads * s^2 * (d_qk + d_v) / 2.
//   Q, K and V come through TMA tensor maps (src/exec/cuda/kernels/attention_fa3.rs) over any
//   (batch, token, head) strides: q inside the fused qkv buffer, K/V in the [batch, max_seq,
//   heads, d] cache. Boxes past n_q / n_kv / d read as zero, so odd sizes need no load masks.
//   K columns from p.k_rope_col on may come from a second map with one head (MLA's shared
//   rope key: K = [k_nope per head ; k_pe] is read in place, not built).
//
// Tiles are (q head, batch, 128-query block), in L2 sections of heads with the heaviest
// (latest) query blocks first; 384 threads: warpgroup 0 is the producer (one thread issues
// TMA: a tile's Q, then K and V tiles of its causal range, newest first, into a ring with
// separate full and empty barriers for K and V, so a K slot refills as soon as its S GEMM is
// done; 24 registers), warpgroups 1-2 each own 64 query rows (240 registers): S = Q K^T by SS
// wgmma (m64 n=block_n k16), online softmax in the log2 domain on the accumulators (masking
// only on the diagonal blocks), O += P V by RS wgmma with P straight from registers (the
// accumulator and A-fragment layouts coincide) and V read MN-major through the transpose bit.
// Tiles per head-dim bucket (d_qk, d_v, block_n): (64, 64, 128), (128, 128, 128), (192, 128,
// 128), (256, 256, 80).
//   v1: S, softmax, P V in sequence per warpgroup.
//   v2: block it's S GEMM is issued ahead of block it-1's P V, and its softmax runs
//   while P V is on the tensor cores (intra-warpgroup overlap); the two warpgroups take turns
//   issuing their GEMMs (pingpong named barriers), so one's softmax hides under the other's.
//   v3: L2 sections (above) instead of a (head, batch, block) grid; d256 on 128 x 80.
//   v6 (this): the intra-warpgroup overlap of v2 for real (ptxas had hoisted the P V wait
//   above the softmax: wgmma_wait_all_after); mask-free blocks in their own branch-free loop;
//   persistent entries (one CTA per SM claiming tiles from a self-resetting counter, Q
//   double-buffered where it fits, the K/V ring running on across tiles). d256 keeps one
//   CTA per tile. (v4/v5, persistent grids that still refilled Q per tile, were reverted.)
// Not yet: packed GQA, 3 consumer warpgroups for d64, a TMA-store epilogue.
#include <type_traits>

#include "hopper.cuh"

using namespace hopper;

namespace fa3 {

constexpr int BM = 128;             // query rows per CTA (two consumer warpgroups of 64)
constexpr int CONSUMER_WARPS = 8;   // arrivals that free a K/V stage
constexpr float LOG2E = 1.4426950408889634f;

__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ float tanh_approx(float x) {
    float y;
    asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

template <int DQK, int DV, int BN, int STAGES, int QBUF>
struct Smem {
    static constexpr int Q_BYTES = BM * DQK * 2, K_BYTES = BN * DQK * 2, V_BYTES = BN * DV * 2;
    static constexpr int BAR_OFFSET = QBUF * Q_BYTES + STAGES * (K_BYTES + V_BYTES);
};

// Tiles claimed by the persistent entries. Each CTA's producer claims until a claim comes
// back past the last tile, so a launch makes exactly tiles + gridDim.x claims; the one that
// draws the last of them zeroes the counter for the next launch (no memset node, graph
// replays included). One counter for every entry: launches of them must not run
// concurrently (they are stream-ordered in the engine).
__device__ unsigned int tile_counter;

__device__ __forceinline__ int claim_tile(int tiles) {
    const unsigned int v = atomicAdd(&tile_counter, 1u);
    if (v == static_cast<unsigned int>(tiles) + gridDim.x - 1) atomicExch(&tile_counter, 0u);
    return static_cast<int>(v);
}

// Tile `tile` of the work order: (sequence, head) pairs in L2 sections of
// p.heads_per_section, whose K and V fit in L2 together; inside a section, query blocks from
// the last (heaviest causal row) to the first, all heads of the section at each block. So
// the tiles in flight share a few heads' K/V instead of streaming every head's from HBM once
// per query block.
template <int BN>
struct TileCoords {
    int head, b, q0, n_blocks;
    __device__ __forceinline__ TileCoords(const Fa3PrefillParams& p, int tile) {
        const int m_blocks = (p.n_q + BM - 1) / BM, pairs = p.q_heads * p.batch;
        const int per_section = p.heads_per_section * m_blocks;
        const int section = tile / per_section, within = tile % per_section;
        const int section_heads = min(p.heads_per_section, pairs - section * p.heads_per_section);
        const int pair = section * p.heads_per_section + within % section_heads;
        const int m_block = m_blocks - 1 - within / section_heads;
        head = pair % p.q_heads;
        b = pair / p.q_heads;
        q0 = m_block * BM;
        const int last_pos = min(p.n_kv - p.n_q + q0 + BM - 1, p.n_kv - 1);
        n_blocks = last_pos / BN + 1;
    }
};

// Online-softmax state of the two rows a thread owns (row0 and row0 + 8 of its warp).
template <int BN>
struct RowState {
    float max[2] = {-INFINITY, -INFINITY};  // log2 domain (scores * scale * log2 e)
    float sum[2] = {0.f, 0.f};              // this thread's share; reduced over the quad at the end

    // Soft-caps and masks the scores `sc` of key block `kb`, turns them into P (relative to
    // the new row max) and returns each row's rescale factor for what was accumulated before.
    // `inv_cap` is scale / softcap (the division hoisted out of the loop).
    __device__ __forceinline__ void update(float (&sc)[BN / 2], float softcap, float inv_cap, int kb,
                                           const int (&pos)[2], bool masked, float score_log2, float (&corr)[2]) {
        const int lane = threadIdx.x % 32;
        if (softcap > 0.f) {
#pragma unroll
            for (int i = 0; i < BN / 2; ++i) sc[i] = softcap * tanh_approx(sc[i] * inv_cap);
        }
        if (masked) {
#pragma unroll
            for (int j = 0; j < BN / 8; ++j)
#pragma unroll
                for (int i = 0; i < 2; ++i)
#pragma unroll
                    for (int c = 0; c < 2; ++c)
                        if (kb * BN + 8 * j + 2 * (lane % 4) + c > pos[i]) sc[4 * j + 2 * i + c] = -INFINITY;
        }
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            float mx = -INFINITY;
#pragma unroll
            for (int j = 0; j < BN / 8; ++j) mx = fmaxf(mx, fmaxf(sc[4 * j + 2 * i], sc[4 * j + 2 * i + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float m_new = fmaxf(max[i], mx * score_log2);
            // A row whose keys so far are all masked keeps max -inf: subtract 0 (exp2 gives 0).
            const float m_use = m_new == -INFINITY ? 0.f : m_new;
            corr[i] = ex2(max[i] - m_use);
            max[i] = m_new;
            float rs = 0.f;
#pragma unroll
            for (int j = 0; j < BN / 8; ++j)
#pragma unroll
                for (int c = 0; c < 2; ++c) {
                    float& x = sc[4 * j + 2 * i + c];
                    x = ex2(fmaf(x, score_log2, -m_use));
                    rs += x;
                }
            sum[i] = sum[i] * corr[i] + rs;
        }
    }
};

// wgmma_wait<0>, kept after the instructions that compute `a` and `b`. ptxas schedules a
// wgmma wait as early as its basic block allows (data dependences on registers other than
// the accumulators do not hold it back), so without this it hoisted the wait for P V above
// the whole softmax and the softmax never overlapped P V. A branch on a and b (never taken:
// both are row sums, >= 0 or NaN) ends the block after them; both paths wait.
__device__ __forceinline__ void wgmma_wait_all_after(float a, float b) {
    asm volatile(
        "{\n.reg .pred p;\n.reg .f32 t;\n"
        "add.f32 t, %0, %1;\n"
        "setp.lt.f32 p, t, 0f00000000;\n"
        "@p bra.uni WAIT_B%=;\n"
        "wgmma.wait_group.sync.aligned 0;\n"
        "bra.uni WAIT_END%=;\n"
        "WAIT_B%=:\n"
        "wgmma.wait_group.sync.aligned 0;\n"
        "WAIT_END%=:\n}\n" ::"f"(a),
        "f"(b)
        : "memory");
}

// P (fp32 accumulators of S) as the A fragments of P V: the layouts coincide, so this only
// rounds pairs to bf16x2.
template <int BN>
__device__ __forceinline__ void to_a_fragments(const float (&sc)[BN / 2], uint32_t (&pa)[BN / 16][4]) {
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk)
#pragma unroll
        for (int r = 0; r < 4; ++r) pa[kk][r] = pack_bf16x2(sc[8 * kk + 2 * r], sc[8 * kk + 2 * r + 1]);
}

template <int DV>
__device__ __forceinline__ void rescale(float (&o)[DV / 2], const float (&corr)[2]) {
#pragma unroll
    for (int j = 0; j < DV / 8; ++j)
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            o[4 * j + 2 * i] *= corr[i];
            o[4 * j + 2 * i + 1] *= corr[i];
        }
}

// PERSISTENT: one CTA per SM claims tiles (claim_tile) until none is left; the producer
// loads a tile's Q into one of QBUF buffers as soon as the consumers have finished that
// buffer's last S GEMM, and the K/V ring runs on across tiles, so the next tile's Q and
// first K/V land while the consumers finish the current one. Otherwise one CTA per tile.
// PINGPONG: the consumer warpgroups take turns issuing their GEMMs (see below); without it
// they issue as they are ready.
template <int DQK, int DV, int BN, int STAGES, int QBUF, bool PERSISTENT, bool PINGPONG = true>
__device__ __forceinline__ void prefill(const Fa3PrefillParams& p) {
    using S = Smem<DQK, DV, BN, STAGES, QBUF>;
    constexpr int QC = DQK / 64, VC = DV / 64;
    static_assert(DQK % 64 == 0 && DV % 64 == 0 && BN % 16 == 0, "tile shapes");
    static_assert(PERSISTENT || QBUF == 1, "one tile per CTA needs one Q buffer");
    extern __shared__ unsigned char smem_raw[];
    unsigned char* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    bf16* sQ = reinterpret_cast<bf16*>(smem);
    bf16* sK = reinterpret_cast<bf16*>(smem + QBUF * S::Q_BYTES);
    bf16* sV = reinterpret_cast<bf16*>(smem + QBUF * S::Q_BYTES + STAGES * S::K_BYTES);
    uint64_t* q_full = reinterpret_cast<uint64_t*>(smem + S::BAR_OFFSET);
    uint64_t* q_empty = q_full + QBUF;
    uint64_t* k_full = q_empty + QBUF;
    uint64_t* v_full = k_full + STAGES;
    uint64_t* k_empty = v_full + STAGES;
    uint64_t* v_empty = k_empty + STAGES;
    // The tile in each Q buffer, or -1: no more tiles (persistent entries only).
    volatile int* q_tile = reinterpret_cast<volatile int*>(v_empty + STAGES);
    const int tiles = p.q_heads * p.batch * ((p.n_q + BM - 1) / BM);

    if (threadIdx.x == 0) {
        for (int q = 0; q < QBUF; ++q) {
            mbar_init(&q_full[q], 1);
            mbar_init(&q_empty[q], CONSUMER_WARPS);
        }
        for (int s = 0; s < STAGES; ++s) {
            mbar_init(&k_full[s], 1);
            mbar_init(&v_full[s], 1);
            mbar_init(&k_empty[s], CONSUMER_WARPS);
            mbar_init(&v_empty[s], CONSUMER_WARPS);
        }
        mbar_init_fence();
    }
    __syncthreads();

    const int wg = threadIdx.x / 128;
    if (wg == 0) {
        setmaxnreg_dec<24>();
        if (threadIdx.x == 0) {
            tma_prefetch(&p.q);
            tma_prefetch(&p.k);
            tma_prefetch(&p.v);
            tma_prefetch(&p.k_rope);
            int tile = PERSISTENT ? claim_tile(tiles) : static_cast<int>(blockIdx.x);
            for (int j = 0, ring = 0;; ++j) {  // ring: K/V tiles loaded so far by this CTA
                const int qb = j % QBUF;
                if constexpr (PERSISTENT) {
                    mbar_wait(&q_empty[qb], ((j / QBUF) & 1) ^ 1);
                    if (tile >= tiles) {
                        q_tile[qb] = -1;
                        mbar_arrive(&q_full[qb]);  // releases the write above to the consumers
                        break;
                    }
                    q_tile[qb] = tile;
                }
                const TileCoords<BN> tc(p, tile);
                const int kh = tc.head * p.k_heads / p.q_heads, vh = tc.head * p.v_heads / p.q_heads;
                bf16* q_dst = sQ + qb * (S::Q_BYTES / 2);
                mbar_arrive_expect_tx(&q_full[qb], S::Q_BYTES);
#pragma unroll
                for (int c = 0; c < QC; ++c)
                    tma_load_4d(q_dst + c * BM * 64, &p.q, &q_full[qb], c * 64, tc.head, tc.q0, tc.b);
                for (int it = 0; it < tc.n_blocks; ++it, ++ring) {
                    const int kb = tc.n_blocks - 1 - it, s = ring % STAGES;
                    const uint32_t free_parity = ((ring / STAGES) & 1) ^ 1;
                    bf16* k_dst = sK + s * BN * DQK;
                    bf16* v_dst = sV + s * BN * DV;
                    mbar_wait(&k_empty[s], free_parity);
                    mbar_arrive_expect_tx(&k_full[s], S::K_BYTES);
#pragma unroll
                    for (int c = 0; c < QC; ++c) {
                        // Columns from k_rope_col on come from the shared rope key (MLA).
                        const bool rope = c * 64 >= p.k_rope_col;
                        tma_load_4d(k_dst + c * BN * 64, rope ? &p.k_rope : &p.k, &k_full[s],
                                    rope ? c * 64 - p.k_rope_col : c * 64, rope ? 0 : kh, kb * BN, tc.b);
                    }
                    mbar_wait(&v_empty[s], free_parity);
                    mbar_arrive_expect_tx(&v_full[s], S::V_BYTES);
#pragma unroll
                    for (int c = 0; c < VC; ++c)
                        tma_load_4d(v_dst + c * BN * 64, &p.v, &v_full[s], c * 64, vh, kb * BN, tc.b);
                }
                if (!PERSISTENT) break;
                tile = claim_tile(tiles);
            }
        }
        return;
    }

    setmaxnreg_inc<240>();
    const int g = wg - 1, t = threadIdx.x % 128, warp = t / 32, lane = t % 32;
    const float score_log2 = p.softcap > 0.f ? LOG2E : p.scale * LOG2E;
    const float inv_cap = p.softcap > 0.f ? p.scale / p.softcap : 0.f;
    const int past = p.n_kv - p.n_q;
    // Pingpong: each consumer warpgroup issues its GEMMs only in its turn (named barrier
    // 1 + g), then hands the turn over, so one warpgroup's softmax runs under the other's
    // GEMMs. Warpgroup 0 has the first turn. Both take n_blocks + 1 turns per tile, so the
    // alternation carries over from tile to tile.
    const int my_turn = 1 + g, other_turn = 2 - g;
    auto take_turn = [&]() {
        if (PINGPONG) named_sync(my_turn, 256);
    };
    auto pass_turn = [&]() {
        if (PINGPONG) named_arrive(other_turn, 256);
    };
    if (g == 1) pass_turn();

    auto pv_gemm = [&](float (&o)[DV / 2], const uint32_t (&pa)[BN / 16][4], int s) {
        const bf16* v_tile = sV + s * BN * DV;
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk)
            wgmma_rs<DV, 1>(o, pa[kk], desc_sw128(v_tile + kk * 16 * 64, BN * 128, 1024), 1);
        wgmma_commit();
    };

    float o[DV / 2];
    float sc[BN / 2], corr[2];
    uint32_t pa[BN / 16][4];

    for (int j = 0, ring = 0;; ++j) {  // ring: K/V tiles consumed so far by this CTA
        const int qb = j % QBUF;
        int tile = static_cast<int>(blockIdx.x);
        mbar_wait(&q_full[qb], (j / QBUF) & 1);
        if constexpr (PERSISTENT) {
            tile = q_tile[qb];
            if (tile < 0) break;
        }
        const TileCoords<BN> tc(p, tile);
        const int n_blocks = tc.n_blocks;
        const int row0 = tc.q0 + 64 * g + 16 * warp + lane / 4;  // this thread's rows: row0, row0 + 8
        const int pos[2] = {past + row0, past + row0 + 8};
        const int wg_first_pos = past + tc.q0 + 64 * g;
        const bf16* q_tile_smem = sQ + qb * (S::Q_BYTES / 2);
        auto masked = [&](int kb) { return kb * BN + BN - 1 > wg_first_pos; };
        auto s_gemm = [&](float (&sc)[BN / 2], int s) {
            const bf16* k_tile = sK + s * BN * DQK;
#pragma unroll
            for (int kk = 0; kk < DQK / 16; ++kk) {
                const uint64_t da = desc_sw128(q_tile_smem + (kk / 4) * BM * 64 + g * 64 * 64, 16, 1024) + 2 * (kk % 4);
                const uint64_t db = desc_sw128(k_tile + (kk / 4) * BN * 64, 16, 1024) + 2 * (kk % 4);
                wgmma_ss<BN, 0>(sc, da, db, kk > 0);
            }
            wgmma_commit();
        };
        // The consumers are done with this Q buffer once the tile's last S GEMM has finished.
        auto release_q = [&]() {
            if (PERSISTENT && lane == 0) mbar_arrive(&q_empty[qb]);
        };

#pragma unroll
        for (int i = 0; i < DV / 2; ++i) o[i] = 0.f;
        RowState<BN> st;

        // Block 0 (the newest keys): S only.
        {
            const int s = ring % STAGES;
            mbar_wait(&k_full[s], (ring / STAGES) & 1);
            take_turn();
            wgmma_fence();
            s_gemm(sc, s);
            pass_turn();
            wgmma_wait<0>();
            fence_regs(sc);
            if (lane == 0) mbar_arrive(&k_empty[s]);
            if (n_blocks == 1) release_q();
            st.update(sc, p.softcap, inv_cap, n_blocks - 1, pos, masked(n_blocks - 1), score_log2, corr);
            to_a_fragments<BN>(sc, pa);
        }

        // Block it: S_it = Q K_it^T is issued ahead of O += P_{it-1} V_{it-1}, and the softmax
        // of S_it runs while P V is still on the tensor cores. MASKED is a template flag so the
        // mask-free blocks run a straight-line body.
        auto step = [&](int it, auto masked_tag) {
            constexpr bool MASKED = decltype(masked_tag)::value;
            const int kb = n_blocks - 1 - it, r = ring + it, s = r % STAGES, sp = (r - 1) % STAGES;
            // Finish writing P and the rescaled O before the fence that hands them to wgmma.
            fence_regs(o);
#pragma unroll
            for (int kk = 0; kk < BN / 16; ++kk) fence_regs(pa[kk]);
            mbar_wait(&k_full[s], (r / STAGES) & 1);
            // V_{it-1} landed long ago; waiting here keeps control flow out of the issue window
            // (ptxas would insert another wgmma fence after a branch).
            mbar_wait(&v_full[sp], ((r - 1) / STAGES) & 1);
            take_turn();
            wgmma_fence();
            s_gemm(sc, s);
            pv_gemm(o, pa, sp);
            pass_turn();
            wgmma_wait<1>();
            fence_regs(sc);
            if (lane == 0) mbar_arrive(&k_empty[s]);
            if (it == n_blocks - 1) release_q();
            st.update(sc, p.softcap, inv_cap, kb, pos, MASKED, score_log2, corr);
            fence_regs(sc);
            wgmma_wait_all_after(st.sum[0], st.sum[1]);
            fence_regs(o);
            if (lane == 0) mbar_arrive(&v_empty[sp]);
            rescale<DV>(o, corr);
            to_a_fragments<BN>(sc, pa);
        };
        int it = 1;
        for (; it < n_blocks && masked(n_blocks - 1 - it); ++it) step(it, std::true_type{});
        for (; it < n_blocks; ++it) step(it, std::false_type{});

        // The last P V.
        const int rl = ring + n_blocks - 1, sl = rl % STAGES;
        fence_regs(o);
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) fence_regs(pa[kk]);
        mbar_wait(&v_full[sl], (rl / STAGES) & 1);
        take_turn();
        wgmma_fence();
        pv_gemm(o, pa, sl);
        pass_turn();
        wgmma_wait<0>();
        fence_regs(o);
        if (PERSISTENT && lane == 0) mbar_arrive(&v_empty[sl]);
        ring += n_blocks;

#pragma unroll
        for (int i = 0; i < 2; ++i) {
            float sum = st.sum[i];
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            const int row = row0 + 8 * i;
            if (row >= p.n_q) continue;
            const float inv = sum > 0.f ? 1.f / sum : 0.f;
            bf16* out = p.o + tc.b * p.o_batch_stride + static_cast<long long>(row) * p.o_token_stride +
                        static_cast<long long>(tc.head) * p.o_head_stride;
#pragma unroll
            for (int j = 0; j < DV / 8; ++j) {
                const int col = 8 * j + 2 * (lane % 4);
                if (col < p.d_v)
                    *reinterpret_cast<__nv_bfloat162*>(out + col) =
                        __floats2bfloat162_rn(o[4 * j + 2 * i] * inv, o[4 * j + 2 * i + 1] * inv);
            }
        }
        if (!PERSISTENT) break;
    }
}

}  // namespace fa3

// One CTA per tile (`name`), and the persistent entry (`name_persistent`).
#define FA3_PREFILL_ENTRY(name, tile)                                                                  \
    extern "C" __global__ void __launch_bounds__(384, 1) name(const __grid_constant__ Fa3PrefillParams p) { \
        fa3::prefill<tile.d_qk, tile.d_v, tile.block_n, tile.stages, 1, false>(p);                      \
    }
#define FA3_PREFILL_PERSISTENT_ENTRY(name, tile)                                                       \
    extern "C" __global__ void __launch_bounds__(384, 1) name(const __grid_constant__ Fa3PrefillParams p) { \
        fa3::prefill<tile.d_qk, tile.d_v, tile.block_n, tile.stages, tile.q_buffers, true>(p);          \
    }

FA3_PREFILL_ENTRY(fa3_prefill_d64, FA3_TILE_D64)
FA3_PREFILL_ENTRY(fa3_prefill_d128, FA3_TILE_D128)
FA3_PREFILL_ENTRY(fa3_prefill_d128_long, FA3_TILE_D128_LONG)
FA3_PREFILL_ENTRY(fa3_prefill_d192_128, FA3_TILE_D192_128)
FA3_PREFILL_ENTRY(fa3_prefill_d256, FA3_TILE_D256)
// d256 without pingpong (FA3 turns it off above d128), for a same-call A/B.
extern "C" __global__ void __launch_bounds__(384, 1) fa3_prefill_d256_nopp(const __grid_constant__ Fa3PrefillParams p) {
    fa3::prefill<FA3_TILE_D256.d_qk, FA3_TILE_D256.d_v, FA3_TILE_D256.block_n, FA3_TILE_D256.stages, 1, false, false>(p);
}
FA3_PREFILL_PERSISTENT_ENTRY(fa3_prefill_d64_persistent, FA3_TILE_D64)
FA3_PREFILL_PERSISTENT_ENTRY(fa3_prefill_d128_persistent, FA3_TILE_D128)
FA3_PREFILL_PERSISTENT_ENTRY(fa3_prefill_d128_long_persistent, FA3_TILE_D128_LONG)
FA3_PREFILL_PERSISTENT_ENTRY(fa3_prefill_d192_128_persistent, FA3_TILE_D192_128)
