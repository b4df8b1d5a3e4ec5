//! Causal softmax attention over one sequence, with independent Q, K and V head counts.
//!
//! MHA, GQA, Sigma v1's DiffQKV and MLA (after its per-head key/value up-projection) are all
//! this one function: query head `h` reads K head `⌊h·nk/nq⌋` and V head `⌊h·nv/nq⌋`
//! (FlexHeadFA's map, which is GQA's `h / (nq/nkv)` when nk = nv divides nq).

use super::super::{CpuRun, KvCaches};
use super::softmax_f64;
use crate::plan::Op;

/// Head counts and dims of one attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnShape {
    pub q_heads: usize,
    pub k_heads: usize,
    pub v_heads: usize,
    /// Dim shared by query and key heads (MLA: nope + rope).
    pub d_qk: usize,
    pub d_v: usize,
}

/// `q [n_q, q_heads·d_qk]`, `k [n_kv, k_heads·d_qk]`, `v [n_kv, v_heads·d_v]` ->
/// `[n_q, q_heads·d_v]`. Query row `i` sits at position `q_pos0 + i` and sees keys
/// `0..=q_pos0 + i` (prefill: `q_pos0 = 0, n_q = n_kv`; decode: `n_q = 1` at the end).
/// Scores `scale · q·k`, then `cap · tanh(s / cap)` if `softcap`, then softmax in f64.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    n_q: usize,
    q_pos0: usize,
    k: &[f32],
    v: &[f32],
    n_kv: usize,
    shape: &AttnShape,
    scale: f32,
    softcap: Option<f32>,
) -> Vec<f32> {
    let AttnShape { q_heads, k_heads, v_heads, d_qk, d_v } = *shape;
    assert!(
        q_heads > 0 && k_heads > 0 && v_heads > 0 && k_heads <= q_heads && v_heads <= q_heads,
        "attention: head counts {shape:?} need 0 < k_heads, v_heads <= q_heads"
    );
    assert_eq!(q.len(), n_q * q_heads * d_qk, "attention: q has {} values, expected n_q*q_heads*d_qk", q.len());
    assert_eq!(k.len(), n_kv * k_heads * d_qk, "attention: k has {} values, expected n_kv*k_heads*d_qk", k.len());
    assert_eq!(v.len(), n_kv * v_heads * d_v, "attention: v has {} values, expected n_kv*v_heads*d_v", v.len());
    assert!(q_pos0 + n_q <= n_kv, "attention: queries reach position {} but only {n_kv} keys are given", q_pos0 + n_q);

    let (q_row, k_row, v_row) = (q_heads * d_qk, k_heads * d_qk, v_heads * d_v);
    let mut out = vec![0.0f32; n_q * q_heads * d_v];
    for i in 0..n_q {
        let visible = q_pos0 + i + 1;
        for h in 0..q_heads {
            let (kh, vh) = (h * k_heads / q_heads, h * v_heads / q_heads);
            let qv = &q[i * q_row + h * d_qk..][..d_qk];
            let scores = (0..visible).map(|j| {
                let kv = &k[j * k_row + kh * d_qk..][..d_qk];
                let dot: f64 = qv.iter().zip(kv).map(|(&a, &b)| a as f64 * b as f64).sum();
                let s = scale as f64 * dot;
                match softcap {
                    Some(cap) => cap as f64 * (s / cap as f64).tanh(),
                    None => s,
                }
            });
            let probs = softmax_f64(scores);
            let o = &mut out[(i * q_heads + h) * d_v..][..d_v];
            for (d, o) in o.iter_mut().enumerate() {
                let acc: f64 = probs.iter().enumerate().map(|(j, p)| p * v[j * v_row + vh * d_v + d] as f64).sum();
                *o = acc as f32;
            }
        }
    }
    out
}

/// `Op::KvCacheWrite`: this forward's K/V into the cache, after `past` in each sequence.
pub fn write_cache(r: &mut CpuRun, op: &Op, caches: &mut KvCaches) {
    let Op::KvCacheWrite { k, v, cache } = op else { unreachable!("attention::write_cache got {op:?}") };
    let plan = r.plan;
    let info = &plan.caches[cache.0];
    let (ks, vs) = (r.read(*k), r.read(*v));
    let (kw, vw) = (info.k_elems_per_token(), info.v_elems_per_token());
    let n = plan.shape.new_tokens_per_seq();
    let past = plan.shape.past();
    for b in 0..plan.local_batch {
        let kc = &mut caches.k[cache.0][b * info.max_seq * kw..(b + 1) * info.max_seq * kw];
        kc[past * kw..(past + n) * kw].copy_from_slice(&ks[b * n * kw..(b + 1) * n * kw]);
        let vc = &mut caches.v[cache.0][b * info.max_seq * vw..(b + 1) * info.max_seq * vw];
        vc[past * vw..(past + n) * vw].copy_from_slice(&vs[b * n * vw..(b + 1) * n * vw]);
    }
}

/// `Op::Attention`: every sequence's queries attend to the cache up to their own position.
pub fn run(r: &mut CpuRun, op: &Op, caches: &KvCaches) {
    let Op::Attention { q, cache, out, q_heads, k_heads, v_heads, d_qk, d_v, scale, softcap } = op else {
        unreachable!("attention::run got {op:?}")
    };
    let plan = r.plan;
    let info = &plan.caches[cache.0];
    let qs = r.read(*q);
    let (kw, vw) = (k_heads * d_qk, v_heads * d_v);
    let n = plan.shape.new_tokens_per_seq();
    let past = plan.shape.past();
    let shape = AttnShape { q_heads: *q_heads, k_heads: *k_heads, v_heads: *v_heads, d_qk: *d_qk, d_v: *d_v };
    let mut result = Vec::with_capacity(plan.rows(*q) * q_heads * d_v);
    for b in 0..plan.local_batch {
        let qb = &qs[b * n * q.cols..(b + 1) * n * q.cols];
        let kc = &caches.k[cache.0][b * info.max_seq * kw..];
        let vc = &caches.v[cache.0][b * info.max_seq * vw..];
        let o =
            attention(qb, n, past, &kc[..(past + n) * kw], &vc[..(past + n) * vw], past + n, &shape, *scale, *softcap);
        result.extend(o);
    }
    r.write(*out, &result);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::cpu::ops::test_util::{assert_close, values};
    use proptest::prelude::*;

    fn mha(heads: usize, d: usize) -> AttnShape {
        AttnShape { q_heads: heads, k_heads: heads, v_heads: heads, d_qk: d, d_v: d }
    }

    /// Copy each head of a `[n, heads·d]` tensor so head `h` of the result is head
    /// `map(h)` of the input.
    fn gather_heads(
        x: &[f32],
        n: usize,
        heads: usize,
        d: usize,
        out_heads: usize,
        map: impl Fn(usize) -> usize,
    ) -> Vec<f32> {
        let mut out = Vec::with_capacity(n * out_heads * d);
        for r in 0..n {
            for h in 0..out_heads {
                out.extend_from_slice(&x[r * heads * d + map(h) * d..][..d]);
            }
        }
        out
    }

    #[test]
    fn one_key_returns_its_value() {
        let shape = mha(2, 3);
        let v = [1.0, 2.0, 3.0, -4.0, 5.0, -6.0];
        let out = attention(&values(6, 1), 1, 0, &values(6, 2), &v, 1, &shape, 0.3, None);
        assert_eq!(out, v);
    }

    #[test]
    fn two_keys_hand_computed() {
        // One head, d = 1: q = 2, keys (0, ln 3), scale 0.5 -> scores (0, ln 3), probs (1/4, 3/4).
        let shape = mha(1, 1);
        let (q, k, v) = ([2.0], [0.0, 3f32.ln()], [4.0, 8.0]);
        let out = attention(&q, 1, 1, &k, &v, 2, &shape, 0.5, None);
        assert_close(&out, &[7.0], 1e-6);
        // The cap applies after the scale: cap 1 maps ln 3 to tanh(ln 3) = 0.8, probs ∝ (1, e^0.8).
        let capped = attention(&q, 1, 1, &k, &v, 2, &shape, 0.5, Some(1.0));
        let p = 0.8f64.exp() / (1.0 + 0.8f64.exp());
        assert_close(&capped, &[(4.0 * (1.0 - p) + 8.0 * p) as f32], 1e-6);
    }

    #[test]
    fn causal_mask_hides_later_keys() {
        let (n, shape) = (5, mha(2, 4));
        let (q, k, v) = (values(n * 8, 1), values(n * 8, 2), values(n * 8, 3));
        let out = attention(&q, n, 0, &k, &v, n, &shape, 0.5, None);
        // Row 0 sees only key 0, whatever its score.
        assert_close(&out[..8], &v[..8], 1e-7);
        // Changing the last key and value changes only the last row.
        let (mut k2, mut v2) = (k.clone(), v.clone());
        k2[(n - 1) * 8..].iter_mut().for_each(|x| *x += 1.0);
        v2[(n - 1) * 8..].iter_mut().for_each(|x| *x -= 2.0);
        let out2 = attention(&q, n, 0, &k2, &v2, n, &shape, 0.5, None);
        assert_eq!(out[..(n - 1) * 8], out2[..(n - 1) * 8]);
        assert_ne!(out[(n - 1) * 8..], out2[(n - 1) * 8..]);
    }

    #[test]
    fn decode_row_equals_last_prefill_row() {
        let (n, shape) = (6, mha(2, 4));
        let (q, k, v) = (values(n * 8, 4), values(n * 8, 5), values(n * 8, 6));
        let prefill = attention(&q, n, 0, &k, &v, n, &shape, 0.5, Some(5.0));
        let decode = attention(&q[(n - 2) * 8..], 2, n - 2, &k, &v, n, &shape, 0.5, Some(5.0));
        assert_eq!(decode, prefill[(n - 2) * 8..]);
    }

    #[test]
    fn gqa_equals_mha_with_repeated_kv_heads() {
        let (n, d) = (4, 3);
        let gqa = AttnShape { q_heads: 6, k_heads: 2, v_heads: 2, d_qk: d, d_v: d };
        let (q, k, v) = (values(n * 6 * d, 7), values(n * 2 * d, 8), values(n * 2 * d, 9));
        let got = attention(&q, n, 0, &k, &v, n, &gqa, 0.4, None);
        // Query heads 0..3 share KV head 0, heads 3..6 share KV head 1.
        let k_rep = gather_heads(&k, n, 2, d, 6, |h| h / 3);
        let v_rep = gather_heads(&v, n, 2, d, 6, |h| h / 3);
        let want = attention(&q, n, 0, &k_rep, &v_rep, n, &mha(6, d), 0.4, None);
        assert_eq!(got, want);
    }

    #[test]
    fn diffqkv_maps_k_and_v_heads_separately() {
        // Sigma v1 ratios: 8 query heads, 1 K head, 4 V heads, different V dim.
        let n = 3;
        let shape = AttnShape { q_heads: 8, k_heads: 1, v_heads: 4, d_qk: 4, d_v: 2 };
        let (q, k, v) = (values(n * 8 * 4, 10), values(n * 4, 11), values(n * 4 * 2, 12));
        let got = attention(&q, n, 0, &k, &v, n, &shape, 0.5, None);
        let k_rep = gather_heads(&k, n, 1, 4, 8, |_| 0);
        let v_rep = gather_heads(&v, n, 4, 2, 8, |h| h * 4 / 8);
        let mha_shape = AttnShape { q_heads: 8, k_heads: 8, v_heads: 8, d_qk: 4, d_v: 2 };
        let want = attention(&q, n, 0, &k_rep, &v_rep, n, &mha_shape, 0.5, None);
        assert_eq!(got, want);
        // The map is really h·nv/nq: query heads 2 and 3 read V head 1, so with a V that is
        // zero except head 1 only their outputs are non-zero.
        let mut v1 = vec![0.0; n * 8];
        (0..n).for_each(|r| v1[r * 8 + 2..r * 8 + 4].copy_from_slice(&[1.0, 1.0]));
        let out = attention(&q, n, 0, &k, &v1, n, &shape, 0.5, None);
        for h in 0..8 {
            let want = if h == 2 || h == 3 { 1.0 } else { 0.0 };
            assert_close(&out[(2 * 8 + h) * 2..][..2], &[want, want], 1e-6);
        }
    }

    #[test]
    #[should_panic(expected = "only 3 keys")]
    fn too_few_keys_panics() {
        attention(&[0.0; 2], 2, 2, &[0.0; 3], &[0.0; 3], 3, &mha(1, 1), 1.0, None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Each output is a convex combination of the visible value rows, so every component
        /// lies between their minimum and maximum, and a constant V column comes back unchanged.
        #[test]
        fn output_is_convex_combination_of_values(
            n in 1usize..7, q_pos0 in 0usize..4, heads in 1usize..4, d in 1usize..5,
            scale in 0.01f32..3.0, cap in proptest::option::of(1.0f32..50.0), seed in any::<u64>(),
        ) {
            let n_kv = q_pos0 + n;
            let shape = mha(heads, d);
            let q = values(n * heads * d, seed).iter().map(|x| x * 4.0).collect::<Vec<_>>();
            let k = values(n_kv * heads * d, seed ^ 1).iter().map(|x| x * 4.0).collect::<Vec<_>>();
            let mut v = values(n_kv * heads * d, seed ^ 2);
            for j in 0..n_kv { v[j * heads * d] = 0.25; } // head 0, dim 0 constant
            let out = attention(&q, n, q_pos0, &k, &v, n_kv, &shape, scale, cap);
            for i in 0..n {
                let visible = q_pos0 + i + 1;
                prop_assert!((out[i * heads * d] - 0.25).abs() < 1e-6);
                for h in 0..heads {
                    for c in 0..d {
                        let col = (0..visible).map(|j| v[j * heads * d + h * d + c]);
                        let (lo, hi) = col.fold((f32::MAX, f32::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
                        let o = out[i * heads * d + h * d + c];
                        prop_assert!(o >= lo - 1e-6 && o <= hi + 1e-6, "row {} head {} dim {}: {} outside [{}, {}]", i, h, c, o, lo, hi);
                    }
                }
            }
        }
    }
}
