//! `fwdbench run`: time prefill and decode forwards over a shapes grid on the GPUs.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use fwdbench::bench::project::{project_grid, Projection};
use fwdbench::bench::timing::{TimingMethod, TIMING_CHOICES};
use fwdbench::bench::BenchOptions;
use fwdbench::config::model::ModelConfig;
use fwdbench::config::run_conf::{Deployment, RunConf};
use fwdbench::dist::comm_model::{CommModel, CommTable};
use fwdbench::dist::launch::{self, Worker};
use fwdbench::dist::nccl::NcclError;
use fwdbench::dist::projection::choose_rank;
use fwdbench::dist::rendezvous::Host;
use fwdbench::dist::worker::setup_rank;
use fwdbench::exec::cuda::executor::CudaExecutor;
use fwdbench::exec::cuda::gpu::Gpu;
use fwdbench::exec::cuda::weights::Values;
use fwdbench::plan::{Phase, RankLayout, RoutingMode};

use super::common::{layouts, DeployArgs, ModelArgs, NodeArgs};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  fwdbench run --model qwen --mconf 2l --deploy tp1\n  fwdbench run --model deepseek --mconf 2l --deploy tp8ep8 --save           (one worker per GPU)\n  fwdbench run --model sigma --mconf full --deploy tp16ep16 --ip 10.0.0.1 --rank 1   (second node)\n  fwdbench run --model sigma --mconf full --deploy tp8ep8 --project        (one rank on GPU 0, collectives modelled)\n  fwdbench run --model deepseek --mconf full --deploy tp8ep8dp8 --project --analytic   (no GPU)\n  fwdbench run --model qwen --mconf 2l --deploy tp1 --routing balanced --save   (every expert its exact share)"
)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub deploy: DeployArgs,
    #[command(flatten)]
    pub nodes: NodeArgs,
    /// Measure one rank's shard on GPU 0 and model the collectives, for a deployment wider than this machine.
    #[arg(long)]
    pub project: bool,
    /// With --project: the rank to run (default 0).
    #[arg(long, value_name = "RANK")]
    pub project_rank: Option<usize>,
    /// With --project: no GPU; the cost model's roofline per op instead of measured compute.
    #[arg(long)]
    pub analytic: bool,
    /// With --project: a measured communication table (CSV, as `fwdbench comm bench` writes) instead of the built-in public H200 figures.
    #[arg(long, value_name = "FILE")]
    pub comm_table: Option<PathBuf>,
    /// Shapes grid, lines like {1,8,64};{128,1024}.
    #[arg(long, default_value = "conf/bsz_seq.csv")]
    pub shapes: PathBuf,
    /// Untimed forwards before timing each shape (0 to 10000).
    #[arg(long, default_value_t = 3, value_parser = super::common::warmup_count)]
    pub warmup: usize,
    /// Timed forwards per shape; the row is their median (1 to 100000).
    #[arg(long, default_value_t = 10, value_parser = super::common::iteration_count)]
    pub iters: usize,
    /// Do not flush the L2 cache between timed iterations.
    #[arg(long)]
    pub no_flush: bool,
    /// Run decode eagerly instead of replaying a captured CUDA graph.
    #[arg(long)]
    pub no_graph: bool,
    /// Append CSV rows to results/csv/.
    #[arg(long)]
    pub save: bool,
    /// Per-op profile into results/<model>_profile/ (CSV and Chrome trace; NVTX ranges name the profiled ops for nsys, FWDBENCH_NVTX=1 names the timed forwards too): prefill, decode, both or none.
    #[arg(long, value_parser = ["prefill", "decode", "both", "none"])]
    pub profile: Option<String>,
    #[arg(long, default_value = "results")]
    pub results_dir: PathBuf,
    /// Weights seed (random weights).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Real text, tokenised with the model folder's tokenizer.json, instead of random ids.
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
    /// With --save: draw the CSV's latency, MFU and MBU into results/plots/<model>_<mconf>_{batch,seq}.{png,svg}.
    #[arg(long)]
    pub plot: bool,
    /// How each shape is timed: fwdbench (--warmup, then the median of --iters forwards, L2 flushed before each), seed (the seed pipeline's: 50 warm-ups, the mean of 50 back-to-back forwards, no flush) or both (one row each). Overrides the run conf key `timing`.
    #[arg(long, value_parser = TIMING_CHOICES)]
    pub timing: Option<String>,
    /// seed: also append the seed pipeline's ten columns (no header) to results/csv/benchmark.csv; implies --save.
    #[arg(long, value_parser = ["fwdbench", "seed"], default_value = "fwdbench")]
    pub csv_format: String,
    /// MoE expert choice: the router as computed (model), exactly balanced, or seeded (--seed) uniform top-k; the router's weights stay. Default: the conf key `routing`, else model.
    #[arg(long, value_parser = RoutingMode::NAMES)]
    pub routing: Option<String>,
}

/// `--routing` when given, else the conf key `routing` (default model).
pub(super) fn routing_mode(flag: Option<&str>, dep: &Deployment) -> RoutingMode {
    flag.and_then(RoutingMode::parse).unwrap_or(dep.routing)
}

impl RunArgs {
    /// The library's options; `model_dir` is the model's own folder (its tokenizer).
    fn bench_options(&self, model_dir: PathBuf, timing: Vec<TimingMethod>, routing: RoutingMode) -> BenchOptions {
        BenchOptions {
            model: self.model.model.clone(),
            mconf: self.model.mconf.clone(),
            base: self.deploy.layers.base.clone(),
            deploy: self.deploy.deploy.clone(),
            model_dir,
            warmup: self.warmup,
            iters: self.iters,
            flush: !self.no_flush,
            graph: !self.no_graph,
            profile: match self.profile.as_deref() {
                Some("prefill") => vec![Phase::Prefill],
                Some("decode") => vec![Phase::Decode],
                Some("both") => vec![Phase::Prefill, Phase::Decode],
                _ => vec![],
            },
            seed: self.seed,
            prompt_file: self.prompt_file.clone(),
            results_dir: self.results_dir.clone(),
            save: self.save || self.csv_format == "seed",
            timing,
            seed_csv: self.csv_format == "seed",
            routing,
        }
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    // Every input is validated before any device is touched.
    let (model_dir, cfg) = args.model.load()?;
    let (conf, dep) = args.deploy.load_on(&args.nodes)?;
    let cfg = dep.quantize(cfg);
    let ranks = layouts(&dep)?;
    let shapes = fwdbench::config::shapes::load_shapes(&args.shapes)?;
    if let Some(p) = &args.prompt_file {
        fwdbench::inputs::prompt_ids(p, &model_dir, 1, 1, cfg.vocab_size)?;
    }
    check_projection_flags(&args)?;
    if args.plot && !args.save {
        bail!("--plot draws the CSV rows that --save writes: add --save");
    }
    check_results_dir(&args.results_dir)?;
    let timing = timing_methods(args.timing.as_deref(), &conf)?;
    let worker_env = Worker::from_env()?;
    if worker_env.as_ref().is_none_or(Worker::is_leader) {
        plan_every_shape(&cfg, &ranks, &shapes, &args.shapes)?;
    }
    let worker = worker_env;
    super::common::print_conf_notes(Some((&conf, &dep)), fwdbench::config::run_conf::Subcommand::Run);
    // Workers re-run this command line: only rank 0 (or the launcher) speaks.
    if worker.as_ref().is_none_or(Worker::is_leader)
        && fwdbench::bench::nvtx::requested_by_env()
        && fwdbench::bench::nvtx::Nvtx::get().loaded_from.is_none()
    {
        eprintln!("note: FWDBENCH_NVTX is set but no NVTX library (libnvToolsExt.so.1, libnvtx3interop.so.1, or FWDBENCH_NVTX_LIB) loads; ranges are off");
    }
    let routing = routing_mode(args.routing.as_deref(), &dep);
    let job = Job { opts: args.bench_options(model_dir, timing, routing), cfg: &cfg, dep, ranks, shapes };
    let is_worker = worker.is_some();
    if args.project {
        project(&args, &job)?;
    } else {
        if worker.is_none() {
            require_gpu_for_run()?;
        }
        match worker {
            Some(w) => run_worker(&w, &job)?,
            None if job.ranks.len() == 1 => run_alone(&job)?,
            None => launch_node(&args, &job.dep, job.ranks.len())?,
        }
    }
    // The launcher of node 0 (or the single process) plots once every rank is done; rank
    // 0 wrote the CSV on this node.
    if args.plot && !is_worker && job.dep.node_rank == 0 {
        plot_saved(&args)?;
    }
    Ok(())
}

fn plot_saved(args: &RunArgs) -> anyhow::Result<()> {
    let name = format!("{}_{}", args.model.model, args.model.mconf);
    let csv = args.results_dir.join("csv").join(format!("{name}.csv"));
    let stem = args.results_dir.join("plots").join(&name);
    for path in fwdbench::report::plot::plot_files(&[csv], None, &stem).context("--plot")? {
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn check_projection_flags(args: &RunArgs) -> anyhow::Result<()> {
    if args.project {
        return Ok(());
    }
    for (given, flag) in [
        (args.analytic, "--analytic"),
        (args.project_rank.is_some(), "--project-rank"),
        (args.comm_table.is_some(), "--comm-table"),
    ] {
        if given {
            bail!("{flag} only applies to a projection: add --project (one rank's shard, collectives modelled)");
        }
    }
    Ok(())
}

/// What every way of running a grid needs, validated.
struct Job<'a> {
    opts: BenchOptions,
    cfg: &'a ModelConfig,
    dep: Deployment,
    ranks: Vec<RankLayout>,
    shapes: Vec<(usize, usize)>,
}

fn project(args: &RunArgs, job: &Job) -> anyhow::Result<()> {
    let Job { opts, cfg, dep, ranks, shapes } = job;
    let choice = choose_rank(ranks.len(), dep.ep_size > 1 && cfg.moe.is_some(), args.project_rank)?;
    let (comm, comm_label) = match &args.comm_table {
        None => (CommModel::builtin(), "the built-in public H200 NCCL figures (dist/comm_model.rs)".to_string()),
        Some(path) => {
            let table = CommTable::load(path).with_context(|| format!("--comm-table {}", path.display()))?;
            (CommModel::builtin().with_measured(&table), format!("the measured table {}", path.display()))
        }
    };
    if !args.analytic {
        fwdbench::exec::cuda::device::require_cuda()
            .context("--project measures one rank on GPU 0; without a GPU add --analytic")?;
    }
    project_grid(opts, cfg, dep, ranks, &Projection { choice, comm, comm_label, analytic: args.analytic }, shapes)
}

/// The timing methods of `--timing`, else of the run conf key `timing`, else fwdbench's.
fn timing_methods(flag: Option<&str>, conf: &RunConf) -> anyhow::Result<Vec<TimingMethod>> {
    let key = conf.timing()?;
    let value = flag.or(key.as_deref()).unwrap_or("fwdbench");
    TimingMethod::parse_choice(value)
        .with_context(|| format!("--timing {value}: choose one of {}", TIMING_CHOICES.join(", ")))
}

/// A measured run needs a GPU and this build's kernels: without either, one sentence
/// that says which is missing and what works without them.
fn require_gpu_for_run() -> anyhow::Result<()> {
    let instead = "use --project --analytic (modelled latencies) or `fwdbench count` (FLOPs, bytes, memory)";
    if local_gpu_count() == 0 {
        bail!("no NVIDIA GPU on this machine (no CUDA driver or no device), and `fwdbench run` times forwards on GPUs; without one, {instead}");
    }
    if !fwdbench::exec::cuda::cubins::KERNELS_BUILT {
        bail!("this fwdbench was built without its CUDA kernels (no nvcc at build time), so `fwdbench run` cannot time forwards: rebuild with NVCC or CUDA_HOME set, or meanwhile {instead}");
    }
    Ok(())
}

/// Visible GPUs, 0 without a driver (the launcher's check, not an error of its own).
fn local_gpu_count() -> usize {
    // SAFETY: probing only dlopens the library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return 0;
    }
    cudarc::driver::CudaContext::device_count().map_or(0, |n| n.max(0) as usize)
}

/// This node's launcher: one worker per local GPU, each re-running this command line.
fn launch_node(args: &RunArgs, dep: &Deployment, world: usize) -> anyhow::Result<()> {
    let node = launch::node_ranks(world, dep.nnodes, dep.node_rank)?;
    let have = local_gpu_count();
    if have < node.len() {
        return Err(launch::LaunchError::TooFewGpus { have, need: node.len() }.into());
    }
    let master = launch::master_address(args.nodes.ip.as_deref(), dep.dist_init_addr.as_deref())?;
    launch::bind_address(&master, dep.nnodes)?;
    eprintln!(
        "--deploy {}: {world} ranks over {} node(s); this node (rank {}) starts ranks {}..{}, rendezvous at {master}",
        args.deploy.deploy,
        dep.nnodes,
        dep.node_rank,
        node.start,
        node.end - 1
    );
    let forwarded: Vec<String> = std::env::args().skip(1).collect();
    Ok(launch::spawn_local_workers(&forwarded, node, world, &master)?)
}

/// One worker of a multi-process run: its GPU, NCCL communicators and share of the grid.
fn run_worker(w: &Worker, job: &Job) -> anyhow::Result<()> {
    let Job { opts, cfg, dep, ranks, shapes } = job;
    anyhow::ensure!(
        w.world == ranks.len(),
        "worker rank {} was started for {} ranks but --deploy {} has {}; start every node with the same deploy",
        w.rank,
        w.world,
        opts.deploy,
        ranks.len()
    );
    let bind = launch::bind_address(&w.master, dep.nnodes)?;
    let mut setup = setup_rank(w, &ranks[w.rank], &bind)?;
    let mut exec = CudaExecutor::with_gpu(ranks[w.rank], Values::Random { seed: opts.seed }, setup.gpu);
    fwdbench::bench::run_grid(opts, cfg, dep, &mut exec, &mut setup.rendezvous, shapes)
}

/// World size 1: the same rendezvous and NCCL set-up as every multi-rank run, in this
/// process, so a one-GPU machine exercises the NCCL path; without libnccl it runs without
/// communicators (a world of one has no collectives), and says so.
fn run_alone(job: &Job) -> anyhow::Result<()> {
    let Job { opts, cfg, dep, ranks, shapes } = job;
    let layout = ranks[0];
    fwdbench::exec::cuda::device::require_cuda()?;
    let me = Worker { rank: 0, world: 1, local_rank: 0, master: "127.0.0.1:0".into() };
    let (gpu, mut rendezvous) = match setup_rank(&me, &layout, "127.0.0.1:0") {
        Ok(s) => (s.gpu, s.rendezvous),
        Err(e) if e.chain().any(|c| matches!(c.downcast_ref::<NcclError>(), Some(NcclError::LibraryMissing))) => {
            eprintln!("note: libnccl.so.2 not found: this one-GPU run goes without NCCL communicators");
            let rendezvous = Host::bind("127.0.0.1:0")?.serve(1, &[], launch::rendezvous_timeout())?;
            (Gpu::new(0)?, rendezvous)
        }
        Err(e) => return Err(e),
    };
    let mut exec = CudaExecutor::with_gpu(layout, Values::Random { seed: opts.seed }, gpu);
    fwdbench::bench::run_grid(opts, cfg, dep, &mut exec, &mut rendezvous, shapes)
}

/// The results folder must be a folder we can write, before any shape is measured.
fn check_results_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("--results-dir {}: cannot create the folder; choose a writable one", dir.display()))?;
    let probe = dir.join(format!(".fwdbench-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("--results-dir {}: cannot write there; choose a writable folder", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Plans every shape of the grid for every rank before a device is opened: a shape no rank
/// can run is listed with its reason now (and skipped later), and a grid none of whose
/// shapes can run is an error here, not after minutes of weight initialisation.
fn plan_every_shape(
    cfg: &ModelConfig,
    ranks: &[RankLayout],
    shapes: &[(usize, usize)],
    grid: &std::path::Path,
) -> anyhow::Result<()> {
    use fwdbench::model::{build_plan, PlanOptions};
    use fwdbench::plan::Shape;
    let mut runnable = 0;
    let mut refused = Vec::new();
    for &(bsz, seq) in shapes {
        for shape in [Shape::prefill(bsz, seq), Shape::decode(bsz, seq)] {
            let failure = ranks.iter().find_map(|l| build_plan(cfg, *l, shape, PlanOptions::default()).err());
            match failure {
                None => runnable += 1,
                Some(e) => refused.push(format!("{} bsz {bsz} seq {seq}: {e}", shape.phase.name())),
            }
        }
    }
    if runnable == 0 {
        bail!(
            "--shapes {}: no shape of the grid can be planned on this deployment: {}",
            grid.display(),
            refused.join("; ")
        );
    }
    for r in &refused {
        eprintln!("note: will skip {r}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::common::{iteration_count, warmup_count};

    #[test]
    fn counts_are_bounded() {
        assert_eq!(iteration_count("10"), Ok(10));
        assert!(iteration_count("0").is_err() && iteration_count("1000000000").is_err());
        assert_eq!(warmup_count("0"), Ok(0));
        assert!(warmup_count("18446744073709551615").is_err() && warmup_count("-1").is_err());
    }

    #[test]
    fn the_timing_flag_wins_over_the_conf_key() {
        use fwdbench::bench::timing::TimingMethod::{Fwdbench, Seed};
        use fwdbench::config::run_conf::{load_run_conf, ConfLayers};
        let conf = |pairs: &[(&str, &str)]| {
            let cli: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            load_run_conf(std::path::Path::new("conf"), &ConfLayers::new("tp1"), &cli).unwrap()
        };
        assert_eq!(super::timing_methods(None, &conf(&[])).unwrap(), [Fwdbench]);
        assert_eq!(super::timing_methods(None, &conf(&[("timing", "seed")])).unwrap(), [Seed]);
        assert_eq!(super::timing_methods(Some("both"), &conf(&[("timing", "seed")])).unwrap(), [Fwdbench, Seed]);
        let e = super::timing_methods(None, &conf(&[("timing", "mean")])).unwrap_err().to_string();
        assert!(e.contains("`timing` = \"mean\""), "{e}");
    }
}
