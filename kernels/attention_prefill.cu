// Prefill attention and the KV-cache write.
//
// kv_cache_write: token row t of `src` (a fused qkv / kv buffer, row stride src_ld) belongs to
//   sequence b = t / tokens_per_seq at position past + t % tokens_per_seq;
//   k_cache[b, pos, h, :] = src[t, k_col + h*d_k : +d_k]   for h < k_heads
//   v_cache[b, pos, h, :] = src[t, v_col + h*d_v : +d_v]   for h < v_heads (skipped if v_cache null)
//   Bytes: 2 * rows * (k_heads*d_k + v_heads*d_v) * 2. Launch: grid rows, block 128.
//
// flash_prefill_*: causal attention, bf16 in/out, fp32 accumulation and online softmax.
//   Query i of sequence b sits at position n_kv - n_q + i and sees keys 0..=that position.
//   Query head h reads K head h*k_heads/q_heads and V head h*v_heads/q_heads (floor), which
//   covers MHA, GQA and DiffQKV (k_heads != v_heads).
//   s = scale * q.k; if softcap > 0: s = softcap * tanh(s / softcap); o = softmax(s) V.
//   Every tensor is addressed through (batch, token, head) element strides, so q may sit in a
//   fused qkv buffer and K/V in the [batch, max_seq, heads, d] cache. Base pointers and all
//   strides must be 16-byte aligned (strides multiples of 8 elements), d_qk, d_v multiples of 8.
//   FLOPs (causal, n_q == n_kv = s): ~ 2 * b * q_heads * s^2 * (d_qk + d_v) / 2.
//   Launch: grid (ceil(n_q / BM), q_heads, batch), block 32 * NWARPS, dynamic smem per entry.
//
// Versions (one entry per compiled head-dim bucket; Rust `attention_prefill::select` picks the
// smallest bucket that holds (d_qk, d_v); any d_qk, d_v <= bucket works because loads
// zero-fill the columns past d, so the larger buckets are the generic fallback):
//   flash_prefill_d32      d_qk, d_v <= 32   (test fixtures)      4 warps, BM 64,  BN 64
//   flash_prefill_d64      d_qk, d_v <= 64                        8 warps, BM 128, BN 64
//   flash_prefill_d128     d_qk, d_v <= 128                       8 warps, BM 128, BN 64
//   flash_prefill_d192_128 d_qk <= 192, d_v <= 128 (DeepSeek MHA-form prefill) 8 warps
//   flash_prefill_d256     d_qk, d_v <= 256                       4 warps, BM 64,  BN 32
// v1 (this): FA2-style mma.sync m16n8k16, ldmatrix, cp.async double-buffered K/V tiles, one
// q head per CTA, each warp owns 16 query rows, heavy (late) query blocks scheduled first,
// warps skip key tiles wholly in their causal future. This is the `fa2` attention backend;
// the default `fa3` prefill (TMA + wgmma, warp-specialised) is kernels/attention_fa3.cu.
#include "attention_util.cuh"

// Copies `n` contiguous elements, 16 bytes at a time when both ends are 16-byte aligned.
__device__ __forceinline__ void copy_row_span(bf16* dst, const bf16* src, int n) {
    const bool vec = ((reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src)) & 15) == 0 &&
                     (n & 7) == 0;
    if (vec) {
        for (int i = threadIdx.x * 8; i < n; i += blockDim.x * 8)
            *reinterpret_cast<uint4*>(dst + i) = *reinterpret_cast<const uint4*>(src + i);
    } else {
        for (int i = threadIdx.x; i < n; i += blockDim.x) dst[i] = src[i];
    }
}

extern "C" __global__ void kv_cache_write(const KvCacheWriteParams p) {
    const int t = blockIdx.x;
    if (t >= p.rows) return;
    const int b = t / p.tokens_per_seq;
    const long long pos = p.past + t % p.tokens_per_seq;
    const bf16* row = p.src + (long long)t * p.src_ld;
    // Heads of one token are contiguous both in src and in the cache, so each is one span.
    copy_row_span(p.k_cache + ((long long)b * p.max_seq + pos) * p.k_heads * p.d_k, row + p.k_col,
                  p.k_heads * p.d_k);
    if (p.v_cache)
        copy_row_span(p.v_cache + ((long long)b * p.max_seq + pos) * p.v_heads * p.d_v, row + p.v_col,
                      p.v_heads * p.d_v);
}

namespace attn {

template <int DQK, int DV, int NWARPS, int BN>
struct PrefillShape {
    static constexpr int BM = 16 * NWARPS;
    static constexpr int QS = DQK + 8, KS = DQK + 8, VS = DV + 8;  // padded smem row strides
    static constexpr int SMEM_BYTES = (BM * QS + 2 * BN * KS + 2 * BN * VS) * 2;
};

template <int DQK, int DV, int NWARPS, int BN, bool Q_IN_REGS>
__device__ __forceinline__ void flash_prefill_impl(const FlashPrefillParams& p) {
    using S = PrefillShape<DQK, DV, NWARPS, BN>;
    constexpr int BM = S::BM, QS = S::QS, KS = S::KS, VS = S::VS;
    constexpr int NT = NWARPS * 32;
    constexpr int KSTEPS = DQK / 16, NS = BN / 8, NO = DV / 8;
    static_assert(DQK % 16 == 0 && DV % 16 == 0 && BN % 16 == 0, "tile shapes");
    extern __shared__ __align__(16) unsigned char smem[];
    bf16* sQ = reinterpret_cast<bf16*>(smem);
    bf16* sK = sQ + BM * QS;
    bf16* sV = sK + 2 * BN * KS;

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int mblock = gridDim.x - 1 - blockIdx.x;  // long causal rows first: better tail
    const int h = blockIdx.y, b = blockIdx.z;
    const int kh = (int)((long long)h * p.k_heads / p.q_heads);
    const int vh = (int)((long long)h * p.v_heads / p.q_heads);
    const bf16* qg = p.q + b * p.q_batch_stride + (long long)h * p.q_head_stride;
    const bf16* kg = p.k + b * p.k_batch_stride + (long long)kh * p.k_head_stride;
    const bf16* vg = p.v + b * p.v_batch_stride + (long long)vh * p.v_head_stride;
    const int q0 = mblock * BM;
    const int offset = p.n_kv - p.n_q;  // position of query 0
    const int kv_end = min(p.n_kv, offset + q0 + BM);
    const int n_tiles = (kv_end + BN - 1) / BN;

    constexpr int QCH = DQK / 8, VCH = DV / 8;
    for (int i = tid; i < BM * QCH; i += NT) {
        const int r = i / QCH, c = (i % QCH) * 8;
        const bool ok = q0 + r < p.n_q && c < p.d_qk;
        cp_async16(sQ + r * QS + c, ok ? qg + (long long)(q0 + r) * p.q_token_stride + c : p.q, ok);
    }
    auto load_kv = [&](int tile, int stage) {
        bf16* dk = sK + stage * BN * KS;
        bf16* dv = sV + stage * BN * VS;
        const int j0 = tile * BN;
        for (int i = tid; i < BN * QCH; i += NT) {
            const int r = i / QCH, c = (i % QCH) * 8;
            const bool ok = j0 + r < p.n_kv && c < p.d_qk;
            cp_async16(dk + r * KS + c, ok ? kg + (long long)(j0 + r) * p.k_token_stride + c : p.k, ok);
        }
        for (int i = tid; i < BN * VCH; i += NT) {
            const int r = i / VCH, c = (i % VCH) * 8;
            const bool ok = j0 + r < p.n_kv && c < p.d_v;
            cp_async16(dv + r * VS + c, ok ? vg + (long long)(j0 + r) * p.v_token_stride + c : p.v, ok);
        }
    };
    load_kv(0, 0);
    cp_async_commit();

    const int g = lane >> 2, t4 = lane & 3;
    const int row_lo = q0 + warp * 16 + g;        // this thread's two query rows
    const int pos_lo = offset + row_lo, pos_hi = pos_lo + 8;
    const int warp_last_pos = offset + q0 + warp * 16 + 15;
    const int ksteps = min(KSTEPS, (p.d_qk + 15) / 16);  // generic dims: skip all-zero k-steps
    const int osteps = min(NO / 2, (p.d_v + 15) / 16);

    uint32_t qf[Q_IN_REGS ? KSTEPS : 1][4];
    float acc[NO][4];
#pragma unroll
    for (int n = 0; n < NO; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
    float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.f, l_hi = 0.f;

    for (int tile = 0; tile < n_tiles; ++tile) {
        if (tile + 1 < n_tiles) {
            load_kv(tile + 1, (tile + 1) & 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if (Q_IN_REGS && tile == 0) {
#pragma unroll
            for (int kk = 0; kk < (Q_IN_REGS ? KSTEPS : 0); ++kk)
                load_a_frag(qf[kk], sQ + warp * 16 * QS + kk * 16, QS, lane);
        }
        const int j0 = tile * BN;
        if (j0 <= warp_last_pos) {  // else the whole tile is in this warp's causal future
            const bf16* tk = sK + (tile & 1) * BN * KS;
            const bf16* tv = sV + (tile & 1) * BN * VS;
            float s[NS][4];
#pragma unroll
            for (int n = 0; n < NS; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < KSTEPS; ++kk) {
                if (kk >= ksteps) break;
                uint32_t a[4];
                if constexpr (Q_IN_REGS) {
                    a[0] = qf[kk][0]; a[1] = qf[kk][1]; a[2] = qf[kk][2]; a[3] = qf[kk][3];
                } else {
                    load_a_frag(a, sQ + warp * 16 * QS + kk * 16, QS, lane);
                }
#pragma unroll
                for (int nn = 0; nn < NS / 2; ++nn) {
                    uint32_t bk[4];
                    load_kt_frag(bk, tk + nn * 16 * KS + kk * 16, KS, lane);
                    mma_bf16(s[2 * nn], a, bk[0], bk[1]);
                    mma_bf16(s[2 * nn + 1], a, bk[2], bk[3]);
                }
            }
            // Scale, cap, causal mask, and the running row max.
            const bool need_mask = j0 + BN - 1 > offset + q0 + warp * 16;
            float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
            for (int n = 0; n < NS; ++n) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int key = j0 + n * 8 + 2 * t4 + (e & 1);
                    float x = score_log2(s[n][e], p.scale, p.softcap);
                    if (need_mask && key > (e < 2 ? pos_lo : pos_hi)) x = -INFINITY;
                    s[n][e] = x;
                }
                mx_lo = fmaxf(mx_lo, fmaxf(s[n][0], s[n][1]));
                mx_hi = fmaxf(mx_hi, fmaxf(s[n][2], s[n][3]));
            }
#pragma unroll
            for (int o = 1; o <= 2; o <<= 1) {
                mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, o));
                mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, o));
            }
            const float mn_lo = fmaxf(m_lo, mx_lo), mn_hi = fmaxf(m_hi, mx_hi);
            // A row with nothing visible yet keeps max -inf; use 0 as the reference so that
            // exp2(-inf - ref) = 0 instead of NaN.
            const float ref_lo = mn_lo == -INFINITY ? 0.f : mn_lo;
            const float ref_hi = mn_hi == -INFINITY ? 0.f : mn_hi;
            const float alpha_lo = exp2f(m_lo - ref_lo), alpha_hi = exp2f(m_hi - ref_hi);
            m_lo = mn_lo; m_hi = mn_hi;
            float sum_lo = 0.f, sum_hi = 0.f;
#pragma unroll
            for (int n = 0; n < NS; ++n) {
                s[n][0] = exp2f(s[n][0] - ref_lo); s[n][1] = exp2f(s[n][1] - ref_lo);
                s[n][2] = exp2f(s[n][2] - ref_hi); s[n][3] = exp2f(s[n][3] - ref_hi);
                sum_lo += s[n][0] + s[n][1];
                sum_hi += s[n][2] + s[n][3];
            }
            l_lo = l_lo * alpha_lo + sum_lo;  // per-thread partial; quad-reduced at the end
            l_hi = l_hi * alpha_hi + sum_hi;
#pragma unroll
            for (int n = 0; n < NO; ++n) {
                acc[n][0] *= alpha_lo; acc[n][1] *= alpha_lo;
                acc[n][2] *= alpha_hi; acc[n][3] *= alpha_hi;
            }
            // O += P V: the S accumulators of two adjacent n8 tiles are one A fragment.
#pragma unroll
            for (int kk = 0; kk < BN / 16; ++kk) {
                uint32_t a[4];
                a[0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
                a[1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
                a[2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
                a[3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
                for (int dn = 0; dn < NO / 2; ++dn) {
                    if (dn >= osteps) break;
                    uint32_t bv[4];
                    load_v_frag(bv, tv + kk * 16 * VS + dn * 16, VS, lane);
                    mma_bf16(acc[2 * dn], a, bv[0], bv[1]);
                    mma_bf16(acc[2 * dn + 1], a, bv[2], bv[3]);
                }
            }
        }
        __syncthreads();  // the stage just read is refilled by the next iteration's prefetch
    }

#pragma unroll
    for (int o = 1; o <= 2; o <<= 1) {
        l_lo += __shfl_xor_sync(0xffffffffu, l_lo, o);
        l_hi += __shfl_xor_sync(0xffffffffu, l_hi, o);
    }
    const float inv_lo = l_lo > 0.f ? 1.f / l_lo : 0.f, inv_hi = l_hi > 0.f ? 1.f / l_hi : 0.f;
    bf16* og = p.o + b * p.o_batch_stride + (long long)h * p.o_head_stride;
#pragma unroll
    for (int n = 0; n < NO; ++n) {
        const int c = n * 8 + 2 * t4;
        if (c >= p.d_v) break;
        if (row_lo < p.n_q)
            *reinterpret_cast<__nv_bfloat162*>(og + (long long)row_lo * p.o_token_stride + c) =
                __floats2bfloat162_rn(acc[n][0] * inv_lo, acc[n][1] * inv_lo);
        if (row_lo + 8 < p.n_q)
            *reinterpret_cast<__nv_bfloat162*>(og + (long long)(row_lo + 8) * p.o_token_stride + c) =
                __floats2bfloat162_rn(acc[n][2] * inv_hi, acc[n][3] * inv_hi);
    }
}

}  // namespace attn

// One entry per PrefillTile of attention_prefill.rs (head dims, warps, keys per tile);
// whether q stays in registers is this file's choice (d256 would spill).
#define FLASH_PREFILL_ENTRY(NAME, TILE, QREG)                                                        \
    extern "C" __global__ void __launch_bounds__(TILE.warps * 32) NAME(const FlashPrefillParams p) { \
        attn::flash_prefill_impl<TILE.d_qk, TILE.d_v, TILE.warps, TILE.block_n, QREG>(p);           \
    }
FLASH_PREFILL_ENTRY(flash_prefill_d32, PREFILL_TILE_D32, true)
FLASH_PREFILL_ENTRY(flash_prefill_d64, PREFILL_TILE_D64, true)
FLASH_PREFILL_ENTRY(flash_prefill_d128, PREFILL_TILE_D128, true)
FLASH_PREFILL_ENTRY(flash_prefill_d192_128, PREFILL_TILE_D192_128, true)
FLASH_PREFILL_ENTRY(flash_prefill_d256, PREFILL_TILE_D256, false)
