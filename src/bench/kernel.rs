//! One op through the production path (`fwdbench kernel check/bench`): its one-op plan
//! (`Plan::extract_op`) binds through `CudaExecutor`, the same prepare code as `run`; it
//! is checked against the CPU reference on random inputs with poisoned outputs
//! (`check::ops::check_op`) and timed with `timing::time_iterations`, events around its
//! calls only, against the roofline of its FLOPs and minimum bytes (`plan::cost`).

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use super::timing::{flush_buffer, time_iterations, time_parts};
use crate::check::ops::{check_op, OpCheck};
use crate::config::knobs;
use crate::config::model::ModelConfig;
use crate::exec::cpu::{load_weights, CpuRun, KvCaches};
use crate::exec::cuda::executor::CudaExecutor;
use crate::exec::Executor;
use crate::model::{build_plan, PlanOptions};
use crate::plan::cost::{moe_cost_from_counts, op_cost, ExpertLoad, OpCost};
use crate::plan::memory::{fits, plan_memory, Target};
use crate::plan::{gemm_plan, ExpertChoice, Op, OpQuery, Plan, RankLayout, RoutingMode, Shape, TensorId};
use crate::report::{Stats, COPY_GBS, PEAK_TFLOPS};
use crate::weights::rng;
use crate::weights::RandomWeights;

/// The CPU check is skipped above these (stated in the output and the CSV): the f32
/// reference runs near 1 GFLOP/s per core in its attention loops, and a full-size MoE layer
/// (11 G weight values, 2.9 TFLOP at 4096 tokens) would take minutes and tens of GB.
pub const CPU_CHECK_MAX_GFLOP: f64 = 4.0;
/// Weight and KV-cache values the CPU check may materialise in f32 (1 GiB).
pub const CPU_CHECK_MAX_VALUES: usize = 1 << 28;

/// One op to check and time: its one-op plan and the labels of its report row.
#[derive(Debug, Clone)]
pub struct OpCase {
    /// Row key, the same in the peers' CSV (`python/reference/kernel_peers.py`).
    pub case: String,
    pub model: String,
    pub plan: Plan,
    /// The model's routed expert count (the cost model's MoE share); 0 without MoE.
    pub experts: usize,
    /// Token ids are drawn from `[0, vocab)` (embedding).
    pub vocab: usize,
    /// `--routing`: a route op's choice, and how a lone `moe` op's expert ids are drawn.
    pub routing: ExpertChoice,
    /// Seed of the random inputs (the expert ids among them, which the cost counts).
    pub seed: u64,
}

impl OpCase {
    /// The op `query` names in the plan `run` builds for `layout` at `shape`.
    pub fn from_model(
        case: String,
        model: &str,
        cfg: &ModelConfig,
        layout: RankLayout,
        shape: Shape,
        query: &OpQuery,
    ) -> anyhow::Result<OpCase> {
        let full = build_plan(cfg, layout, shape, PlanOptions::default())?;
        let index = full.find_op(query)?;
        Ok(OpCase {
            case,
            model: model.to_string(),
            plan: full.extract_op(index),
            experts: cfg.moe.as_ref().map(|m| m.num_experts).unwrap_or(0),
            vocab: cfg.vocab_size,
            routing: ExpertChoice::Router,
            seed: 1,
        })
    }

    /// The case under `--routing mode` with inputs drawn from `seed`.
    pub fn with_routing(mut self, mode: RoutingMode, seed: u64) -> Self {
        self.plan.set_routing(mode, seed);
        self.routing = mode.choice(seed, self.plan.layout.ep);
        self.seed = seed;
        self
    }

    /// `out [m, n] = x [m, k] . W^T`, one cuBLASLt GEMM.
    pub fn gemm(case: String, m: usize, n: usize, k: usize) -> OpCase {
        let plan = gemm_plan(m, n, k);
        OpCase { case, model: "gemm".into(), plan, experts: 0, vocab: 1, routing: ExpertChoice::Router, seed: 1 }
    }

    pub fn op(&self) -> &Op {
        &self.plan.ops[0].op
    }

    /// FLOPs and bytes; a lone `moe` op's from the experts its input ids touch.
    pub fn cost(&self) -> OpCost {
        match self.expert_load() {
            Some(load) => moe_cost_from_counts(&self.plan, self.op(), &load.layers[0]),
            None => op_cost(&self.plan, self.op(), self.experts),
        }
    }

    /// A lone `moe` op's routing: the tokens each expert receives from its input ids.
    pub fn expert_load(&self) -> Option<ExpertLoad> {
        let Op::Moe { ids, top_k, experts_total, .. } = self.op() else { return None };
        let t = self.plan.tensor(ids.id);
        let values = moe_ids(self.routing, t.rows, *top_k, *experts_total, rng::tensor_seed(self.seed, &t.name));
        Some(ExpertLoad { layers: vec![ExpertLoad::count_layer(&values, *experts_total)] })
    }

    /// The op's site, `name@layer`.
    pub fn site(&self) -> String {
        let s = &self.plan.ops[0].site;
        s.name.clone() + &s.layer.map(|l| format!("@{l}")).unwrap_or_default()
    }

    /// The problem sizes a peer needs to time the same work (`key=value`, space separated).
    pub fn dims(&self) -> String {
        let p = &self.plan;
        let (b, sq, skv) = (p.local_batch, p.shape.new_tokens_per_seq(), p.shape.context());
        match self.op() {
            Op::Attention { q_heads, k_heads, v_heads, d_qk, d_v, softcap, .. } => format!(
                "b={b} sq={sq} skv={skv} hq={q_heads} hk={k_heads} hv={v_heads} dqk={d_qk} dv={d_v} causal=1 softcap={}",
                softcap.unwrap_or(0.0)
            ),
            Op::MlaPrefillAttention { heads, d_nope, d_rope, d_v, .. } => format!(
                "b={b} sq={sq} skv={skv} hq={heads} hk={heads} hv={heads} dqk={} dv={d_v} causal=1 softcap=0",
                d_nope + d_rope
            ),
            Op::MlaDecodeAttention { heads, kv_lora_rank, d_rope, .. } => {
                format!("b={b} sq={sq} skv={skv} h={heads} dl={kv_lora_rank} dr={d_rope}")
            }
            Op::Moe { x, w2, local_experts, top_k, inter, expert_start, experts_total, .. } => format!(
                "t={} h={} i={inter} e={local_experts} first={expert_start} etotal={experts_total} k={top_k}",
                p.rows(*x),
                p.weight(*w2).rows
            ),
            Op::Linear { x, weight, .. } => {
                let w = p.weight(*weight);
                format!("m={} n={} k={}", p.rows(*x), w.rows, w.cols)
            }
            _ => String::new(),
        }
    }

    /// Random token ids, one row per sequence (embedding reads them).
    pub fn ids(&self, seed: u64) -> Vec<Vec<i32>> {
        let s = self.plan.shape;
        crate::inputs::random_ids(s.batch, s.new_tokens_per_seq(), self.vocab.max(1), seed)
    }

    /// Why the CPU reference would cost too much for this op, if it would.
    pub fn cpu_check_skip(&self) -> Option<String> {
        let gflop = self.cost().flops / 1e9;
        let values: usize = self.plan.weights.iter().map(|w| w.numel()).sum::<usize>()
            + self.plan.caches.iter().map(|c| c.bytes() / 2).sum::<usize>();
        if gflop > CPU_CHECK_MAX_GFLOP {
            Some(format!("CPU reference would cost {gflop:.1} GFLOP, over the {CPU_CHECK_MAX_GFLOP} GFLOP budget"))
        } else if values > CPU_CHECK_MAX_VALUES {
            Some(format!(
                "CPU reference would hold {:.2} G weight/cache values, over the {:.2} G budget",
                values as f64 / 1e9,
                CPU_CHECK_MAX_VALUES as f64 / 1e9
            ))
        } else {
            None
        }
    }
}

/// Random values for every input the op reads: N(0, 1)-like activations, expert ids per the
/// case's routing (the router's choice has no router in a lone `moe` op, so `model` draws
/// `top_k` distinct experts per token uniformly, as `uniform` does with the route op's
/// draws; `balanced` gives each expert its share), positive routing weights.
/// Deterministic in the case's seed.
pub fn random_inputs(case: &OpCase) -> Vec<(TensorId, Vec<f32>)> {
    let (plan, seed) = (&case.plan, case.seed);
    let op = &plan.ops[0].op;
    op.inputs()
        .into_iter()
        .map(|id| {
            let t = plan.tensor(id);
            let key = rng::tensor_seed(seed, &t.name);
            let n = t.rows * t.cols;
            let values = match op {
                Op::Moe { ids, top_k, experts_total, .. } if ids.id == id => {
                    moe_ids(case.routing, t.rows, *top_k, *experts_total, key)
                }
                Op::Moe { weights, .. } if weights.id == id => {
                    (0..n).map(|i| 0.05 + rng::unit_value(key, i as u64).abs() / 4.0).collect()
                }
                _ => (0..n).map(|i| rng::unit_value(key, i as u64)).collect(),
            };
            (id, values)
        })
        .collect()
}

/// A lone `moe` op's expert ids under `choice` (see [`random_inputs`]).
fn moe_ids(choice: ExpertChoice, tokens: usize, top_k: usize, experts: usize, key: u64) -> Vec<f32> {
    if choice == ExpertChoice::Router {
        return expert_ids(tokens, top_k, experts, key);
    }
    let mut ids = vec![0; tokens * top_k];
    crate::exec::cpu::ops::replace_choice(&mut ids, top_k, experts, choice);
    ids.into_iter().map(|e| e as f32).collect()
}

fn expert_ids(tokens: usize, top_k: usize, experts: usize, key: u64) -> Vec<f32> {
    let mut out = Vec::with_capacity(tokens * top_k);
    for t in 0..tokens {
        let mut picked: Vec<usize> = Vec::with_capacity(top_k);
        let mut draw = 0u64;
        while picked.len() < top_k.min(experts) {
            let e = (rng::mix64(key ^ ((t as u64) << 20) ^ draw) % experts as u64) as usize;
            draw += 1;
            if !picked.contains(&e) {
                picked.push(e);
            }
        }
        out.extend(picked.into_iter().map(|e| e as f32));
    }
    out
}

/// What the CPU check said, as the CSV's `check` column writes it.
#[derive(Debug, Clone)]
pub enum CheckResult {
    Pass(OpCheck),
    Fail(OpCheck),
    Skipped(String),
}

impl std::fmt::Display for CheckResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckResult::Pass(_) => write!(f, "pass"),
            CheckResult::Fail(_) => write!(f, "fail"),
            CheckResult::Skipped(why) => write!(f, "skipped({why})"),
        }
    }
}

impl CheckResult {
    pub fn rel_l2(&self) -> Option<f64> {
        match self {
            CheckResult::Pass(c) | CheckResult::Fail(c) => Some(c.rel_l2),
            CheckResult::Skipped(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct KernelOptions {
    pub warmup: usize,
    /// Timed iterations; 0 checks only.
    pub iters: usize,
    pub flush: bool,
    pub seed: u64,
    /// Run the CPU check (within the budget).
    pub check: bool,
}

/// One op's outcome: the check, and the timing unless it only checked.
#[derive(Debug, Clone)]
pub struct KernelRow {
    pub check: CheckResult,
    pub stats: Option<Stats>,
    pub cost: OpCost,
    pub gpu: String,
    /// With two or more launches in the op: each launch's own time, in order (kernel name,
    /// median of the same iterations, each launch between its own events; see
    /// [`time_parts`]), so the grouped GEMMs of a MoE op can be read apart from its routing,
    /// permute and combine.
    pub calls: Vec<LaunchTime>,
    /// With exactly one launch: that kernel's name and SASS size, so the row says which entry
    /// ran (an A/B knob may swap it).
    pub single: Option<(&'static str, Option<u64>)>,
}

/// One launch of a multi-launch op, timed on its own.
#[derive(Debug, Clone)]
pub struct LaunchTime {
    /// The kernel's name (`Call::label`).
    pub label: &'static str,
    /// Its SASS size (`Call::code_bytes`; `None` for cuBLASLt and other stream calls).
    pub code_bytes: Option<u64>,
    pub stats: Stats,
}

impl KernelRow {
    pub fn tflops(&self) -> Option<f64> {
        self.stats.map(|s| self.cost.flops / (s.median_ms / 1e3) / 1e12)
    }
    pub fn gbs(&self) -> Option<f64> {
        self.stats.map(|s| self.cost.bytes() / (s.median_ms / 1e3) / 1e9)
    }
    pub fn bound(&self) -> &'static str {
        bound(&self.cost)
    }
}

/// Which roofline term of `cost` is larger at the H200's ceilings.
pub fn bound(cost: &OpCost) -> &'static str {
    if cost.flops / (PEAK_TFLOPS * 1e12) >= cost.bytes() / (COPY_GBS * 1e9) {
        "compute"
    } else {
        "memory"
    }
}

/// Binds `case` on `exec`, checks it and times it. `exec` must have been opened for the
/// case's layout (weights are kept by name, and a name means one shard of one layout).
/// A case that does not fit is a [`crate::plan::memory::DoesNotFit`] error.
pub fn run_case(exec: &mut CudaExecutor, case: &OpCase, opts: &KernelOptions) -> anyhow::Result<KernelRow> {
    let plan = &case.plan;
    anyhow::ensure!(exec.layouts()[0] == plan.layout, "the executor was opened for another deployment rank");
    // The previous case's arena and caches go first: only this one's must fit.
    exec.release();
    let mem = plan_memory(plan, Target { sm_count: exec.gpu().sm_count });
    let resident = mem.weight_bytes.saturating_sub(exec.missing_weight_bytes(plan));
    let (free, _) = exec.gpu().ctx.mem_get_info()?;
    fits(&mem.footprint(), resident as u64, free as u64)?;
    exec.bind(vec![plan.clone()])?;
    let ids = case.ids(opts.seed);
    exec.set_ids(&ids)?;
    let skip = if opts.check { case.cpu_check_skip() } else { Some("--no-check".into()) };
    let check = match skip {
        Some(why) => {
            // Timing still needs realistic inputs: routing decides how much MoE work runs.
            for (id, values) in random_inputs(case) {
                exec.write_tensor(id, &values)?;
            }
            super::fill_caches(exec.gpu(), exec.caches()?, opts.seed)?;
            CheckResult::Skipped(why)
        }
        None => check_against_cpu(exec, case, &ids.concat(), opts.seed)?,
    };
    let (gpu, bound) = (exec.gpu(), exec.bound()?);
    let calls = bound.op_calls(0);
    let single = match calls {
        [only] => Some((only.label(), only.code_bytes())),
        _ => None,
    };
    let mut per_call = Vec::new();
    let stats = if opts.iters == 0 {
        None
    } else {
        for _ in 0..opts.warmup.max(1) {
            bound.run_op(gpu, 0)?;
        }
        gpu.sync().context("warm-up of the op")?;
        let flush = if opts.flush { Some(flush_buffer()?) } else { None };
        let times = time_iterations(gpu, flush.as_ref(), opts.iters, || Ok(()), || bound.run_op(gpu, 0))?;
        // Then each launch of a multi-launch op on its own, over the same flush buffer.
        if calls.len() > 1 {
            let each = time_parts(gpu, flush.as_ref(), opts.iters, calls.len(), || Ok(()), |j| calls[j].enqueue(gpu))?;
            per_call = calls
                .iter()
                .zip(&each)
                .map(|(c, t)| LaunchTime { label: c.label(), code_bytes: c.code_bytes(), stats: Stats::of(t) })
                .collect();
        }
        Some(Stats::of(&times))
    };
    Ok(KernelRow { check, stats, cost: case.cost(), gpu: gpu.name.clone(), calls: per_call, single })
}

/// `case` on `dut` (bound, `ids` set) against the CPU reference from random inputs and
/// caches, which `check_op` mirrors into `dut` before poisoning the outputs.
pub fn check_against_cpu(dut: &mut dyn Executor, case: &OpCase, ids: &[i32], seed: u64) -> anyhow::Result<CheckResult> {
    let plan = &case.plan;
    let weights = load_weights(plan, &RandomWeights { seed }, true)?;
    let mut cpu = CpuRun::new(plan, &weights, None);
    cpu.write(plan.full(plan.input_ids), &ids.iter().map(|&i| i as f32).collect::<Vec<_>>());
    for (id, values) in random_inputs(case) {
        cpu.acts[id.0] = values;
    }
    let mut caches = KvCaches::default();
    caches.ensure(&plan.caches);
    let key = rng::mix64(seed ^ 0xca7e);
    for (c, values) in caches.k.iter_mut().chain(caches.v.iter_mut()).enumerate() {
        let k = rng::mix64(key ^ c as u64);
        values.iter_mut().enumerate().for_each(|(i, v)| *v = rng::unit_value(k, i as u64));
    }
    let r = check_op(dut, &mut cpu, &mut caches, 0)?;
    Ok(if r.pass { CheckResult::Pass(r) } else { CheckResult::Fail(r) })
}

/// The CSV columns of `kernel bench` (and the suite's seed.csv).
pub const CSV_COLUMNS: &str = "suite,case,model,site,kind,family,phase,bsz,seq,tokens,attn_tp,ep,dims,check,rel_l2,median_ms,p10_ms,p90_ms,min_ms,iters,gflop,mbytes,tflops,gbs,compute_frac,memory_frac,bound,flush,gpu,git_rev,routing,experts_touched,max_expert_tokens,knobs,calls_ms";

/// One CSV line (no newline); `row` is None for a case that could not run (`why`).
pub fn csv_line(suite: &str, case: &OpCase, row: Result<&KernelRow, &str>, flush: bool) -> String {
    let p = &case.plan;
    let cost = case.cost();
    let load = case.expert_load();
    let opt = |v: Option<f64>, prec: usize| v.map(|v| format!("{v:.prec$}")).unwrap_or_default();
    let (check, rel, stats, tflops, gbs, gpu) = match row {
        Ok(r) => (r.check.to_string(), r.check.rel_l2(), r.stats, r.tflops(), r.gbs(), r.gpu.clone()),
        Err(why) => (format!("skipped({why})"), None, None, None, None, String::new()),
    };
    // `name=median_ms` per launch, `;`-separated, in launch order (empty for one launch).
    let calls =
        row.map(|r| r.calls.iter().map(|c| format!("{}={:.5}", c.label, c.stats.median_ms)).collect::<Vec<_>>());
    let calls = calls.map(|c| c.join(";")).unwrap_or_default();
    let s = |f: fn(&Stats) -> f64| opt(stats.as_ref().map(f), 5);
    let fields = [
        suite.to_string(),
        case.case.clone(),
        case.model.clone(),
        case.site(),
        case.op().kind_name().into(),
        case.op().family().into(),
        p.shape.phase.name().into(),
        p.shape.batch.to_string(),
        p.shape.seq.to_string(),
        p.shape.tokens().to_string(),
        p.layout.attn_tp.to_string(),
        p.layout.ep.to_string(),
        case.dims(),
        check,
        rel.map(|r| format!("{r:.3e}")).unwrap_or_default(),
        s(|s| s.median_ms),
        s(|s| s.p10_ms),
        s(|s| s.p90_ms),
        s(|s| s.min_ms),
        stats.map(|s| s.iters.to_string()).unwrap_or_default(),
        format!("{:.4}", cost.flops / 1e9),
        format!("{:.4}", cost.bytes() / 1e6),
        opt(tflops, 2),
        opt(gbs, 1),
        opt(tflops.map(|t| t / PEAK_TFLOPS), 4),
        opt(gbs.map(|g| g / COPY_GBS), 4),
        bound(&cost).into(),
        flush.to_string(),
        gpu,
        env!("FWDBENCH_GIT_REV").to_string(),
        case.routing.mode().name().into(),
        load.as_ref().map(|l| format!("{:.1}", l.experts_touched())).unwrap_or_default(),
        load.as_ref().map(|l| l.max_expert_tokens().to_string()).unwrap_or_default(),
        knobs::active_label(),
        calls,
    ];
    fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",")
}

fn csv_field(f: &str) -> String {
    if f.contains([',', '"', '\n']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_string()
    }
}

/// Appends `line` to `path`, writing the header first when the file is new or empty.
pub fn append_csv(path: &Path, line: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let fresh = std::fs::metadata(path).map(|m| m.len() == 0).unwrap_or(true);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("--csv {}: cannot open for appending", path.display()))?;
    if fresh {
        writeln!(f, "{CSV_COLUMNS}")?;
    }
    writeln!(f, "{line}")?;
    Ok(())
}

/// One terminal line for a case.
pub fn summary_line(case: &OpCase, row: &KernelRow) -> String {
    let mut line = format!("{} [{}] check {}", case.case, case.site(), row.check);
    if let Some(r) = row.check.rel_l2() {
        line += &format!(" (rel-L2 {r:.1e})");
    }
    if let (Some(s), Some(t), Some(g)) = (row.stats, row.tflops(), row.gbs()) {
        line += &format!(
            ": median {:.4} ms (p10 {:.4}, p90 {:.4}, min {:.4}), {t:.1} TFLOP/s = {:.1}% of {PEAK_TFLOPS}, {g:.0} GB/s = {:.1}% of {COPY_GBS}, {}-bound",
            s.median_ms,
            s.p10_ms,
            s.p90_ms,
            s.min_ms,
            100.0 * t / PEAK_TFLOPS,
            100.0 * g / COPY_GBS,
            row.bound()
        );
    }
    // With each kernel's SASS size: after the flush a launch fetches its code cold.
    let kb = |b: u64| format!("{:.0} KB", b as f64 / 1024.0);
    if !row.calls.is_empty() {
        let each = row
            .calls
            .iter()
            .map(|c| match c.code_bytes {
                Some(b) => format!("{} {:.4} ({})", c.label, c.stats.median_ms, kb(b)),
                None => format!("{} {:.4}", c.label, c.stats.median_ms),
            })
            .collect::<Vec<_>>();
        line += &format!("\n  per launch (ms, each between its own events; KB of SASS): {}", each.join(", "));
    }
    match row.single {
        Some((label, Some(b))) => line += &format!("\n  one launch: {label} ({} of SASS)", kb(b)),
        Some((label, None)) => line += &format!("\n  one launch: {label}"),
        None => {}
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::cpu::run::CpuExecutor;
    use crate::model::tests_support::tiny_mla_moe;

    fn cases() -> Vec<OpCase> {
        let cfg = tiny_mla_moe();
        let mut out = Vec::new();
        for shape in [Shape::prefill(3, 7), Shape::decode(3, 7)] {
            let full = build_plan(&cfg, RankLayout::single(), shape, PlanOptions::default()).unwrap();
            for p in &full.ops {
                let q = OpQuery { name: p.site.name.clone(), layer: p.site.layer };
                let key = format!("{} {shape:?}", p.site.name);
                out.push(OpCase::from_model(key, "tiny", &cfg, RankLayout::single(), shape, &q).unwrap());
            }
        }
        out
    }

    #[test]
    fn every_one_op_case_passes_on_the_cpu_from_random_inputs() {
        let cfg = tiny_mla_moe();
        let src = RandomWeights { seed: 5 };
        for case in cases() {
            let mut dut = CpuExecutor::new(&cfg, vec![RankLayout::single()], &src, true);
            dut.bind(vec![case.plan.clone()]).unwrap();
            let ids = case.ids(5);
            dut.set_ids(&ids).unwrap();
            let r = check_against_cpu(&mut dut, &case, &ids.concat(), 5).unwrap();
            assert!(matches!(r, CheckResult::Pass(_)), "{}: {r:?}", case.case);
            // Random inputs, not zeros: a check on zeros would pass for a kernel that does nothing.
            let first = case.op().inputs().first().copied();
            if let Some(id) = first.filter(|id| case.plan.tensor(*id).dtype != crate::plan::DType::I32) {
                assert!(dut.read_tensor(id).unwrap().iter().any(|v| *v != 0.0), "{}", case.case);
            }
        }
    }

    #[test]
    fn routed_inputs_pick_distinct_valid_experts_and_leave_some_empty() {
        let ids = expert_ids(3, 2, 16, 9);
        for row in ids.chunks(2) {
            assert_ne!(row[0], row[1]);
            assert!(row.iter().all(|e| *e >= 0.0 && *e < 16.0));
        }
        let used: std::collections::BTreeSet<u32> = ids.iter().map(|e| *e as u32).collect();
        assert!(used.len() < 16, "3 tokens x top-2 cannot fill 16 experts");
        assert_eq!(expert_ids(3, 2, 16, 9), ids, "deterministic");
        assert_ne!(expert_ids(3, 2, 16, 10), ids, "seeded");
    }

    #[test]
    fn big_ops_skip_the_cpu_check_with_the_reason() {
        let big = OpCase::gemm("g".into(), 4096, 4096, 7168);
        let why = big.cpu_check_skip().expect("240 GFLOP is over budget");
        assert!(why.contains("GFLOP") && why.contains("budget"), "{why}");
        assert_eq!(OpCase::gemm("g".into(), 4, 64, 64).cpu_check_skip(), None);
        let wide = OpCase::gemm("g".into(), 1, 1 << 15, 1 << 14);
        assert!(wide.cpu_check_skip().unwrap().contains("weight/cache values"));
    }

    #[test]
    fn csv_rows_match_the_header_and_the_header_is_written_once() {
        let case = &cases()[0];
        let row = KernelRow {
            check: CheckResult::Skipped("--no-check, with a comma".into()),
            stats: Some(Stats::of(&[1.0, 2.0, 3.0])),
            cost: case.cost(),
            gpu: "H200".into(),
            calls: vec![
                LaunchTime { label: "moe_permute", code_bytes: Some(3712), stats: Stats::of(&[0.5]) },
                LaunchTime { label: "moe_wgmma_gate_up_m128", code_bytes: None, stats: Stats::of(&[1.5]) },
            ],
            single: None,
        };
        let line = csv_line("adhoc", case, Ok(&row), true);
        let fields = |l: &str| {
            let mut n = 1;
            let mut quoted = false;
            for c in l.chars() {
                match c {
                    '"' => quoted = !quoted,
                    ',' if !quoted => n += 1,
                    _ => {}
                }
            }
            n
        };
        assert_eq!(fields(&line), fields(CSV_COLUMNS));
        assert!(line.contains("\"skipped(--no-check, with a comma)\""), "{line}");
        // The printed row names each launch with its time and, for our kernels, code size.
        let text = summary_line(case, &row);
        assert!(text.contains("moe_permute 0.5000 (4 KB), moe_wgmma_gate_up_m128 1.5000"), "{text}");
        assert!(!text.contains("one launch"), "{text}");
        let one = KernelRow { calls: vec![], single: Some(("decode_tma_d128_v6", Some(36_352))), ..row };
        assert!(summary_line(case, &one).contains("one launch: decode_tma_d128_v6 (36 KB of SASS)"));
        assert!(line.ends_with(",moe_permute=0.50000;moe_wgmma_gate_up_m128=1.50000"), "{line}");
        let dir = std::env::temp_dir().join(format!("fwdbench-kcsv-{}", std::process::id()));
        let path = dir.join("k.csv");
        append_csv(&path, &line).unwrap();
        append_csv(&path, &csv_line("adhoc", case, Err("does not fit"), false)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().filter(|l| *l == CSV_COLUMNS).count(), 1);
        assert_eq!(text.lines().count(), 3);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
