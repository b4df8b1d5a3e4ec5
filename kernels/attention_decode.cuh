// Split-KV decode pieces shared by attention_decode.cu (fa2) and attention_decode_tma.cu (fa3):
// one warp's online softmax over a 16-row x 16-key score slice held in mma.sync fragments
// (attention_util.cuh's layout: a thread owns rows g and g + 8, g = lane / 4; `update` for
// fa2, `update_lazy` for fa3), and the merge of several warps' (m, l, O) through shared
// memory.
#pragma once
#include "attention_util.cuh"

namespace attn {

// q's A fragment for k-step kk: from registers (`qf`, loaded once) when Q_IN_REGS, else
// ldmatrix from the padded q tile `sQ` (row stride qs) each time (d256 would spill).
template <bool Q_IN_REGS, int QF>
__device__ __forceinline__ void q_frag(uint32_t (&a)[4], const uint32_t (&qf)[QF][4], const bf16* sQ, int qs, int kk,
                                       int lane) {
    if constexpr (Q_IN_REGS) {
        a[0] = qf[kk][0]; a[1] = qf[kk][1]; a[2] = qf[kk][2]; a[3] = qf[kk][3];
    } else {
        load_a_frag(a, sQ + kk * 16, qs, lane);
    }
}

// 2^x on the SFU, denormal results flushed to zero (exp2f adds a range fix-up around the
// same instruction); exp2(-inf) = 0. For softmax weights, where nothing below 2^-126 matters.
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// Running max (log2 domain) and this thread's share of the row sum, for rows g and g + 8.
struct SliceSoftmax {
    float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.f, l_hi = 0.f;

    // s: the slice's scores as two n8 accumulators (keys 0-7, 8-15), already through
    // score_log2 and -inf where masked. Rescales acc to the new max, adds exp2(s - max) to the
    // sums and returns P as the A fragment of P V. A row with no visible key yet keeps max
    // -inf: 0 is then the reference, so exp2 gives exact zeros instead of NaN.
    template <int NO>
    __device__ __forceinline__ void update(float (&s)[2][4], float (&acc)[NO][4], uint32_t (&pa)[4]) {
        float mx_lo = fmaxf(fmaxf(s[0][0], s[0][1]), fmaxf(s[1][0], s[1][1]));
        float mx_hi = fmaxf(fmaxf(s[0][2], s[0][3]), fmaxf(s[1][2], s[1][3]));
#pragma unroll
        for (int o = 1; o <= 2; o <<= 1) {
            mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, o));
            mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, o));
        }
        const float mn_lo = fmaxf(m_lo, mx_lo), mn_hi = fmaxf(m_hi, mx_hi);
        const float ref_lo = mn_lo == -INFINITY ? 0.f : mn_lo, ref_hi = mn_hi == -INFINITY ? 0.f : mn_hi;
        const float alpha_lo = exp2f(m_lo - ref_lo), alpha_hi = exp2f(m_hi - ref_hi);
        m_lo = mn_lo; m_hi = mn_hi;
        float sum_lo = 0.f, sum_hi = 0.f;
#pragma unroll
        for (int n = 0; n < 2; ++n) {
            s[n][0] = exp2f(s[n][0] - ref_lo); s[n][1] = exp2f(s[n][1] - ref_lo);
            s[n][2] = exp2f(s[n][2] - ref_hi); s[n][3] = exp2f(s[n][3] - ref_hi);
            sum_lo += s[n][0] + s[n][1];
            sum_hi += s[n][2] + s[n][3];
        }
        l_lo = l_lo * alpha_lo + sum_lo;
        l_hi = l_hi * alpha_hi + sum_hi;
#pragma unroll
        for (int n = 0; n < NO; ++n) {
            acc[n][0] *= alpha_lo; acc[n][1] *= alpha_lo;
            acc[n][2] *= alpha_hi; acc[n][3] *= alpha_hi;
        }
        pa[0] = pack_bf16(s[0][0], s[0][1]); pa[1] = pack_bf16(s[0][2], s[0][3]);
        pa[2] = pack_bf16(s[1][0], s[1][1]); pa[3] = pack_bf16(s[1][2], s[1][3]);
    }

    // update() with a lazy rescale (attention_decode_tma.cu): the running max is only a
    // reference, moved (and acc and the sums rescaled) when some row's slice max exceeds it
    // by more than RESCALE_LOG2, so P = exp2(s - m) stays <= 2^RESCALE_LOG2 (exact in the
    // final o / l, well inside bf16 and fp32). After the first slices the max rarely moves
    // that far: most slices skip the NO x 4 multiplies and two exp2, which sit on the
    // consumer's dependent chain. The branch is warp-uniform (one vote).
    static constexpr float RESCALE_LOG2 = 8.f;
    template <int NO>
    __device__ __forceinline__ void update_lazy(float (&s)[2][4], float (&acc)[NO][4], uint32_t (&pa)[4]) {
        float mx_lo = fmaxf(fmaxf(s[0][0], s[0][1]), fmaxf(s[1][0], s[1][1]));
        float mx_hi = fmaxf(fmaxf(s[0][2], s[0][3]), fmaxf(s[1][2], s[1][3]));
#pragma unroll
        for (int o = 1; o <= 2; o <<= 1) {
            mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, o));
            mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, o));
        }
        // -inf + 8 is -inf: a row whose first visible key arrives always moves its reference.
        const bool grow = mx_lo > m_lo + RESCALE_LOG2 || mx_hi > m_hi + RESCALE_LOG2;
        if (__any_sync(0xffffffffu, grow)) {
            const float mn_lo = fmaxf(m_lo, mx_lo), mn_hi = fmaxf(m_hi, mx_hi);
            const float ref_lo = mn_lo == -INFINITY ? 0.f : mn_lo, ref_hi = mn_hi == -INFINITY ? 0.f : mn_hi;
            const float alpha_lo = fast_exp2(m_lo - ref_lo), alpha_hi = fast_exp2(m_hi - ref_hi);
            m_lo = mn_lo; m_hi = mn_hi;
            l_lo *= alpha_lo; l_hi *= alpha_hi;
#pragma unroll
            for (int n = 0; n < NO; ++n) {
                acc[n][0] *= alpha_lo; acc[n][1] *= alpha_lo;
                acc[n][2] *= alpha_hi; acc[n][3] *= alpha_hi;
            }
        }
        const float ref_lo = m_lo == -INFINITY ? 0.f : m_lo, ref_hi = m_hi == -INFINITY ? 0.f : m_hi;
        float sum_lo = 0.f, sum_hi = 0.f;
#pragma unroll
        for (int n = 0; n < 2; ++n) {
            s[n][0] = fast_exp2(s[n][0] - ref_lo); s[n][1] = fast_exp2(s[n][1] - ref_lo);
            s[n][2] = fast_exp2(s[n][2] - ref_hi); s[n][3] = fast_exp2(s[n][3] - ref_hi);
            sum_lo += s[n][0] + s[n][1];
            sum_hi += s[n][2] + s[n][3];
        }
        l_lo += sum_lo;
        l_hi += sum_hi;
        pa[0] = pack_bf16(s[0][0], s[0][1]); pa[1] = pack_bf16(s[0][2], s[0][3]);
        pa[2] = pack_bf16(s[1][0], s[1][1]); pa[3] = pack_bf16(s[1][2], s[1][3]);
    }

    // Whole row sums over the quad; once, after the last slice.
    __device__ __forceinline__ void reduce_sums() {
#pragma unroll
        for (int o = 1; o <= 2; o <<= 1) {
            l_lo += __shfl_xor_sync(0xffffffffu, l_lo, o);
            l_hi += __shfl_xor_sync(0xffffffffu, l_hi, o);
        }
    }
};

// One warp's state into shared memory: sM and sL [warp][16], sO [warp][16][NO * 8] fp32.
template <int NO>
__device__ __forceinline__ void store_warp_state(const SliceSoftmax& st, const float (&acc)[NO][4], float* sM,
                                                 float* sL, float* sO, int warp, int lane) {
    constexpr int D = NO * 8;
    const int g = lane >> 2, t4 = lane & 3;
    if (t4 == 0) {
        sM[warp * 16 + g] = st.m_lo; sM[warp * 16 + g + 8] = st.m_hi;
        sL[warp * 16 + g] = st.l_lo; sL[warp * 16 + g + 8] = st.l_hi;
    }
#pragma unroll
    for (int n = 0; n < NO; ++n) {
        float* o0 = sO + (warp * 16 + g) * D + n * 8 + 2 * t4;
        o0[0] = acc[n][0]; o0[1] = acc[n][1];
        o0[8 * D] = acc[n][2]; o0[8 * D + 1] = acc[n][3];
    }
}

// Row r, column c of the WARPS warps' merged softmax (row stride D in sO): returns o / l and
// sets the row's log2-LSE. l == 0 (a row with no visible key, possible only for causal rows
// of a later split) gives o = 0 and lse = -inf, which the combine skips.
template <int WARPS, int D>
__device__ __forceinline__ float merged_row(const float* sM, const float* sL, const float* sO, int r, int c,
                                            float& lse) {
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) mx = fmaxf(mx, sM[w * 16 + r]);
    float l = 0.f, o = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) {
        const float wt = sM[w * 16 + r] == -INFINITY ? 0.f : exp2f(sM[w * 16 + r] - mx);
        l += wt * sL[w * 16 + r];
        o += wt * sO[(w * 16 + r) * D + c];
    }
    lse = l > 0.f ? mx + log2f(l) : -INFINITY;
    return l > 0.f ? o / l : 0.f;
}

}  // namespace attn
