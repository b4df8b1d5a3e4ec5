//! Every op of an executor under test (the GPU, for `fwdbench kernel check`) against the
//! CPU reference, one op at a time, on random data.
//!
//! Both sides hold identical bf16-rounded random weights. Before op `i` the CPU's
//! current activations (rounded to bf16) and KV caches are written into the tested
//! executor, the op's outputs are poisoned with NaN, the tested executor runs op `i`
//! alone and the CPU runs it from the same inputs; the outputs are compared. So each
//! kernel is checked on its own, on realistic inputs, and unwritten elements (NaN)
//! always fail.

use serde::Serialize;

use super::compare::{compare, BF16_TOL, ROUTE_TOL};
use crate::exec::cpu::{load_weights, CpuRun, KvCaches};
use crate::exec::Executor;
use crate::plan::{DType, Op, Plan};
use crate::weights::RandomWeights;

#[derive(Debug, Clone, Serialize)]
pub struct OpCheck {
    pub index: usize,
    pub name: String,
    pub kind: &'static str,
    pub rel_l2: f64,
    pub max_abs: f64,
    pub nan: bool,
    pub pass: bool,
}

fn bf16_round(v: &mut [f32]) {
    v.iter_mut().for_each(|x| *x = half::bf16::from_f32(*x).to_f32());
}

/// The worst agreement over the pairs (got, want) of one op.
#[derive(Default)]
struct Worst {
    rel_l2: f64,
    max_abs: f64,
    nan: bool,
}

impl Worst {
    fn add(&mut self, got: &[f32], want: &[f32], cols: usize) {
        let a = compare(got, want, cols.max(1));
        self.nan |= got.iter().any(|v| v.is_nan());
        self.rel_l2 = self.rel_l2.max(a.rel_l2);
        self.max_abs = self.max_abs.max(a.max_abs);
    }
    /// Expert ids are exact; a flipped near-tie is tolerated on 1% of rows.
    fn add_ids(&mut self, got: &[f32], want: &[f32], rows: usize, cols: usize) {
        let (rows, cols) = (rows.max(1), cols.max(1));
        let same = got.chunks(cols).zip(want.chunks(cols)).filter(|(g, w)| g == w).count();
        self.nan |= got.iter().any(|v| v.is_nan());
        let err = if same * 100 >= rows * 99 { 0.0 } else { 1.0 - same as f64 / rows as f64 };
        self.rel_l2 = self.rel_l2.max(err);
    }
}

/// Checks every op of each step's plan in turn on `dut` (a prefill then a decode shares
/// the KV caches); `steps[p].1` are plan p's input ids, one row per sequence. The CPU
/// side draws its weights from `RandomWeights { seed }`, which `dut` must hold too.
pub fn check_ops(dut: &mut dyn Executor, seed: u64, steps: &[(Plan, Vec<Vec<i32>>)]) -> anyhow::Result<Vec<OpCheck>> {
    let src = RandomWeights { seed };
    let mut cpu_caches = KvCaches::default();
    let mut results = Vec::new();
    for (plan, ids) in steps {
        let cpu_w = load_weights(plan, &src, true)?;
        dut.bind(vec![plan.clone()])?;
        let mut cpu = CpuRun::new(plan, &cpu_w, None);
        cpu_caches.ensure(&plan.caches);
        let flat: Vec<f32> = ids.iter().flatten().map(|&i| i as f32).collect();
        cpu.write(plan.full(plan.input_ids), &flat);
        dut.set_ids(ids)?;
        for i in 0..plan.ops.len() {
            results.push(check_op(dut, &mut cpu, &mut cpu_caches, i)?);
        }
    }
    Ok(results)
}

/// Checks op `i` of `cpu`'s plan (bound to `dut` too, ids set) from the CPU's current
/// activations and caches: its inputs and caches are mirrored into `dut`, its outputs
/// poisoned, both sides run it, and `cpu` moves on past it.
pub fn check_op(
    dut: &mut dyn Executor,
    cpu: &mut CpuRun,
    cpu_caches: &mut KvCaches,
    i: usize,
) -> anyhow::Result<OpCheck> {
    let plan = cpu.plan;
    let op = &plan.ops[i].op;
    let inputs = op.inputs();
    for &id in &inputs {
        if plan.tensor(id).dtype == DType::BF16 {
            bf16_round(&mut cpu.acts[id.0]);
        }
        dut.write_tensor(id, &cpu.acts[id.0])?;
    }
    // Only ops that touch a KV cache need the CPU's caches mirrored first.
    if matches!(
        op,
        Op::KvCacheWrite { .. } | Op::Attention { .. } | Op::MlaCacheWrite { .. } | Op::MlaDecodeAttention { .. }
    ) {
        cpu_caches.k.iter_mut().chain(cpu_caches.v.iter_mut()).for_each(|c| bf16_round(c));
        dut.write_caches(cpu_caches)?;
    }
    for id in op.outputs() {
        if !inputs.contains(&id) {
            dut.poison(id)?;
        }
    }
    cpu.run_op(i, cpu_caches);
    dut.run_op(i)?;
    let mut worst = Worst::default();
    for id in op.outputs() {
        let got = dut.read_tensor(id)?;
        let t = plan.tensor(id);
        if t.dtype == DType::I32 {
            worst.add_ids(&got, &cpu.acts[id.0], t.rows, t.cols);
        } else {
            worst.add(&got, &cpu.acts[id.0], t.cols);
        }
    }
    // Cache writes are checked on the cache itself.
    if let Op::KvCacheWrite { cache, .. } | Op::MlaCacheWrite { cache, .. } = op {
        let (k, v) = dut.read_cache(cache.0)?;
        worst.add(&k, &cpu_caches.k[cache.0], k.len());
        if !v.is_empty() {
            worst.add(&v, &cpu_caches.v[cache.0], v.len());
        }
    }
    let tol = if matches!(op, Op::Route { .. }) { ROUTE_TOL } else { BF16_TOL };
    let site = &plan.ops[i].site;
    Ok(OpCheck {
        index: i,
        name: site.name.clone() + &site.layer.map(|l| format!("@{l}")).unwrap_or_default(),
        kind: op.kind_name(),
        rel_l2: worst.rel_l2,
        max_abs: worst.max_abs,
        nan: worst.nan,
        pass: !worst.nan && worst.rel_l2 <= tol,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::hf::load_model_config;
    use crate::config::model::ModelConfig;
    use crate::exec::cpu::run::CpuExecutor;
    use crate::exec::Logits;
    use crate::model::{build_plan, PlanOptions};
    use crate::plan::{RankLayout, Shape, TensorId};

    const SEED: u64 = 7;

    /// The CPU reference with one op kind never run: its outputs stay poisoned.
    struct Skipping<'a> {
        inner: CpuExecutor<'a>,
        kind: &'static str,
    }

    impl Executor for Skipping<'_> {
        fn layouts(&self) -> &[RankLayout] {
            self.inner.layouts()
        }
        fn bind(&mut self, plans: Vec<Plan>) -> anyhow::Result<()> {
            self.inner.bind(plans)
        }
        fn plan(&self) -> &Plan {
            self.inner.plan()
        }
        fn set_ids(&mut self, ids: &[Vec<i32>]) -> anyhow::Result<()> {
            self.inner.set_ids(ids)
        }
        fn forward(&mut self) -> anyhow::Result<()> {
            self.inner.forward()
        }
        fn logits(&self) -> anyhow::Result<Logits> {
            self.inner.logits()
        }
        fn read_tensor(&self, id: TensorId) -> anyhow::Result<Vec<f32>> {
            self.inner.read_tensor(id)
        }
        fn write_tensor(&mut self, id: TensorId, values: &[f32]) -> anyhow::Result<()> {
            self.inner.write_tensor(id, values)
        }
        fn poison(&mut self, id: TensorId) -> anyhow::Result<()> {
            self.inner.poison(id)
        }
        fn run_op(&mut self, i: usize) -> anyhow::Result<()> {
            if self.inner.plan().ops[i].op.kind_name() == self.kind {
                return Ok(());
            }
            self.inner.run_op(i)
        }
        fn write_caches(&mut self, caches: &KvCaches) -> anyhow::Result<()> {
            self.inner.write_caches(caches)
        }
        fn read_cache(&self, cache: usize) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
            self.inner.read_cache(cache)
        }
    }

    fn config(fixture: &str) -> ModelConfig {
        load_model_config(&Path::new("tests/fixtures").join(fixture).join("config.json"), &[]).unwrap()
    }

    /// A prefill of 2 x 5 tokens, then a decode step over them, as `kernel check` runs.
    fn steps(cfg: &ModelConfig) -> Vec<(Plan, Vec<Vec<i32>>)> {
        let opts = PlanOptions { all_logits: false, cache_len: Some(6) };
        let ids = crate::inputs::random_ids(2, 6, cfg.vocab_size, SEED);
        let plan = |shape| build_plan(cfg, RankLayout::single(), shape, opts).unwrap();
        vec![
            (plan(Shape::prefill(2, 5)), ids.iter().map(|r| r[..5].to_vec()).collect()),
            (plan(Shape::decode(2, 5)), ids.iter().map(|r| r[5..].to_vec()).collect()),
        ]
    }

    #[test]
    fn the_cpu_reference_passes_against_itself() {
        // MLA + MoE with cache writes, and GQA + routed experts with expert ids.
        for fixture in ["deepseek_v3", "qwen3_moe"] {
            let cfg = config(fixture);
            let steps = steps(&cfg);
            let src = RandomWeights { seed: SEED };
            let mut dut = CpuExecutor::new(&cfg, vec![RankLayout::single()], &src, true);
            let results = check_ops(&mut dut, SEED, &steps).unwrap();
            assert_eq!(results.len(), steps.iter().map(|(p, _)| p.ops.len()).sum::<usize>());
            for r in &results {
                assert!(r.pass && r.rel_l2 < 1e-6, "{fixture}: {r:?}");
            }
        }
    }

    #[test]
    fn an_op_that_writes_nothing_fails_as_unwritten() {
        let cfg = config("qwen3");
        let steps = steps(&cfg);
        let src = RandomWeights { seed: SEED };
        let mut dut = Skipping { inner: CpuExecutor::new(&cfg, vec![RankLayout::single()], &src, true), kind: "norm" };
        let results = check_ops(&mut dut, SEED, &steps).unwrap();
        let failed: Vec<&OpCheck> = results.iter().filter(|r| !r.pass).collect();
        assert!(!failed.is_empty());
        assert!(failed.iter().all(|r| r.kind == "norm" && r.nan), "{failed:?}");
        assert_eq!(failed.len(), results.iter().filter(|r| r.kind == "norm").count());
    }
}
