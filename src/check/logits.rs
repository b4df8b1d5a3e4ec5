//! The logits protocol of `fwdbench check`: a forward on given ids, compared with
//! expected logits (HF or reference fixtures), either a prefill at every position or one
//! decode step after a prefill of all but the last token.

use crate::config::model::ModelConfig;
use crate::exec::cpu::run::CpuExecutor;
use crate::exec::{bind_shape, Executor, Logits};
use crate::model::PlanOptions;
use crate::plan::{RankLayout, Shape};
use crate::weights::WeightSource;

/// What a check computes: every prefill position, or the last position via one decode step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckMode {
    Prefill,
    Decode,
}

/// Runs `ids` `[batch][seq]` on `exec` and returns the logits to compare with
/// `expected[b][s]`: all positions (prefill) or only the last one (decode, after a
/// prefill of the others into the executor's KV caches).
pub fn logits(exec: &mut dyn Executor, cfg: &ModelConfig, ids: &[Vec<i32>], mode: CheckMode) -> anyhow::Result<Logits> {
    let (batch, seq) = (ids.len(), ids[0].len());
    let steps: Vec<(Shape, PlanOptions, Vec<Vec<i32>>)> = match mode {
        CheckMode::Prefill => {
            vec![(Shape::prefill(batch, seq), PlanOptions { all_logits: true, cache_len: None }, ids.to_vec())]
        }
        CheckMode::Decode => {
            let opts = PlanOptions { all_logits: false, cache_len: Some(seq) };
            let mut steps = Vec::new();
            if seq > 1 {
                steps.push((Shape::prefill(batch, seq - 1), opts, ids.iter().map(|r| r[..seq - 1].to_vec()).collect()));
            }
            steps.push((Shape::decode(batch, seq - 1), opts, ids.iter().map(|r| r[seq - 1..].to_vec()).collect()));
            steps
        }
    };
    let mut out = Vec::new();
    for (shape, opts, step_ids) in steps {
        bind_shape(exec, cfg, shape, opts)?;
        exec.set_ids(&step_ids)?;
        exec.forward()?;
        out = exec.logits()?;
    }
    Ok(out)
}

/// The protocol on the CPU reference, with the checkpoint's weights as they are.
pub fn cpu_logits(
    cfg: &ModelConfig,
    layouts: Vec<RankLayout>,
    src: &dyn WeightSource,
    ids: &[Vec<i32>],
    mode: CheckMode,
) -> anyhow::Result<Logits> {
    logits(&mut CpuExecutor::new(cfg, layouts, src, false), cfg, ids, mode)
}

/// The protocol on GPU 0, with the checkpoint's weights in bf16.
pub fn cuda_logits(
    cfg: &ModelConfig,
    layouts: &[RankLayout],
    src: &dyn WeightSource,
    ids: &[Vec<i32>],
    mode: CheckMode,
) -> anyhow::Result<Logits> {
    crate::bench::memory::cuda_check(cfg, layouts, src, ids, mode).map(|(l, _)| l)
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
