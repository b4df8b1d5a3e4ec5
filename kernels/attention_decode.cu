// Decode attention (flash-decoding, split-KV) over the per-layer KV cache.
//
// decode_attention_*: one new query per sequence b (q[b, h, :], strides in elements) attends to
//   cached positions 0..n_kv-1 (the caller has already written the new token's K/V, so n_kv
//   includes it; no causal mask is needed). Query head h reads K head h*k_heads/q_heads and V
//   head h*v_heads/q_heads (floor: MHA, GQA, DiffQKV).
//   K cache [batch, max_seq, k_heads, d_qk], V cache [batch, max_seq, v_heads, d_v], bf16.
//   s = scale * q.k; if softcap > 0: s = softcap * tanh(s / softcap); o = softmax(s) V.
//   bf16 in/out, fp32 accumulation and online softmax (log2 domain).
//   Bytes: batch * n_kv * (k_heads*d_qk + v_heads*d_v) * 2 (each cached byte read once when a
//   K group has <= 16 q heads); FLOPs: 2 * batch * q_heads * n_kv * (d_qk + d_v).
//   Launch: grid (num_splits, k_heads * head_tiles, batch), block 128, dynamic smem from
//   `decode_smem_bytes` (Rust), where head_tiles = ceil(ceil(q_heads/k_heads) / 16).
//   One CTA owns one K head's q heads (up to 16: the M rows of an mma tile), so each K byte is
//   read once; for DiffQKV the V heads those q heads use (several) are all loaded and each row
//   takes P.V only from its own head (other rows' P masked to zero). The CTA's key range
//   (one split) streams through a cp.async ring of BN-key tiles; each of the 4 warps takes a
//   16-key slice of every tile with its own online softmax, and the warps merge at the end.
//   num_splits == 1: the kernel writes o directly. Otherwise it writes fp32 partials to scratch
//   (`decode_scratch_bytes`) and `decode_combine` merges them (it returns at once when
//   num_splits == 1, so a captured graph may always launch both).
//
// Versions: one entry per head-dim bucket; Rust `attention_decode::select` picks the smallest bucket
// holding max(d_qk, d_v); loads zero-fill columns past d, so any d <= bucket (multiple of 8) works:
//   decode_attention_d32 / _d64 / _d128 (up to 3-stage ring, BN 64, q in registers), _d256
//   (up to 2 stages). The ring depth actually used is what fits the launch's dynamic smem, so
//   DiffQKV tiles that load several V heads per stage run with fewer stages. The per-slice
//   online softmax and the warp merge are attention_decode.cuh's, shared with the fa3 decode
//   (attention_decode_tma.cu), which replaces this kernel under fa3 except for DiffQKV.
//
// decode_combine: o[b, h, :] = sum_s w_s o_s / sum_s w_s, w_s = exp2(lse_s - max lse).
//   Launch: grid (q_heads, batch), block 128.
#include "attention_decode.cuh"

namespace attn {

// DECODE_WARPS warps per CTA and DECODE_BLOCK_N keys per tile (16 per warp) come from the
// generated header, as the head-dim entries below do (DECODE_TILE_*).

// Keys per split, rounded to whole tiles so splits start on tile boundaries.
__host__ __device__ inline int decode_split_len(int n_kv, int num_splits, int bn) {
    const int per = (n_kv + num_splits - 1) / num_splits;
    return (per + bn - 1) / bn * bn;
}

template <int DQK, int DV, int STAGES, bool Q_IN_REGS>
__device__ __forceinline__ void decode_impl(const DecodeAttentionParams& p) {
    constexpr int BN = DECODE_BLOCK_N, QS = DQK + 8, KS = DQK + 8, VS = DV + 8;
    constexpr int NT = DECODE_WARPS * 32, KSTEPS = DQK / 16, NO = DV / 8;
    constexpr int QCH = DQK / 8, VCH = DV / 8;
    extern __shared__ __align__(16) unsigned char smem[];

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int split = blockIdx.x, b = blockIdx.z;
    const int group_max = (p.q_heads + p.k_heads - 1) / p.k_heads;
    const int head_tiles = (group_max + 15) / 16;
    const int kh = blockIdx.y / head_tiles, ht = blockIdx.y % head_tiles;
    // q heads h with h*k_heads/q_heads == kh form [h_begin, h_end).
    const int h_begin = (int)(((long long)kh * p.q_heads + p.k_heads - 1) / p.k_heads);
    const int h_end = (int)(((long long)(kh + 1) * p.q_heads + p.k_heads - 1) / p.k_heads);
    const int h0 = h_begin + ht * 16;
    const int nrows = min(16, h_end - h0);
    if (nrows <= 0) return;
    const int vh_lo = (int)((long long)h0 * p.v_heads / p.q_heads);
    const int vh_hi = (int)((long long)(h0 + nrows - 1) * p.v_heads / p.q_heads);
    const int nvh = vh_hi - vh_lo + 1;

    const int chunk = decode_split_len(p.n_kv, p.num_splits, BN);
    const int kb = split * chunk, ke = min(p.n_kv, kb + chunk);
    const long long part_row0 = (long long)b * p.q_heads + h0;  // scratch row of this CTA's row 0
    float* lse_out = p.scratch + (long long)p.batch * p.q_heads * p.num_splits * p.d_v;
    if (kb >= ke) {  // empty split (n_kv small for num_splits): contributes nothing
        if (tid < nrows) lse_out[(part_row0 + tid) * p.num_splits + split] = -INFINITY;
        return;
    }
    const int n_tiles = (ke - kb + BN - 1) / BN;

    bf16* sQ = reinterpret_cast<bf16*>(smem);
    bf16* sRing = sQ + 16 * QS;
    const int stage_elems = BN * KS + nvh * BN * VS;
    // Ring depth: up to STAGES, fewer when this CTA's V heads (DiffQKV) make a stage large;
    // the host sizes dynamic smem with the same rule (`decode_smem_bytes`).
    uint32_t dyn_smem;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(dyn_smem));
    const int stages = max(1, min(STAGES, (int)((dyn_smem / 2 - 16 * QS) / stage_elems)));

    for (int i = tid; i < 16 * QCH; i += NT) {
        const int r = i / QCH, c = (i % QCH) * 8;
        const bool ok = r < nrows && c < p.d_qk;
        cp_async16(sQ + r * QS + c,
                   ok ? p.q + (long long)b * p.q_batch_stride + (long long)(h0 + r) * p.q_head_stride + c : p.q,
                   ok);
    }
    const long long k_row_stride = (long long)p.k_heads * p.d_qk;
    const long long v_row_stride = (long long)p.v_heads * p.d_v;
    const bf16* kg = p.k_cache + (long long)b * p.max_seq * k_row_stride + (long long)kh * p.d_qk;
    const bf16* vg = p.v_cache + (long long)b * p.max_seq * v_row_stride + (long long)vh_lo * p.d_v;
    auto load_tile = [&](int tile) {
        if (tile < n_tiles) {
            bf16* dk = sRing + (tile % stages) * stage_elems;
            bf16* dv = dk + BN * KS;
            const int j0 = kb + tile * BN;
            for (int i = tid; i < BN * QCH; i += NT) {
                const int r = i / QCH, c = (i % QCH) * 8;
                const bool ok = j0 + r < ke && c < p.d_qk;
                cp_async16(dk + r * KS + c, ok ? kg + (j0 + r) * k_row_stride + c : p.k_cache, ok);
            }
            for (int i = tid; i < nvh * BN * VCH; i += NT) {
                const int c = (i % VCH) * 8, r = (i / VCH) % BN, vi = i / (VCH * BN);
                const bool ok = j0 + r < ke && c < p.d_v;
                cp_async16(dv + (vi * BN + r) * VS + c,
                           ok ? vg + (j0 + r) * v_row_stride + (long long)vi * p.d_v + c : p.v_cache, ok);
            }
        }
        cp_async_commit();  // always commit so the group count per iteration stays fixed
    };
    for (int s = 0; s < stages - 1; ++s) load_tile(s);

    const int g = lane >> 2, t4 = lane & 3;
    // Which V head rows g and g+8 use, for masking P when the tile spans several V heads.
    const int vrow_lo = (int)((long long)(h0 + g) * p.v_heads / p.q_heads) - vh_lo;
    const int vrow_hi = (int)((long long)(h0 + g + 8) * p.v_heads / p.q_heads) - vh_lo;
    const int ksteps = min(KSTEPS, (p.d_qk + 15) / 16);
    const int osteps = min(NO / 2, (p.d_v + 15) / 16);

    uint32_t qf[Q_IN_REGS ? KSTEPS : 1][4];
    float acc[NO][4];
#pragma unroll
    for (int n = 0; n < NO; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
    SliceSoftmax st;

    for (int tile = 0; tile < n_tiles; ++tile) {
        load_tile(tile + stages - 1);
        if (stages == 3) cp_async_wait<2>();
        else if (stages == 2) cp_async_wait<1>();
        else cp_async_wait<0>();
        __syncthreads();
        if (Q_IN_REGS && tile == 0) {
#pragma unroll
            for (int kk = 0; kk < (Q_IN_REGS ? KSTEPS : 0); ++kk) load_a_frag(qf[kk], sQ + kk * 16, QS, lane);
        }
        const bf16* tk = sRing + (tile % stages) * stage_elems + warp * 16 * KS;
        const bf16* tv = sRing + (tile % stages) * stage_elems + BN * KS + warp * 16 * VS;
        const int j0 = kb + tile * BN + warp * 16;
        if (j0 < ke) {
            float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
            for (int kk = 0; kk < KSTEPS; ++kk) {
                if (kk >= ksteps) break;
                uint32_t a[4];
                q_frag<Q_IN_REGS>(a, qf, sQ, QS, kk, lane);
                uint32_t bk[4];
                load_kt_frag(bk, tk + kk * 16, KS, lane);
                mma_bf16(s[0], a, bk[0], bk[1]);
                mma_bf16(s[1], a, bk[2], bk[3]);
            }
#pragma unroll
            for (int n = 0; n < 2; ++n) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int key = j0 + n * 8 + 2 * t4 + (e & 1);
                    s[n][e] = key < ke ? score_log2(s[n][e], p.scale, p.softcap) : -INFINITY;
                }
            }
            uint32_t pa[4];
            st.update(s, acc, pa);
            for (int vi = 0; vi < nvh; ++vi) {
                uint32_t a[4];
                a[0] = vrow_lo == vi ? pa[0] : 0u; a[1] = vrow_hi == vi ? pa[1] : 0u;
                a[2] = vrow_lo == vi ? pa[2] : 0u; a[3] = vrow_hi == vi ? pa[3] : 0u;
                if (nvh == 1) { a[0] = pa[0]; a[1] = pa[1]; a[2] = pa[2]; a[3] = pa[3]; }
                const bf16* tvh = tv + vi * BN * VS;
#pragma unroll
                for (int dn = 0; dn < NO / 2; ++dn) {
                    if (dn >= osteps) break;
                    uint32_t bv[4];
                    load_v_frag(bv, tvh + dn * 16, VS, lane);
                    mma_bf16(acc[2 * dn], a, bv[0], bv[1]);
                    mma_bf16(acc[2 * dn + 1], a, bv[2], bv[3]);
                }
            }
        }
        __syncthreads();
    }
    cp_async_wait<0>();

    // Merge the 4 warps' (m, l, O) through shared memory (the ring is free now).
    st.reduce_sums();
    float* sM = reinterpret_cast<float*>(smem);
    float* sL = sM + DECODE_WARPS * 16;
    float* sO = sL + DECODE_WARPS * 16;  // [warp][16][DV]
    store_warp_state(st, acc, sM, sL, sO, warp, lane);
    __syncthreads();
    for (int i = tid; i < nrows * p.d_v; i += NT) {
        const int r = i / p.d_v, c = i % p.d_v;
        float lse;
        const float o = merged_row<DECODE_WARPS, DV>(sM, sL, sO, r, c, lse);
        if (p.num_splits == 1) {
            p.o[(long long)b * p.o_batch_stride + (long long)(h0 + r) * p.o_head_stride + c] = to_bf16(o);
        } else {
            p.scratch[((part_row0 + r) * p.num_splits + split) * p.d_v + c] = o;
            if (c == 0) lse_out[(part_row0 + r) * p.num_splits + split] = lse;
        }
    }
}

}  // namespace attn

// One entry per DecodeTile of attention_decode.rs (head dim, deepest ring); whether q stays
// in registers is this file's choice (d256 would spill).
#define DECODE_ENTRY(NAME, TILE, QREG)                                                                  \
    extern "C" __global__ void __launch_bounds__(DECODE_WARPS * 32) NAME(const DecodeAttentionParams p) { \
        attn::decode_impl<TILE.max_d, TILE.max_d, TILE.max_stages, QREG>(p);                           \
    }
DECODE_ENTRY(decode_attention_d32, DECODE_TILE_D32, true)
DECODE_ENTRY(decode_attention_d64, DECODE_TILE_D64, true)
DECODE_ENTRY(decode_attention_d128, DECODE_TILE_D128, true)
DECODE_ENTRY(decode_attention_d256, DECODE_TILE_D256, false)

extern "C" __global__ void decode_combine(const DecodeCombineParams p) {
    if (p.num_splits <= 1) return;  // decode_attention already wrote o
    attn::combine_splits(p.scratch, p.o, p.o_batch_stride, p.o_head_stride, p.batch, p.q_heads, p.d_v,
                         p.num_splits);
}
