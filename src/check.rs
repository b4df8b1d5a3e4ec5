//! Logits comparison for `fwdbench check`: a forward on given ids against expected logits
//! (HF or reference fixtures), prefill at every position or one decode step after a
//! prefill of all but the last token.

use serde::Serialize;

use crate::config::model::ModelConfig;
use crate::exec::cpu::run::{CpuModel, Logits, RunError};
use crate::model::PlanOptions;
use crate::plan::{RankLayout, Shape};
use crate::weights::WeightSource;

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

/// What a check computes: every prefill position, or the last position via one decode step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckMode {
    Prefill,
    Decode,
}

/// Runs the CPU reference on `ids` `[batch][seq]` and returns the logits to compare with
/// `expected[b][s]`: all positions (prefill) or only the last one (decode).
pub fn cpu_logits(
    cfg: &ModelConfig,
    layouts: Vec<RankLayout>,
    src: &dyn WeightSource,
    ids: &[Vec<i32>],
    mode: CheckMode,
) -> Result<Logits, RunError> {
    let (batch, seq) = (ids.len(), ids[0].len());
    let mut model = CpuModel::new(cfg, layouts, false);
    match mode {
        CheckMode::Prefill => {
            model.forward(Shape::prefill(batch, seq), PlanOptions { all_logits: true, cache_len: None }, src, ids)
        }
        CheckMode::Decode => {
            let opts = PlanOptions { all_logits: false, cache_len: Some(seq) };
            if seq > 1 {
                let head: Vec<Vec<i32>> = ids.iter().map(|r| r[..seq - 1].to_vec()).collect();
                model.forward(Shape::prefill(batch, seq - 1), opts, src, &head)?;
            }
            let last: Vec<Vec<i32>> = ids.iter().map(|r| r[seq - 1..].to_vec()).collect();
            model.forward(Shape::decode(batch, seq - 1), opts, src, &last)
        }
    }
}

/// The expected rows matching `mode` out of `[batch, seq, vocab]` logits.
pub fn expected_rows(expected: &[f32], batch: usize, seq: usize, vocab: usize, mode: CheckMode) -> Vec<f32> {
    match mode {
        CheckMode::Prefill => expected.to_vec(),
        CheckMode::Decode => (0..batch)
            .flat_map(|b| expected[(b * seq + seq - 1) * vocab..(b * seq + seq) * vocab].iter().copied())
            .collect(),
    }
}
