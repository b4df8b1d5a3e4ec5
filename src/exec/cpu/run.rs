//! Runs a (possibly sharded) model on the CPU: one thread per simulated rank, each with
//! its own plan, weights and KV caches, joined by an in-process communicator.

use thiserror::Error;

use super::{load_weights, CpuRun, KvCaches};
use crate::config::model::ModelConfig;
use crate::dist::thread_comm::ThreadComm;
use crate::model::{build_plan, PlanError, PlanOptions};
use crate::plan::{RankLayout, Shape};
use crate::weights::{WeightError, WeightSource};

#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error("input has {got} sequences of {len} tokens; the shape needs {batch} of {need}")]
    Input { got: usize, len: usize, batch: usize, need: usize },
}

/// Logits of one forward: `[sequence][row][vocab]`, rows as the plan computes them
/// (every new token, or the last one of each prefill sequence).
pub type Logits = Vec<Vec<Vec<f32>>>;

/// One rank's share: its first sequence, its logits and which (sequence, position) each row is.
type RankLogits = (usize, Vec<f32>, Vec<(usize, usize)>);

/// A model sharded over threads; keeps each rank's KV caches between forwards.
pub struct CpuModel<'a> {
    pub cfg: &'a ModelConfig,
    pub layouts: Vec<RankLayout>,
    pub caches: Vec<KvCaches>,
    /// Round weights to bf16 (what a GPU holds); off for fp32 checkpoints.
    pub round_bf16: bool,
}

impl<'a> CpuModel<'a> {
    pub fn new(cfg: &'a ModelConfig, layouts: Vec<RankLayout>, round_bf16: bool) -> Self {
        let caches = vec![KvCaches::default(); layouts.len()];
        CpuModel { cfg, layouts, caches, round_bf16 }
    }

    /// `tokens[s]` are sequence s's new tokens for this forward.
    pub fn forward(
        &mut self,
        shape: Shape,
        opts: PlanOptions,
        src: &dyn WeightSource,
        tokens: &[Vec<i32>],
    ) -> Result<Logits, RunError> {
        let need = shape.new_tokens_per_seq();
        if tokens.len() != shape.batch || tokens.iter().any(|t| t.len() != need) {
            let len = tokens.first().map(|t| t.len()).unwrap_or(0);
            return Err(RunError::Input { got: tokens.len(), len, batch: shape.batch, need });
        }
        let comms = ThreadComm::group(self.layouts.len());
        let cfg = self.cfg;
        let round = self.round_bf16;
        let results: Vec<Result<Option<RankLogits>, RunError>> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .layouts
                .iter()
                .zip(self.caches.iter_mut())
                .zip(comms.iter())
                .map(|((layout, caches), comm)| {
                    s.spawn(move || {
                        let plan = build_plan(cfg, *layout, shape, opts)?;
                        let weights = load_weights(&plan, src, round)?;
                        let ids: Vec<i32> = tokens[plan.first_sequence..plan.first_sequence + plan.local_batch]
                            .iter()
                            .flatten()
                            .copied()
                            .collect();
                        let mut run = CpuRun::new(&plan, &weights, Some(comm));
                        let logits = run.forward(&ids, caches);
                        // Every rank of an attention-TP group holds the same logits.
                        Ok((layout.attn_tp_rank() == 0).then_some((
                            plan.first_sequence,
                            logits,
                            plan.logit_rows.clone(),
                        )))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("rank thread panicked")).collect()
        });
        let vocab = cfg.vocab_size;
        let mut out: Logits = vec![Vec::new(); shape.batch];
        for r in results {
            if let Some((first, logits, rows)) = r? {
                for (row, (seq, _)) in logits.chunks(vocab).zip(rows) {
                    out[first + seq].push(row.to_vec());
                }
            }
        }
        Ok(out)
    }
}
