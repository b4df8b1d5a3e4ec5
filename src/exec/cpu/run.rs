//! Runs a (possibly sharded) model on the CPU: one thread per simulated rank, each with
//! its own plan, weights and KV caches, joined by an in-process communicator.
//! `CpuExecutor` is the CPU side of `exec::Executor`; `CpuModel` is the one-call form
//! (bind a shape, run it, return its logits) the consistency tests use.

use anyhow::ensure;
use thiserror::Error;

use super::{load_weights, CpuRun, KvCaches};
use crate::config::model::ModelConfig;
use crate::dist::thread_comm::ThreadComm;
use crate::exec::{bind_shape, Executor, Logits};
use crate::model::{PlanError, PlanOptions};
use crate::plan::{Plan, RankLayout, Shape, TensorId};
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

/// One rank's bound plan: its weights, its activations (kept after a forward, so they
/// can be read back) and its share of the input ids and logits.
struct RankRun {
    plan: Plan,
    weights: Vec<Vec<f32>>,
    acts: Vec<Vec<f32>>,
    ids: Vec<i32>,
    logits: Vec<f32>,
}

impl RankRun {
    /// Runs `f` on a `CpuRun` that holds this rank's activations.
    fn with_run<R>(
        &mut self,
        comm: Option<&ThreadComm>,
        caches: &mut KvCaches,
        f: impl FnOnce(&mut CpuRun, &mut KvCaches) -> R,
    ) -> R {
        let mut run = CpuRun::new(&self.plan, &self.weights, comm);
        run.acts = std::mem::take(&mut self.acts);
        let out = f(&mut run, caches);
        self.acts = run.acts;
        out
    }
}

/// The CPU reference behind `Executor`: weights from `src` (rounded to bf16 when
/// `round_bf16`, what a GPU holds; off for fp32 checkpoints).
pub struct CpuExecutor<'a> {
    cfg: &'a ModelConfig,
    layouts: Vec<RankLayout>,
    src: &'a dyn WeightSource,
    round_bf16: bool,
    caches: Vec<KvCaches>,
    ranks: Vec<RankRun>,
}

impl<'a> CpuExecutor<'a> {
    pub fn new(cfg: &'a ModelConfig, layouts: Vec<RankLayout>, src: &'a dyn WeightSource, round_bf16: bool) -> Self {
        let caches = vec![KvCaches::default(); layouts.len()];
        CpuExecutor { cfg, layouts, src, round_bf16, caches, ranks: Vec::new() }
    }

    pub fn bind_plans(&mut self, plans: Vec<Plan>) -> Result<(), RunError> {
        assert_eq!(plans.len(), self.layouts.len(), "one plan per rank");
        self.ranks.clear();
        for (plan, caches) in plans.into_iter().zip(self.caches.iter_mut()) {
            let weights = load_weights(&plan, self.src, self.round_bf16)?;
            caches.ensure(&plan.caches);
            let acts = plan.tensors.iter().map(|t| vec![0.0; t.rows * t.cols]).collect();
            self.ranks.push(RankRun { plan, weights, acts, ids: Vec::new(), logits: Vec::new() });
        }
        Ok(())
    }

    /// `tokens[s]` are sequence s's new tokens for this forward.
    pub fn set_tokens(&mut self, tokens: &[Vec<i32>]) -> Result<(), RunError> {
        let shape = self.plan().shape;
        let need = shape.new_tokens_per_seq();
        if tokens.len() != shape.batch || tokens.iter().any(|t| t.len() != need) {
            let len = tokens.first().map(|t| t.len()).unwrap_or(0);
            return Err(RunError::Input { got: tokens.len(), len, batch: shape.batch, need });
        }
        for rank in &mut self.ranks {
            let (first, n) = (rank.plan.first_sequence, rank.plan.local_batch);
            rank.ids = tokens[first..first + n].iter().flatten().copied().collect();
            let input = rank.plan.input_ids.0;
            rank.acts[input] = rank.ids.iter().map(|&i| i as f32).collect();
        }
        Ok(())
    }

    /// Every rank's forward, each on its own thread.
    pub fn run(&mut self) {
        let comms = ThreadComm::group(self.ranks.len());
        std::thread::scope(|s| {
            for ((rank, caches), comm) in self.ranks.iter_mut().zip(self.caches.iter_mut()).zip(comms.iter()) {
                s.spawn(move || {
                    let ids = std::mem::take(&mut rank.ids);
                    rank.logits = rank.with_run(Some(comm), caches, |run, caches| run.forward(&ids, caches));
                    rank.ids = ids;
                });
            }
        });
    }

    pub fn gathered_logits(&self) -> Logits {
        let vocab = self.cfg.vocab_size;
        let mut out: Logits = vec![Vec::new(); self.plan().shape.batch];
        // Every rank of an attention-TP group holds the same logits: take them from one.
        for rank in self.ranks.iter().filter(|r| r.plan.layout.attn_tp_rank() == 0) {
            for (row, (seq, _)) in rank.logits.chunks(vocab).zip(&rank.plan.logit_rows) {
                out[rank.plan.first_sequence + seq].push(row.to_vec());
            }
        }
        out
    }

    fn rank0(&mut self) -> anyhow::Result<&mut RankRun> {
        ensure!(self.ranks.len() == 1, "op-level access needs a single-rank plan ({} ranks bound)", self.ranks.len());
        Ok(&mut self.ranks[0])
    }
}

impl Executor for CpuExecutor<'_> {
    fn layouts(&self) -> &[RankLayout] {
        &self.layouts
    }
    fn bind(&mut self, plans: Vec<Plan>) -> anyhow::Result<()> {
        Ok(self.bind_plans(plans)?)
    }
    fn plan(&self) -> &Plan {
        &self.ranks.first().expect("bind a plan first").plan
    }
    fn set_ids(&mut self, ids: &[Vec<i32>]) -> anyhow::Result<()> {
        Ok(self.set_tokens(ids)?)
    }
    fn forward(&mut self) -> anyhow::Result<()> {
        self.run();
        Ok(())
    }
    fn logits(&self) -> anyhow::Result<Logits> {
        Ok(self.gathered_logits())
    }
    fn read_tensor(&self, id: TensorId) -> anyhow::Result<Vec<f32>> {
        Ok(self.ranks.first().expect("bind a plan first").acts[id.0].clone())
    }
    fn write_tensor(&mut self, id: TensorId, values: &[f32]) -> anyhow::Result<()> {
        let act = &mut self.rank0()?.acts[id.0];
        ensure!(act.len() == values.len(), "tensor {} holds {} values, not {}", id.0, act.len(), values.len());
        act.copy_from_slice(values);
        Ok(())
    }
    fn poison(&mut self, id: TensorId) -> anyhow::Result<()> {
        self.rank0()?.acts[id.0].fill(f32::NAN);
        Ok(())
    }
    fn run_op(&mut self, i: usize) -> anyhow::Result<()> {
        let mut caches = std::mem::take(&mut self.caches[0]);
        self.rank0()?.with_run(None, &mut caches, |run, caches| run.run_op(i, caches));
        self.caches[0] = caches;
        Ok(())
    }
    fn write_caches(&mut self, caches: &KvCaches) -> anyhow::Result<()> {
        self.caches[0] = caches.clone();
        Ok(())
    }
    fn read_cache(&self, cache: usize) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
        Ok((self.caches[0].k[cache].clone(), self.caches[0].v[cache].clone()))
    }
}

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
    ) -> anyhow::Result<Logits> {
        let mut exec = CpuExecutor::new(self.cfg, self.layouts.clone(), src, self.round_bf16);
        exec.caches = std::mem::take(&mut self.caches);
        let result = bind_shape(&mut exec, self.cfg, shape, opts).and_then(|()| {
            exec.set_tokens(tokens)?;
            exec.run();
            Ok(exec.gathered_logits())
        });
        self.caches = exec.caches;
        result
    }
}
