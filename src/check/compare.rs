//! How close two arrays of values are (relative L2, max abs, top-1 agreement of rows),
//! and the tolerances the checks accept.

use serde::Serialize;

/// Default largest rel-L2 of `fwdbench check` on the CPU: f32 against the fixtures' f32.
pub const CPU_LOGITS_TOL: f64 = 1e-4;
/// Default largest rel-L2 of `fwdbench check --device cuda`: bf16 weights and activations.
pub const CUDA_LOGITS_TOL: f64 = 2e-2;
/// Default smallest top-1 agreement of `fwdbench check`.
pub const MIN_TOP1: f64 = 0.99;
/// Largest accepted rel-L2 of a bf16 op output against the f32 reference on the same
/// inputs (one bf16 rounding of inputs and outputs; GEMMs accumulate in fp32).
pub const BF16_TOL: f64 = 1e-2;
/// Routing ops (router weights) are allowed twice `BF16_TOL`: a softmax over the few
/// selected logits amplifies their bf16 rounding.
pub const ROUTE_TOL: f64 = 2e-2;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Agreement {
    pub rel_l2: f64,
    pub max_abs: f64,
    /// Fraction of rows whose argmax matches, up to reference near-ties (`TIE_MARGIN`).
    pub top1: f64,
    /// Fraction of rows whose argmax matches exactly.
    pub top1_strict: f64,
    pub rows: usize,
}

/// Logit gap under which two tokens count as tied (a few bf16 ulps at logit scale ~4).
pub const TIE_MARGIN: f32 = 0.02;

/// Compares row-major `[rows, vocab]` logits.
pub fn compare(got: &[f32], want: &[f32], vocab: usize) -> Agreement {
    assert_eq!(got.len(), want.len(), "logit arrays differ in length");
    let (mut num, mut den, mut max_abs) = (0f64, 0f64, 0f64);
    for (g, w) in got.iter().zip(want) {
        let d = (*g as f64) - (*w as f64);
        num += d * d;
        den += (*w as f64) * (*w as f64);
        max_abs = max_abs.max(if d.is_nan() { f64::INFINITY } else { d.abs() });
    }
    let argmax =
        |r: &[f32]| r.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, v)| if *v > b.1 { (i, *v) } else { b }).0;
    let rows = got.len() / vocab;
    let rel = (num / den.max(1e-300)).sqrt();
    // Strict top-1, and top-1 up to ties: a row also agrees when the reference scores the
    // chosen token within TIE_MARGIN of its own best (bf16 logits cannot order tokens
    // closer than that; both figures are reported).
    let (mut strict, mut tie_aware) = (0usize, 0usize);
    for (g, w) in got.chunks(vocab).zip(want.chunks(vocab)) {
        let (gi, wi) = (argmax(g), argmax(w));
        strict += (gi == wi) as usize;
        tie_aware += (gi == wi || w[wi] - w[gi] <= TIE_MARGIN) as usize;
    }
    Agreement {
        rel_l2: if rel.is_nan() { f64::INFINITY } else { rel },
        max_abs,
        top1: tie_aware as f64 / rows.max(1) as f64,
        top1_strict: strict as f64 / rows.max(1) as f64,
        rows,
    }
}
