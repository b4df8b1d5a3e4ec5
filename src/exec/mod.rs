//! Executors of forward plans: a CPU reference (the test oracle) and the CUDA engine,
//! both behind one `Executor` interface so that a checking protocol (`crate::check`) is
//! written once and runs on either.

pub mod cpu;
pub mod cuda;

use crate::config::model::ModelConfig;
use crate::model::{build_plan, PlanOptions};
use crate::plan::{Plan, RankLayout, Shape, TensorId};
use cpu::KvCaches;

/// Logits of one forward: `[sequence][row][vocab]`, rows as the plan computes them
/// (every new token, or the last one of each prefill sequence).
pub type Logits = Vec<Vec<Vec<f32>>>;

/// A model bound to a device: plans with their weights, activations and KV caches.
///
/// A bind keeps the KV caches of the previous bind when the new plans use the same
/// caches, so a decode plan bound after a prefill reads what the prefill wrote. The
/// op-level methods (`write_tensor` .. `read_cache`) address rank 0 and serve per-op
/// checks of single-rank plans.
pub trait Executor {
    /// The ranks this executor runs; `bind` takes one plan for each, in this order.
    fn layouts(&self) -> &[RankLayout];
    /// Makes `plans` runnable: weights resident, activations allocated, caches attached.
    fn bind(&mut self, plans: Vec<Plan>) -> anyhow::Result<()>;
    /// Rank 0's bound plan. Panics before the first bind.
    fn plan(&self) -> &Plan;
    /// `ids[s]` are sequence s's new tokens (the bound shape's batch, all the same length).
    fn set_ids(&mut self, ids: &[Vec<i32>]) -> anyhow::Result<()>;
    /// Runs the whole forward on every rank and waits for it.
    fn forward(&mut self) -> anyhow::Result<()>;
    /// The logits of the last forward, gathered over ranks.
    fn logits(&self) -> anyhow::Result<Logits>;
    /// A whole activation of rank 0 in f32 (bf16 widened, i32 converted).
    fn read_tensor(&self, id: TensorId) -> anyhow::Result<Vec<f32>>;
    /// Overwrites a whole activation of rank 0, converting to its dtype.
    fn write_tensor(&mut self, id: TensorId, values: &[f32]) -> anyhow::Result<()>;
    /// Fills an activation with NaN, so that elements an op leaves unwritten show up.
    fn poison(&mut self, id: TensorId) -> anyhow::Result<()>;
    /// Runs op `i` of rank 0's plan alone and waits for it.
    fn run_op(&mut self, i: usize) -> anyhow::Result<()>;
    /// Overwrites rank 0's KV caches with `caches` (the layout of the bound plan).
    fn write_caches(&mut self, caches: &KvCaches) -> anyhow::Result<()>;
    /// Rank 0's cache `cache` as (K, V) in f32; V is empty for a latent (MLA) cache.
    fn read_cache(&self, cache: usize) -> anyhow::Result<(Vec<f32>, Vec<f32>)>;
}

/// Builds the plan of `shape` for every rank of `exec` and binds them.
pub fn bind_shape(exec: &mut dyn Executor, cfg: &ModelConfig, shape: Shape, opts: PlanOptions) -> anyhow::Result<()> {
    let plans = exec.layouts().iter().map(|l| build_plan(cfg, *l, shape, opts)).collect::<Result<Vec<_>, _>>()?;
    exec.bind(plans)
}
