//! The timing loop: for every (batch, sequence) of the grid, the prefill forward and the
//! decode step, timed with CUDA events around the forward only, after warm-up, with the
//! L2 flushed before every timed iteration (unless `flush` is off) and decode replayed
//! from a captured CUDA graph (unless `graph` is off). Every rank of a multi-GPU run runs
//! the same loop in step (`ranks`: agreement before the first collective, results to rank
//! 0); `project` times one rank of a wider deployment and models its collectives.
//! Measurements go to `report` as they complete, so a failing shape loses nothing measured.
//! `timing` selects fwdbench's method or the seed's (or both, one row each); `progress`
//! shows the grid's progress; `nvtx` names forwards and ops for nsys and ncu.

pub mod comm;

pub mod kernel;
pub mod load;
pub mod memory;
pub mod nvtx;
pub mod progress;
pub mod suite;
pub mod timing;

use std::path::PathBuf;

use anyhow::Context;
use cudarc::driver::sys::{CUevent_flags, CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::CudaGraph;

use crate::config::model::ModelConfig;
use crate::config::run_conf::Deployment;
use crate::dist::launch::rendezvous_timeout;
use crate::dist::nccl::NcclComm;
use crate::dist::rendezvous::Rendezvous;
use crate::exec::cuda::engine::{BoundPlan, DeviceCaches};
use crate::exec::cuda::executor::CudaExecutor;
use crate::exec::cuda::gpu::{Gpu, KernelChoice};
use crate::exec::cuda::kernels::collective::CollectiveBackend;
use crate::exec::cuda::kernels::init::{fill_normal_launch, FillNormalParams, FILL_NORMAL_BF16};
use crate::exec::cuda::memory::DeviceBuffer;
use crate::exec::Executor;
use crate::model::{build_plan, PlanOptions};
use crate::plan::cost::{ExpertLoad, PhaseCost};
use crate::plan::memory::{fits, plan_memory, Target};
use crate::plan::{Phase, RoutingMode, Shape};
use crate::report::{Forwards, Meta, ProfileFiles, ProfileTarget, Reporter, Row, Stats};
use nvtx::{Annotated, Nvtx};
use progress::Progress;
use timing::{TimingMethod, TimingPlan};

pub mod project;
pub mod ranks;

/// What a run measures and where it writes, independent of how it was asked for.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Labels of the report: model folder name, config name, conf layers.
    pub model: String,
    pub mconf: String,
    pub base: String,
    pub deploy: String,
    /// The model folder: where `prompt_file`'s tokenizer.json lives.
    pub model_dir: PathBuf,
    pub warmup: usize,
    pub iters: usize,
    /// Flush the L2 cache before every timed iteration.
    pub flush: bool,
    /// Replay decode from a captured CUDA graph.
    pub graph: bool,
    /// The phase whose per-op times are written to a profile.
    pub profile: Vec<Phase>,
    /// Seed of the random weights, ids and KV cache contents.
    pub seed: u64,
    /// Real text (tokenised with the model folder's tokenizer.json) instead of random ids.
    pub prompt_file: Option<PathBuf>,
    pub results_dir: PathBuf,
    /// Append CSV rows to results/csv/.
    pub save: bool,
    /// How each shape is timed, in run order: one row per method (never empty).
    pub timing: Vec<TimingMethod>,
    /// Also append the seed pipeline's ten columns to results/csv/benchmark.csv.
    pub seed_csv: bool,
    /// `--routing`: the router's choice, balanced, or seeded uniform (seeded by `seed`).
    pub routing: RoutingMode,
}

impl BenchOptions {
    /// Each timing method with its counts resolved against `--warmup`, `--iters`, `--no-flush`.
    pub fn timing_plans(&self) -> Vec<TimingPlan> {
        self.timing.iter().map(|&m| TimingPlan::resolve(m, self.warmup, self.iters, self.flush)).collect()
    }

    /// The run's reporter: rows, raw log and CSV, the seed's outputs when asked for, and a
    /// first line per timing method saying how it times (`timed` false: an analytic run,
    /// which times nothing and says so if another method was asked for).
    pub fn reporter(&self, meta: Meta, timed: bool) -> anyhow::Result<Reporter> {
        let mut r = Reporter::new(meta, &self.results_dir, self.save)?;
        if self.seed_csv {
            r = r.with_seed_csv(&self.results_dir, self.timing.len() > 1)?;
        }
        if self.timing.contains(&TimingMethod::Seed) {
            r = r.with_seed_log()?;
        }
        if !timed {
            if self.timing != [TimingMethod::Fwdbench] {
                r.note("timing: not applied, an analytic projection times nothing")?;
            }
            return Ok(r);
        }
        for plan in self.timing_plans() {
            r.note(&plan.describe())?;
        }
        Ok(r)
    }
}

/// Why decode of a `per_rank_batch`-sequence batch runs eagerly, or `None` when it is
/// replayed from a graph. `cuda_graph_max_bs` caps the batch one rank's graph holds, so it
/// is compared with the per-rank batch: SGLang compared the global batch under DP
/// attention and lost its graphs without a word (its issue 5527).
pub fn graph_off_reason(opts: &BenchOptions, dep: &Deployment, per_rank_batch: usize) -> Option<String> {
    if !opts.graph {
        Some("decode eager: --no-graph".into())
    } else if dep.disable_cuda_graph {
        Some("decode eager: disable_cuda_graph".into())
    } else if per_rank_batch > dep.cuda_graph_max_bs {
        Some(format!(
            "decode eager: {per_rank_batch} sequences per rank exceed cuda_graph_max_bs {}",
            dep.cuda_graph_max_bs
        ))
    } else {
        None
    }
}

/// The kernel families the deployment's `attention_backend` selects (validated when the
/// conf was read).
pub fn kernel_choice(dep: &Deployment) -> KernelChoice {
    KernelChoice { attention: dep.attention_backend, ..KernelChoice::default() }
}

/// The report's labels; `gpu` names the device(s) that produced the numbers.
pub fn meta(opts: &BenchOptions, dep: &Deployment, gpu: String) -> Meta {
    Meta {
        model: opts.model.clone(),
        mconf: opts.mconf.clone(),
        base: opts.base.clone(),
        deploy: opts.deploy.clone(),
        backend: dep.attention_backend.name().to_string(),
        gpu,
        rev: env!("FWDBENCH_GIT_REV").to_string(),
    }
}

/// One rank's share of a measured run: every rank of the world calls it with its own
/// executor (its GPU and communicators from `dist::worker::setup_rank`, or a lone GPU) and
/// the rendezvous that joined them. A shape that a rank cannot prepare is skipped on every
/// rank, with that rank's reason; rank 0 alone prints, logs and writes CSV.
pub fn run_grid(
    opts: &BenchOptions,
    cfg: &ModelConfig,
    dep: &Deployment,
    exec: &mut CudaExecutor,
    rdzv: &mut Rendezvous,
    shapes: &[(usize, usize)],
) -> anyhow::Result<()> {
    let (rank, world) = (rdzv.rank(), rdzv.world());
    let leader = rank == 0;
    exec.gpu().set_kernel_choice(kernel_choice(dep));
    let timeout = rendezvous_timeout();
    let gpu_name = if world > 1 { format!("{world}x {}", exec.gpu().name) } else { exec.gpu().name.clone() };
    let mut reporter = if leader { Some(opts.reporter(meta(opts, dep, gpu_name), true)?) } else { None };
    let backend = crate::dist::worker::communicators(exec.gpu());
    let align = backend.as_deref().and_then(|b| match b {
        CollectiveBackend::Nccl(comms) => Some(comms.world()),
        CollectiveBackend::Modelled => None,
    });
    let flush = timing::flush_buffer()?;
    // Before any plan allocates: the baseline of the memory record.
    let baseline = memory::Baseline::take(exec.gpu())?;
    let mut resident = memory::Resident::default();
    let mut progress = Progress::new(shapes.len() * 2, leader);
    for shape in grid(shapes) {
        progress.start(&shape);
        let (phase, bsz, seq) = (shape.phase, shape.batch, shape.seq);
        let ready = input_ids(opts, cfg, &shape).and_then(|ids| bind_shape(exec, cfg, shape, opts, &ids));
        let failure = ready.as_ref().err().map(|e| format!("{e:#}"));
        if let Err(why) = ranks::agree(rdzv, failure.as_deref(), timeout)? {
            if let Some(r) = &mut reporter {
                progress.suspend(|| r.skipped(shape, &why))?;
            }
            continue;
        }
        let cost = ready?;
        let planned = resident.bind(&exec.bound()?.plan, Target { sm_count: exec.gpu().sm_count });
        let per_rank = exec.bound()?.plan.local_batch;
        let graph_off = if phase == Phase::Decode { graph_off_reason(opts, dep, per_rank) } else { None };
        // One row per timing method; the profile (when asked for) comes with the first, and
        // the routing that ran is read back once, after the first timed region.
        let mut load = None;
        for (n, timing) in opts.timing_plans().into_iter().enumerate() {
            let profile = n == 0 && opts.profile.contains(&phase);
            let req = ShapeRun { timing, graph: graph_off.is_none(), align, profile, leader };
            let timed = time_shape(exec, cfg, opts, &flush, &req).and_then(|t| {
                if n == 0 {
                    load = routed_load(exec, cfg)?;
                }
                Ok(t)
            });
            let outcome = match timed {
                Ok(t) => {
                    report_profile(&progress, t.profile.as_ref());
                    ranks::Outcome::from(&t)
                }
                Err(e) if world == 1 => ranks::Outcome::Failed(format!("{e:#}")),
                // The peers may be waiting inside an NCCL collective for this rank, where no
                // deadline reaches them: stop, and the launcher stops them too.
                Err(e) => return Err(e.context(format!("rank {rank}: timing {} bsz {bsz} seq {seq}", phase.name()))),
            };
            // After timing: the kernels the forward launched are loaded (lazily) and its
            // buffers are live; the decode graph went with `time_shape`.
            let mem = baseline.record(exec.gpu(), planned)?;
            let (Some(r), Some(all)) = (&mut reporter, ranks::gather(rdzv, &outcome, timeout)?) else { continue };
            match ranks::combine(&all) {
                Ok(c) => {
                    let plan = &exec.bound()?.plan;
                    let mut row = Row::new(plan, &routed_cost(plan, cfg, cost, load.as_ref()), c.stats, c.graph);
                    row.set_expert_load(load.as_ref());
                    row.rank_spread = Some(c.spread);
                    row.note = row_note(graph_off.as_deref(), &timing);
                    row.timing = timing.method.name();
                    row.memory_mib = Some((mem.planned_mib(), mem.used_mib()));
                    progress.suspend(|| r.row(&row))?;
                    if let Some(w) = mem.warning() {
                        progress.suspend(|| r.note(&w))?;
                    }
                }
                Err(why) => progress.suspend(|| r.skipped(shape, &why))?,
            }
        }
    }
    drop(progress);
    reporter.map_or(Ok(()), Reporter::finish)
}

/// The routing the bound plan actually makes, after its timed region (one more forward, op
/// by op, on every rank together); `None` without MoE.
pub(crate) fn routed_load(exec: &mut CudaExecutor, cfg: &ModelConfig) -> anyhow::Result<Option<ExpertLoad>> {
    let experts = cfg.moe.as_ref().map_or(0, |m| m.num_experts);
    load::measure_expert_load(exec, experts).context("reading back the expert counts after timing")
}

/// `cost` with the MoE ops costed from `load`, the routing that ran (when measured).
pub(crate) fn routed_cost(
    plan: &crate::plan::Plan,
    cfg: &ModelConfig,
    cost: PhaseCost,
    load: Option<&ExpertLoad>,
) -> PhaseCost {
    load.map_or(cost, |l| PhaseCost::with_load(plan, cfg, l))
}

/// A row's note: why decode ran eagerly, and (the table has no timing column) that the
/// seed's method timed it.
pub(crate) fn row_note(graph_off: Option<&str>, timing: &TimingPlan) -> String {
    let seed = (timing.method == TimingMethod::Seed).then(|| format!("timing seed: mean of {}", timing.iters));
    graph_off.map(str::to_string).into_iter().chain(seed).collect::<Vec<_>>().join("; ")
}

/// Says where a profile went (on rank 0, which wrote it), with the bar cleared.
pub(crate) fn report_profile(progress: &Progress, files: Option<&ProfileFiles>) {
    if let Some(f) = files {
        progress.suspend(|| eprintln!("profile written to {} (trace {})", f.csv.display(), f.trace.display()));
    }
}

/// Every shape of the grid, prefill then decode per (batch, sequence).
pub fn grid(shapes: &[(usize, usize)]) -> impl Iterator<Item = Shape> + '_ {
    shapes.iter().flat_map(|&(batch, seq)| [Phase::Prefill, Phase::Decode].map(|phase| Shape { phase, batch, seq }))
}

/// The new tokens of every sequence of `shape`: the end of the prompt's context, or random.
fn input_ids(opts: &BenchOptions, cfg: &ModelConfig, shape: &Shape) -> anyhow::Result<Vec<Vec<i32>>> {
    let n = shape.new_tokens_per_seq();
    Ok(match &opts.prompt_file {
        Some(p) => crate::inputs::prompt_ids(p, &opts.model_dir, shape.batch, shape.context(), cfg.vocab_size)?
            .into_iter()
            .map(|r| r[r.len() - n..].to_vec())
            .collect(),
        None => crate::inputs::random_ids(shape.batch, n, cfg.vocab_size, opts.seed),
    })
}

/// Fills every cache with random values: a decode step is timed without running a prefill.
pub(crate) fn fill_caches(gpu: &Gpu, caches: &DeviceCaches, seed: u64) -> anyhow::Result<()> {
    for (i, buf) in caches.k.iter().chain(caches.v.iter().flatten()).enumerate() {
        let elems = buf.bytes / 2;
        let p = FillNormalParams {
            dst: buf.ptr,
            dst_ld: 1,
            rows: elems as i64,
            cols: 1,
            seed: seed ^ (i as u64 + 1),
            mean: 0.0,
            std: 1.0,
            src_ld: 1,
            ..Default::default()
        };
        gpu.launch(FILL_NORMAL_BF16, fill_normal_launch(elems, 1), p)?;
    }
    gpu.sync()
}

/// Builds `shape`'s plan for this rank, checks that it fits, binds it and fills its inputs
/// and caches: every step that can fail on one rank alone, before any collective.
fn bind_shape(
    exec: &mut CudaExecutor,
    cfg: &ModelConfig,
    shape: Shape,
    opts: &BenchOptions,
    ids: &[Vec<i32>],
) -> anyhow::Result<PhaseCost> {
    let mut plan = build_plan(cfg, exec.layouts()[0], shape, PlanOptions::default())?;
    plan.set_routing(opts.routing, opts.seed);
    // The previous shape's arena and caches are freed before asking what is free.
    exec.release();
    let need = plan_memory(&plan, Target { sm_count: exec.gpu().sm_count });
    let missing_weights = exec.missing_weight_bytes(&plan);
    let resident_weights = need.weight_bytes.saturating_sub(missing_weights);
    let (free, _) = exec.gpu().ctx.mem_get_info()?;
    fits(&need.footprint(), (resident_weights + need.workspace_bytes) as u64, free as u64)?;
    let cost = PhaseCost::of(&plan, cfg);
    // Under DP attention a rank feeds only its own sequences of the global batch.
    let mine = plan.first_sequence..plan.first_sequence + plan.local_batch;
    anyhow::ensure!(mine.end <= ids.len(), "{} input sequences for a batch of {}", ids.len(), shape.batch);
    exec.bind(vec![plan])?;
    exec.set_ids(&ids[mine])?;
    if shape.phase == Phase::Decode {
        fill_caches(exec.gpu(), exec.caches()?, opts.seed)?;
    }
    Ok(cost)
}

/// What the timing loop measured on this rank.
#[derive(Debug, Clone)]
pub struct Timing {
    pub stats: Stats,
    /// Decode was replayed from a captured graph.
    pub graph: bool,
    /// The profile this rank wrote (rank 0 of a profiled shape).
    pub profile: Option<ProfileFiles>,
}

/// How one shape is timed on this rank.
pub(crate) struct ShapeRun<'a> {
    pub timing: TimingPlan,
    /// Replay decode from a captured graph.
    pub graph: bool,
    /// Every iteration starts after a stream barrier over this world.
    pub align: Option<&'a NcclComm>,
    /// Time every op once more after the forwards (every rank: collectives are ops).
    pub profile: bool,
    /// This rank writes the profile.
    pub leader: bool,
}

/// Times the bound plan by `req.timing`'s method, decode replayed from a captured graph
/// when `req.graph` (collectives included: every rank captures). fwdbench's method warms up
/// eagerly, captures, then times each forward between its own events, the L2 flushed
/// before each; the seed's captures first (its server did so at start-up), warms up by
/// replays left in flight and times all forwards between one event pair. With `align`,
/// timing starts after a stream barrier over the world (outside the events), so a rank's
/// time is its own forward, not its wait for a late peer.
fn time_shape(
    exec: &CudaExecutor,
    cfg: &ModelConfig,
    opts: &BenchOptions,
    flush: &DeviceBuffer,
    req: &ShapeRun,
) -> anyhow::Result<Timing> {
    let gpu = exec.gpu();
    let bound = exec.bound()?;
    let phase = bound.plan.shape.phase;
    let t = req.timing;
    // Ranges in the timed loop only when asked for: they cost host time per op.
    let off = Nvtx::off();
    let ann = Annotated::new(if nvtx::requested_by_env() { Nvtx::get() } else { &off }, bound);
    let eager_warmups = if t.back_to_back { 1 } else { t.warmup };
    for _ in 0..eager_warmups {
        ann.forward(gpu, bound)?;
    }
    gpu.sync().context("warm-up forward")?;
    let graph = if phase == Phase::Decode && req.graph { Some(capture(gpu, bound, &ann)?) } else { None };
    let run_once = || match &graph {
        Some(g) => ann.replay(g),
        None => ann.forward(gpu, bound),
    };
    // Every rank starts timing together (a stream barrier, outside the events).
    let align_ranks = || match req.align {
        Some(world) => Ok(world.barrier()?),
        None => Ok(()),
    };
    let kind = if graph.is_some() { "graph replay" } else { "eager forward" };
    let (stats, forwards) = if t.back_to_back {
        let warm_then_align = || {
            (0..t.warmup).try_for_each(|_| run_once())?;
            align_ranks()
        };
        let mean = timing::time_back_to_back(gpu, t.iters, warm_then_align, run_once)?;
        let label = format!("{} back-to-back {kind}s", t.iters);
        (Stats::of(&[mean]), Forwards { label, ms: vec![mean * t.iters as f64], method: t.method.name() })
    } else {
        let times = timing::time_iterations(gpu, t.flush.then_some(flush), t.iters, align_ranks, run_once)?;
        (Stats::of(&times), Forwards { label: kind.to_string(), ms: times, method: t.method.name() })
    };
    let mut profile = None;
    if req.profile {
        // Every rank runs the ops (collectives among them); rank 0 writes the files.
        let op_ms = time_ops(gpu, bound, &Annotated::new(Nvtx::get(), bound))?;
        if req.leader {
            let target = ProfileTarget { results_dir: &opts.results_dir, model: &opts.model, mconf: &opts.mconf };
            profile = Some(crate::report::write_profile(&target, &bound.plan, cfg, &op_ms, &forwards)?);
        }
    }
    Ok(Timing { stats, graph: graph.is_some(), profile })
}

/// The decode forward captured into a graph and replayed once.
fn capture(gpu: &Gpu, bound: &BoundPlan, ann: &Annotated) -> anyhow::Result<CudaGraph> {
    gpu.stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
    let captured = ann.forward(gpu, bound);
    let g = gpu.stream.end_capture(CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH)?;
    captured.context("capturing the decode forward")?;
    let g = g.context("graph capture produced no graph")?;
    g.launch()?;
    gpu.sync().context("graph replay")?;
    Ok(g)
}

/// Every op's time in one eager forward, each op alone between two events (inside its
/// NVTX range, so nsys shows the names of exactly the ops this profile times).
fn time_ops(gpu: &Gpu, bound: &BoundPlan, ann: &Annotated) -> anyhow::Result<Vec<f64>> {
    let start = gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    let end = gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    (0..bound.plan.ops.len())
        .map(|i| {
            start.record(&gpu.stream)?;
            ann.op(gpu, bound, i)?;
            end.record(&gpu.stream)?;
            Ok(start.elapsed_ms(&end)? as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(prompt_file: Option<PathBuf>) -> BenchOptions {
        BenchOptions {
            model: "qwen".into(),
            mconf: "2l".into(),
            base: "base".into(),
            deploy: "tp1".into(),
            model_dir: PathBuf::from("tests/fixtures/tokenizer"),
            warmup: 1,
            iters: 1,
            flush: true,
            graph: true,
            profile: vec![],
            seed: 4,
            prompt_file,
            results_dir: PathBuf::from("results"),
            save: false,
            timing: vec![TimingMethod::Fwdbench],
            seed_csv: false,
            routing: RoutingMode::Model,
        }
    }

    #[test]
    fn inputs_are_the_new_tokens_of_each_sequence() {
        let cfg = crate::config::hf::load_model_config(std::path::Path::new("tests/fixtures/qwen3/config.json"), &[])
            .unwrap();
        let random = input_ids(&opts(None), &cfg, &Shape::prefill(3, 5)).unwrap();
        assert_eq!(random, crate::inputs::random_ids(3, 5, cfg.vocab_size, 4));
        assert_eq!(input_ids(&opts(None), &cfg, &Shape::decode(3, 5)).unwrap().concat().len(), 3);
        // A decode step of the prompt feeds the token after the cached context.
        let prompt = Some(PathBuf::from("tests/fixtures/tokenizer/prompt.txt"));
        let dir = std::path::Path::new("tests/fixtures/tokenizer");
        let full = crate::inputs::prompt_ids(&dir.join("prompt.txt"), dir, 2, 9, cfg.vocab_size).unwrap();
        let step = input_ids(&opts(prompt), &cfg, &Shape::decode(2, 8)).unwrap();
        assert_eq!(step, vec![vec![full[0][8]], vec![full[1][8]]]);
    }

    #[test]
    fn seed_timed_rows_say_so_beside_why_decode_ran_eagerly() {
        let seed = TimingPlan::resolve(TimingMethod::Seed, 3, 10, true);
        let ours = TimingPlan::resolve(TimingMethod::Fwdbench, 3, 10, true);
        assert_eq!(row_note(None, &ours), "");
        assert_eq!(row_note(Some("decode eager: --no-graph"), &ours), "decode eager: --no-graph");
        assert_eq!(row_note(None, &seed), "timing seed: mean of 50");
        assert_eq!(
            row_note(Some("decode eager: --no-graph"), &seed),
            "decode eager: --no-graph; timing seed: mean of 50"
        );
    }
}
