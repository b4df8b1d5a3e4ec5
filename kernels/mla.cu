// Multi-head latent attention (DeepSeek V2/V3) helpers and absorbed-form decode.
// Notation: L = kv_lora_rank (512 for V3), R = rope_dim (64), cache row = [c_kv (L) ; k_pe (R)].
//
// mla_cache_write: cache[b, pos, :] = [latent[t, 0:L] ; k_pe[t, 0:R]] with b = t / tokens_per_seq,
//   pos = past + t % tokens_per_seq. Bytes 2 * rows * (L + R) * 2. Launch: grid rows, block 64.
//
// mla_build_k (MHA-form prefill): kv[t] holds per head [k_nope (d_nope) | v (d_v)];
//   k_out[t, h, :] = [k_nope_h ; k_pe[t, 0:d_rope]] (the rope key is shared by all heads), so
//   flash_prefill_d192_128 can read K from k_out and V straight out of kv (stride d_nope + d_v).
//   Bytes ~ rows * heads * (2 * d_nope + d_rope) * 2. Launch: grid rows, block 128.
//
// mla_decode_m64 / mla_decode_m16 (absorbed form, split-KV, FlashMLA-like in structure):
//   for each sequence b and head h, with one new query [q_lat[b, h] (L) ; q_pe[b, h] (R)]:
//   score(h, j) = scale * (q_lat[h].c_kv[j] + q_pe[h].k_pe[j]), softmax over j < n_kv,
//   o[b, h, :] = sum_j p(h, j) c_kv[j]   (L wide). bf16 in/out, fp32 accumulate/softmax.
//   Bytes: batch * n_kv * (L + R) * 2 per head tile; FLOPs: 2 * batch * heads * n_kv * (2L + R).
//   A CTA takes 64 (m64, 8 warps) or 16 (m16, 4 warps) heads as the M rows of mma tiles, so each
//   cached row loaded into shared memory serves all of them; the cache streams through a
//   cp.async ring of BN-row tiles. Per tile: warp (m-tile, column part) computes S for its 16
//   heads x 16 keys, the column parts of one m-tile exchange row maxima through shared memory,
//   write P (bf16) to shared memory, and each warp accumulates O for its 16 heads x (L / parts)
//   columns, so no score is computed twice and the 16 x 512 fp32 output tile is spread over
//   warps. Compiled for L <= 512, R <= 64 (multiples of 8); loads zero-fill beyond L and R,
//   so the same entries serve the small test fixtures (e.g. 32/8, 32/16).
//   Launch: grid (num_splits, ceil(heads / heads_per_cta), batch); Rust `mla::mla_decode_launch`.
//   num_splits == 1 writes o directly; otherwise fp32 partials go to scratch
//   (`mla_scratch_bytes`) and mla_combine merges them (returns at once for num_splits == 1).
// v1: mma.sync m16n8k16 + ldmatrix + cp.async; a wgmma/TMA version (FlashMLA) is future work.
#include "attention_util.cuh"

__device__ __forceinline__ void mla_copy(bf16* dst, const bf16* src, int n) {
    const bool vec = ((reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src)) & 15) == 0 &&
                     (n & 7) == 0;
    if (vec) {
        for (int i = threadIdx.x * 8; i < n; i += blockDim.x * 8)
            *reinterpret_cast<uint4*>(dst + i) = *reinterpret_cast<const uint4*>(src + i);
    } else {
        for (int i = threadIdx.x; i < n; i += blockDim.x) dst[i] = src[i];
    }
}

extern "C" __global__ void mla_cache_write(const MlaCacheWriteParams p) {
    const int t = blockIdx.x;
    if (t >= p.rows) return;
    const int b = t / p.tokens_per_seq;
    const long long pos = p.past + t % p.tokens_per_seq;
    bf16* dst = p.cache + ((long long)b * p.max_seq + pos) * (p.kv_lora_rank + p.rope_dim);
    mla_copy(dst, p.latent + (long long)t * p.latent_ld, p.kv_lora_rank);
    mla_copy(dst + p.kv_lora_rank, p.k_pe + (long long)t * p.k_pe_ld, p.rope_dim);
}

extern "C" __global__ void mla_build_k(const MlaBuildKParams p) {
    const int t = blockIdx.x;
    if (t >= p.rows) return;
    const int dk = p.d_nope + p.d_rope;
    const bf16* kv = p.kv + (long long)t * p.kv_ld;
    const bf16* pe = p.k_pe + (long long)t * p.k_pe_ld;
    bf16* out = p.k_out + (long long)t * p.heads * dk;
    const bool vec = ((p.kv_ld | p.k_pe_ld | p.d_nope | p.d_v | p.d_rope) & 7) == 0 &&
                     ((reinterpret_cast<uintptr_t>(p.kv) | reinterpret_cast<uintptr_t>(p.k_pe) |
                       reinterpret_cast<uintptr_t>(p.k_out)) & 15) == 0;
    if (vec) {
        const int chunks = dk / 8;
        for (int i = threadIdx.x; i < p.heads * chunks; i += blockDim.x) {
            const int h = i / chunks, c = (i % chunks) * 8;
            const bf16* src = c < p.d_nope ? kv + (long long)h * (p.d_nope + p.d_v) + c : pe + (c - p.d_nope);
            *reinterpret_cast<uint4*>(out + (long long)h * dk + c) = *reinterpret_cast<const uint4*>(src);
        }
    } else {
        for (int i = threadIdx.x; i < p.heads * dk; i += blockDim.x) {
            const int h = i / dk, c = i % dk;
            out[(long long)h * dk + c] = c < p.d_nope ? kv[(long long)h * (p.d_nope + p.d_v) + c] : pe[c - p.d_nope];
        }
    }
}

namespace attn {

constexpr int MLA_DL = MLA_MAX_KV_LORA_RANK, MLA_DR = MLA_MAX_ROPE_DIM, MLA_DK = MLA_DL + MLA_DR, MLA_KS = MLA_DK + 8;

template <int MT, int NCS, int BN, int STAGES>
struct MlaShape {
    static constexpr int ROWS = 16 * MT, NW = MT * NCS, PS = BN + 8;
    static constexpr int SMEM_BYTES =
        (ROWS * MLA_KS + STAGES * BN * MLA_KS + ROWS * PS) * 2 + 2 * NCS * ROWS * 4;
};

template <int MT, int NCS, int BN, int STAGES>
__device__ __forceinline__ void mla_decode_impl(const MlaDecodeParams& p) {
    using Sh = MlaShape<MT, NCS, BN, STAGES>;
    constexpr int ROWS = Sh::ROWS, NT = Sh::NW * 32, PS = Sh::PS, KS = MLA_KS;
    constexpr int KW = BN / NCS;  // keys per warp in the score phase
    constexpr int DVW = MLA_DL / NCS, NO = DVW / 8;
    constexpr int CH = MLA_DK / 8;  // 16-byte chunks per smem row
    static_assert(KW == 16, "score phase assumes 16 keys per warp");
    extern __shared__ __align__(16) unsigned char smem[];
    bf16* sQ = reinterpret_cast<bf16*>(smem);
    bf16* sRing = sQ + ROWS * KS;
    bf16* sP = sRing + STAGES * BN * KS;
    float* sMax = reinterpret_cast<float*>(sP + ROWS * PS);  // [NCS][ROWS]
    float* sL = sMax + NCS * ROWS;                            // [NCS][ROWS]

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int mt = warp % MT, cs = warp / MT;
    const int split = blockIdx.x, h0 = blockIdx.y * ROWS, b = blockIdx.z;
    const int L = p.kv_lora_rank, R = p.rope_dim, row_len = L + R;

    const int per = (p.n_kv + p.num_splits - 1) / p.num_splits;
    const int chunk = (per + BN - 1) / BN * BN;
    const int kb = split * chunk, ke = min(p.n_kv, kb + chunk);
    float* lse_out = p.scratch + (long long)p.batch * p.heads * p.num_splits * L;
    if (kb >= ke) {
        if (tid < ROWS && h0 + tid < p.heads)
            lse_out[((long long)b * p.heads + h0 + tid) * p.num_splits + split] = -INFINITY;
        return;
    }
    const int n_tiles = (ke - kb + BN - 1) / BN;

    for (int i = tid; i < ROWS * CH; i += NT) {
        const int r = i / CH, c = (i % CH) * 8, h = h0 + r;
        const bf16* src = p.q_lat;
        bool ok = h < p.heads;
        if (c < MLA_DL) {
            ok = ok && c < L;
            src = p.q_lat + (long long)b * p.q_lat_batch_stride + (long long)h * p.q_lat_head_stride + c;
        } else {
            ok = ok && c - MLA_DL < R;
            src = p.q_pe + (long long)b * p.q_pe_batch_stride + (long long)h * p.q_pe_head_stride + (c - MLA_DL);
        }
        cp_async16(sQ + r * KS + c, ok ? src : p.q_lat, ok);
    }
    const bf16* cache_b = p.cache + (long long)b * p.max_seq * row_len;
    auto load_tile = [&](int tile) {
        if (tile < n_tiles) {
            bf16* dst = sRing + (tile % STAGES) * BN * KS;
            const int j0 = kb + tile * BN;
            for (int i = tid; i < BN * CH; i += NT) {
                const int r = i / CH, c = (i % CH) * 8;
                const bool in_row = c < MLA_DL ? c < L : c - MLA_DL < R;
                const int gc = c < MLA_DL ? c : L + (c - MLA_DL);
                const bool ok = j0 + r < ke && in_row;
                cp_async16(dst + r * KS + c, ok ? cache_b + (long long)(j0 + r) * row_len + gc : p.cache, ok);
            }
        }
        cp_async_commit();
    };
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) load_tile(s);

    const int g = lane >> 2, t4 = lane & 3;
    const int r_lo = mt * 16 + g, r_hi = r_lo + 8;  // this thread's rows within the CTA tile
    const int lat_steps = (L + 15) / 16, rope_steps = (R + 15) / 16;
    float acc[NO][4];
#pragma unroll
    for (int n = 0; n < NO; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
    float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.f, l_hi = 0.f;

    for (int tile = 0; tile < n_tiles; ++tile) {
        load_tile(tile + STAGES - 1);
        cp_async_wait<STAGES - 1>();
        __syncthreads();
        const bf16* tk = sRing + (tile % STAGES) * BN * KS;
        const int jw = kb + tile * BN + cs * KW;  // first key of this warp's score slice

        // S = [q_lat ; q_pe] . [c_kv ; k_pe]^T for 16 heads x 16 keys.
        float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
        const bf16* qa = sQ + mt * 16 * KS;
        const bf16* kt = tk + cs * KW * KS;
#pragma unroll 4
        for (int kk = 0; kk < MLA_DK / 16; ++kk) {
            const bool active = kk < MLA_DL / 16 ? kk < lat_steps : kk - MLA_DL / 16 < rope_steps;
            if (!active) continue;
            uint32_t a[4], bk[4];
            load_a_frag(a, qa + kk * 16, KS, lane);
            load_kt_frag(bk, kt + kk * 16, KS, lane);
            mma_bf16(s[0], a, bk[0], bk[1]);
            mma_bf16(s[1], a, bk[2], bk[3]);
        }
        float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
        for (int n = 0; n < 2; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int key = jw + n * 8 + 2 * t4 + (e & 1);
                s[n][e] = key < ke ? s[n][e] * (p.scale * LOG2E) : -INFINITY;
            }
            mx_lo = fmaxf(mx_lo, fmaxf(s[n][0], s[n][1]));
            mx_hi = fmaxf(mx_hi, fmaxf(s[n][2], s[n][3]));
        }
#pragma unroll
        for (int o = 1; o <= 2; o <<= 1) {
            mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, o));
            mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, o));
        }
        if (t4 == 0) {
            sMax[cs * ROWS + r_lo] = mx_lo;
            sMax[cs * ROWS + r_hi] = mx_hi;
        }
        __syncthreads();
        // Every column part of an m-tile derives the same new max (same values, same order).
        float mn_lo = m_lo, mn_hi = m_hi;
#pragma unroll
        for (int c = 0; c < NCS; ++c) {
            mn_lo = fmaxf(mn_lo, sMax[c * ROWS + r_lo]);
            mn_hi = fmaxf(mn_hi, sMax[c * ROWS + r_hi]);
        }
        // The tile's first key is valid and belongs to column part 0, so mn is finite.
        const float alpha_lo = exp2f(m_lo - mn_lo), alpha_hi = exp2f(m_hi - mn_hi);
        m_lo = mn_lo; m_hi = mn_hi;
        float sum_lo = 0.f, sum_hi = 0.f;
#pragma unroll
        for (int n = 0; n < 2; ++n) {
            const float p0 = exp2f(s[n][0] - mn_lo), p1 = exp2f(s[n][1] - mn_lo);
            const float p2 = exp2f(s[n][2] - mn_hi), p3 = exp2f(s[n][3] - mn_hi);
            sum_lo += p0 + p1;
            sum_hi += p2 + p3;
            const int col = cs * KW + n * 8 + 2 * t4;
            *reinterpret_cast<__nv_bfloat162*>(sP + r_lo * PS + col) = __floats2bfloat162_rn(p0, p1);
            *reinterpret_cast<__nv_bfloat162*>(sP + r_hi * PS + col) = __floats2bfloat162_rn(p2, p3);
        }
        l_lo = l_lo * alpha_lo + sum_lo;  // partial over this warp's keys and quad lane
        l_hi = l_hi * alpha_hi + sum_hi;
#pragma unroll
        for (int n = 0; n < NO; ++n) {
            acc[n][0] *= alpha_lo; acc[n][1] *= alpha_lo;
            acc[n][2] *= alpha_hi; acc[n][3] *= alpha_hi;
        }
        __syncthreads();
        // O[16 heads, this warp's DVW columns] += P[16 heads, BN keys] . c_kv[BN keys, columns].
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
            uint32_t a[4];
            load_a_frag(a, sP + mt * 16 * PS + kk * 16, PS, lane);
#pragma unroll
            for (int dn = 0; dn < NO / 2; ++dn) {
                const int col0 = cs * DVW + dn * 16;
                if (col0 >= L) break;
                uint32_t bv[4];
                load_v_frag(bv, tk + kk * 16 * KS + col0, KS, lane);
                mma_bf16(acc[2 * dn], a, bv[0], bv[1]);
                mma_bf16(acc[2 * dn + 1], a, bv[2], bv[3]);
            }
        }
        __syncthreads();
    }
    cp_async_wait<0>();

#pragma unroll
    for (int o = 1; o <= 2; o <<= 1) {
        l_lo += __shfl_xor_sync(0xffffffffu, l_lo, o);
        l_hi += __shfl_xor_sync(0xffffffffu, l_hi, o);
    }
    if (t4 == 0) {
        sL[cs * ROWS + r_lo] = l_lo;
        sL[cs * ROWS + r_hi] = l_hi;
    }
    __syncthreads();
    float lt_lo = 0.f, lt_hi = 0.f;
#pragma unroll
    for (int c = 0; c < NCS; ++c) {
        lt_lo += sL[c * ROWS + r_lo];
        lt_hi += sL[c * ROWS + r_hi];
    }
    const float inv_lo = 1.f / lt_lo, inv_hi = 1.f / lt_hi;
    const int h_lo = h0 + r_lo, h_hi = h0 + r_hi;
    if (p.num_splits == 1) {
#pragma unroll
        for (int n = 0; n < NO; ++n) {
            const int col = cs * DVW + n * 8 + 2 * t4;
            if (col >= L) break;
            if (h_lo < p.heads)
                *reinterpret_cast<__nv_bfloat162*>(p.o + (long long)b * p.o_batch_stride +
                                                   (long long)h_lo * p.o_head_stride + col) =
                    __floats2bfloat162_rn(acc[n][0] * inv_lo, acc[n][1] * inv_lo);
            if (h_hi < p.heads)
                *reinterpret_cast<__nv_bfloat162*>(p.o + (long long)b * p.o_batch_stride +
                                                   (long long)h_hi * p.o_head_stride + col) =
                    __floats2bfloat162_rn(acc[n][2] * inv_hi, acc[n][3] * inv_hi);
        }
    } else {
        const long long row_lo = (long long)b * p.heads + h_lo, row_hi = row_lo + 8;
        float* part_lo = p.scratch + (row_lo * p.num_splits + split) * L;
        float* part_hi = p.scratch + (row_hi * p.num_splits + split) * L;
#pragma unroll
        for (int n = 0; n < NO; ++n) {
            const int col = cs * DVW + n * 8 + 2 * t4;
            if (col >= L) break;
            if (h_lo < p.heads)
                *reinterpret_cast<float2*>(part_lo + col) = make_float2(acc[n][0] * inv_lo, acc[n][1] * inv_lo);
            if (h_hi < p.heads)
                *reinterpret_cast<float2*>(part_hi + col) = make_float2(acc[n][2] * inv_hi, acc[n][3] * inv_hi);
        }
        if (cs == 0 && t4 == 0) {
            if (h_lo < p.heads) lse_out[row_lo * p.num_splits + split] = m_lo + log2f(lt_lo);
            if (h_hi < p.heads) lse_out[row_hi * p.num_splits + split] = m_hi + log2f(lt_hi);
        }
    }
}

}  // namespace attn

// One entry per MlaDecodeTile of mla.rs: m-tiles of 16 heads, column parts (the warps each
// m-tile gets), keys per tile, ring stages.
#define MLA_DECODE_ENTRY(NAME, TILE)                                                                  \
    extern "C" __global__ void __launch_bounds__(TILE.warps * 32, 1) NAME(const MlaDecodeParams p) { \
        attn::mla_decode_impl<TILE.heads_per_cta / 16, TILE.warps / (TILE.heads_per_cta / 16),       \
                              TILE.block_n, TILE.stages>(p);                                          \
    }
MLA_DECODE_ENTRY(mla_decode_m64, MLA_TILE_M64)
MLA_DECODE_ENTRY(mla_decode_m16, MLA_TILE_M16)

extern "C" __global__ void mla_combine(const MlaCombineParams p) {
    if (p.num_splits <= 1) return;  // mla_decode already wrote o
    attn::combine_splits(p.scratch, p.o, p.o_batch_stride, p.o_head_stride, p.batch, p.heads, p.kv_lora_rank,
                         p.num_splits);
}
