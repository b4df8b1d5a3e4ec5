//! `fwdbench kernel check` and `fwdbench kernel bench`: GPU ops against the CPU reference
//! and against the roofline. Without `--op`, `check` takes every op of a model's prefill
//! and decode plans in turn; with `--op`, both run that one op's plan (`Plan::extract_op`)
//! at the shape and deployment `run` would plan; `bench --suite seed` runs the seed
//! pipeline's per-layer microbenchmarks.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use super::common::{layouts, load_model, DeployArgs};
use fwdbench::bench::kernel::{append_csv, csv_line, run_case, summary_line, CheckResult, KernelOptions, OpCase};
use fwdbench::bench::suite::{seed_points, SuiteModels};
use fwdbench::check::compare::BF16_TOL;
use fwdbench::check::ops::check_ops;
use fwdbench::config::model::ModelConfig;
use fwdbench::config::run_conf::{AttentionBackend, Deployment};
use fwdbench::exec::cuda::executor::CudaExecutor;
use fwdbench::exec::cuda::gpu::{Fp8LinearKernels, KernelChoice, LinearKernels};
use fwdbench::exec::cuda::weights::Values;
use fwdbench::model::{build_plan, PlanOptions};
use fwdbench::plan::memory::DoesNotFit;
use fwdbench::plan::{OpQuery, RankLayout, RoutingMode, Shape};

#[derive(Debug, Args)]
pub struct KernelArgs {
    #[command(subcommand)]
    pub command: KernelCommand,
}

#[derive(Debug, Subcommand)]
pub enum KernelCommand {
    /// Check GPU ops against the CPU reference: every op of a model, or one with --op.
    Check(KernelCheckArgs),
    /// Check and time one op (--op) or the seed suite (--suite seed) against the roofline.
    Bench(KernelBenchArgs),
}

/// Which op, of which model, at which shape and deployment.
#[derive(Debug, Args)]
pub struct OpArgs {
    /// A model of model_conf/ (or give --config, or a bare GEMM with --op linear --m --n --k).
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long, default_value = "2l")]
    pub mconf: String,
    #[arg(long, default_value = "model_conf")]
    pub model_dir: PathBuf,
    /// A config.json instead of --model/--mconf (e.g. a test fixture).
    #[arg(long, conflicts_with = "model")]
    pub config: Option<PathBuf>,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// One op: a family (moe, attention, mla, linear, norm, route, ...), a kind
    /// (mla_decode_attention, head_norm, ...) or a site (attn.qkv).
    #[arg(long)]
    pub op: Option<String>,
    /// The op's layer (default: the first layer that has one).
    #[arg(long, requires = "op")]
    pub layer: Option<usize>,
    /// prefill or decode (--op only; without --op, check runs a prefill then a decode).
    #[arg(long, default_value = "prefill")]
    pub phase: String,
    #[arg(long, default_value_t = 2)]
    pub bsz: usize,
    /// Prefill: tokens per sequence. Decode: tokens already cached (the step sees seq + 1).
    #[arg(long, default_value_t = 37)]
    pub seq: usize,
    /// A prefill of one sequence of T tokens (instead of --phase/--bsz/--seq).
    #[arg(long, requires = "op", conflicts_with_all = ["bsz", "seq"])]
    pub tokens: Option<usize>,
    #[command(flatten)]
    pub deploy: DeployArgs,
    /// The rank of the deployment whose shard is taken (--op only).
    #[arg(long, default_value_t = 0, requires = "op")]
    pub rank: usize,
    /// A bare GEMM out[M, N] = x[M, K] . W^T (with --op linear, no model).
    #[arg(long, requires_all = ["n", "k"])]
    pub m: Option<usize>,
    #[arg(long, requires_all = ["m", "k"])]
    pub n: Option<usize>,
    #[arg(long, requires_all = ["m", "n"])]
    pub k: Option<usize>,
    /// Seed of the random weights and inputs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// MoE expert choice: a route op's (model, balanced, or seeded uniform; the router's weights stay), or how a lone moe op's expert ids are drawn (model and uniform: seeded uniform top-k). Default: the conf key `routing`, else model.
    #[arg(long, value_parser = RoutingMode::NAMES)]
    pub routing: Option<String>,
    /// Attention kernels: fa3 (TMA + wgmma, default) or fa2 (mma.sync); overrides the conf's
    /// attention_backend.
    #[arg(long)]
    pub attention: Option<String>,
    /// GEMM of linears: cublaslt (the default: cuBLASLt for bf16 and its block-scaled
    /// matmul for FP8) or tma (the Hopper layer's kernels: the gate GEMM for bf16,
    /// kernels/gemm_fp8.cu for FP8).
    #[arg(long)]
    pub gemm: Option<String>,
}

impl OpArgs {
    /// The kernel families these flags (and the conf's attention_backend) select.
    fn kernel_choice(&self, dep: &Deployment) -> anyhow::Result<KernelChoice> {
        let attention = match &self.attention {
            None => dep.attention_backend,
            Some(name) => AttentionBackend::parse(name).with_context(|| {
                let valid: Vec<&str> = AttentionBackend::ALL.iter().map(|b| b.name()).collect();
                format!("--attention {name}: fwdbench implements {}", valid.join(" and "))
            })?,
        };
        let (linear, fp8_linear) = match self.gemm.as_deref() {
            None => (LinearKernels::CublasLt, Fp8LinearKernels::CublasLt),
            Some("cublaslt") => (LinearKernels::CublasLt, Fp8LinearKernels::CublasLt),
            Some("tma") => (LinearKernels::TmaGate, Fp8LinearKernels::Wgmma),
            Some(other) => bail!("--gemm {other}: expected cublaslt or tma"),
        };
        Ok(KernelChoice { attention, linear, fp8_linear })
    }
}

/// A GPU executor that binds plans to the `choice` kernels.
fn executor(choice: KernelChoice, layout: RankLayout, seed: u64) -> anyhow::Result<CudaExecutor<'static>> {
    let exec = CudaExecutor::new(layout, Values::Random { seed })?;
    exec.gpu().set_kernel_choice(choice);
    Ok(exec)
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  fwdbench kernel check --model deepseek --mconf 2l --set n_routed_experts=16 --bsz 2 --seq 37
  fwdbench kernel check --model deepseek --mconf 2l --op mla_decode_attention --phase decode --bsz 3 --seq 29
  fwdbench kernel check --op linear --m 512 --n 2048 --k 7168 --quant fp8")]
pub struct KernelCheckArgs {
    #[command(flatten)]
    pub op: OpArgs,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  fwdbench kernel bench --model deepseek --mconf full --op moe --tokens 4096
  fwdbench kernel bench --model deepseek --mconf full --op moe --tokens 4096 --routing balanced
  fwdbench kernel bench --model sigma --mconf full --op attention --phase decode --bsz 32 --seq 4096 --deploy tp8
  fwdbench kernel bench --op linear --m 4096 --n 4096 --k 7168 --csv results/kernel_bench/adhoc.csv
  fwdbench kernel bench --suite seed")]
pub struct KernelBenchArgs {
    #[command(flatten)]
    pub op: OpArgs,
    /// A suite of points instead of one op: `seed` (the seed pipeline's microbenchmarks).
    #[arg(long, conflicts_with = "op")]
    pub suite: Option<String>,
    /// Print the suite's points (op, dims, FLOPs, bytes) without a GPU.
    #[arg(long, requires = "suite")]
    pub list: bool,
    #[arg(long, default_value_t = 3, value_parser = super::common::warmup_count)]
    pub warmup: usize,
    #[arg(long, default_value_t = 25, value_parser = super::common::iteration_count)]
    pub iters: usize,
    /// Do not flush the L2 cache before each timed iteration.
    #[arg(long)]
    pub no_flush: bool,
    /// Time only: skip the CPU reference check.
    #[arg(long)]
    pub no_check: bool,
    /// Append a row per op to this CSV (header once). The suite's default:
    /// <results-dir>/kernel_bench/seed.csv, rewritten each run.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    #[arg(long, default_value = "results")]
    pub results_dir: PathBuf,
}

pub fn kernel(args: KernelArgs) -> anyhow::Result<()> {
    match args.command {
        KernelCommand::Check(a) if a.op.op.is_none() => check_model(&a.op),
        KernelCommand::Check(a) => {
            let (mut case, choice) = op_case(&a.op)?;
            // A check that compares nothing must not pass: refuse before touching the GPU.
            if let Some(why) = case.cpu_check_skip() {
                bail!(
                    "{}: the CPU reference would not run ({why}), so there is nothing to check at this size; \
                     shrink the shape (--tokens, --bsz/--seq, or narrower dims with --set, e.g. --set hidden_size=64) \
                     or time it with `fwdbench kernel bench --no-check`",
                    case.case
                );
            }
            case.case = format!("{}{}", case.case, fp8_gemm_note(&case, choice));
            let opts = KernelOptions { warmup: 0, iters: 0, flush: false, seed: a.op.seed, check: true };
            let row = run_on_gpu(choice, &case, &opts)?;
            println!("{}", summary_line(&case, &row));
            fail_unless_passed(&[row.check])
        }
        KernelCommand::Bench(b) => bench(b),
    }
}

/// Which GEMM an FP8 case's linears run (empty for bf16 cases), for the case label.
fn fp8_gemm_note(case: &OpCase, choice: KernelChoice) -> String {
    if fwdbench::quant::Quant::of_plan(&case.plan) == fwdbench::quant::Quant::Fp8 {
        format!(", {:?} fp8 gemm", choice.fp8_linear)
    } else {
        String::new()
    }
}

fn model_label(a: &OpArgs) -> String {
    match (&a.config, &a.model) {
        (Some(path), _) => path.display().to_string(),
        (None, Some(model)) => format!("{model} {}", a.mconf),
        (None, None) => "gemm".into(),
    }
}

fn load_cfg(a: &OpArgs) -> anyhow::Result<ModelConfig> {
    let mut cfg = match (&a.config, &a.model) {
        (Some(path), _) => fwdbench::config::hf::load_model_config(path, &super::parse_sets(&a.sets)?)?,
        (None, Some(model)) => load_model(&a.model_dir, model, &a.mconf, &a.sets)?.1,
        (None, None) => bail!("give --model (or --config), or a bare GEMM with --op linear --m M --n N --k K"),
    };
    if let Some(q) = a.deploy.layers.quant {
        cfg.quant = q;
    }
    Ok(cfg)
}

fn shape(a: &OpArgs) -> anyhow::Result<Shape> {
    Ok(match (a.tokens, a.phase.as_str()) {
        (Some(t), "prefill") => Shape::prefill(1, t),
        (Some(_), _) => bail!("--tokens T is a prefill of one sequence of T tokens: drop --phase {}", a.phase),
        (None, "prefill") => Shape::prefill(a.bsz, a.seq),
        (None, "decode") => Shape::decode(a.bsz, a.seq),
        (None, other) => bail!("--phase {other}: expected prefill or decode"),
    })
}

/// The one-op case the flags name and the kernels it runs on; every mistake is found here,
/// before any GPU work. The conf is read once.
fn op_case(a: &OpArgs) -> anyhow::Result<(OpCase, KernelChoice)> {
    let name = a.op.clone().context("--op is required here")?;
    if let (Some(m), Some(n), Some(k)) = (a.m, a.n, a.k) {
        if name != "linear" || a.model.is_some() || a.config.is_some() {
            bail!("--m/--n/--k build a bare GEMM: use them with --op linear and without --model/--config");
        }
        let fp8 = a.deploy.layers.quant == Some(fwdbench::quant::Quant::Fp8);
        let tag = if fp8 { " fp8" } else { "" };
        let mut case = OpCase::gemm(format!("linear gemm m{m} n{n} k{k}{tag}"), m, n, k);
        if fp8 {
            fwdbench::plan::quantize_linear_weights(&mut case.plan);
        }
        let (_, dep) = a.deploy.load()?;
        return Ok((case, a.kernel_choice(&dep)?));
    }
    let cfg = load_cfg(a)?;
    let (conf, dep) = a.deploy.load()?;
    let choice = a.kernel_choice(&dep)?;
    let cfg = dep.quantize(cfg);
    let ranks = layouts(&dep)?;
    let layout = *ranks.get(a.rank).with_context(|| {
        format!("--rank {}: --deploy {} has {} ranks (0..{})", a.rank, a.deploy.deploy, ranks.len(), ranks.len() - 1)
    })?;
    let shape = shape(a)?;
    let layer = a.layer.map(|l| format!(" layer {l}")).unwrap_or_default();
    let key = format!("{name}{layer} {} {} rank{} {shape:?}", model_label(a), a.deploy.deploy, a.rank);
    let query = OpQuery { name, layer: a.layer };
    let routing = super::run::routing_mode(a.routing.as_deref(), &dep);
    let case = OpCase::from_model(key, &model_label(a), &cfg, layout, shape, &query)?.with_routing(routing, a.seed);
    // After every naming mistake has been reported alone.
    super::common::print_conf_notes(Some((&conf, &dep)), fwdbench::config::run_conf::Subcommand::Kernel);
    Ok((case, choice))
}

fn run_on_gpu(
    choice: KernelChoice,
    case: &OpCase,
    opts: &KernelOptions,
) -> anyhow::Result<fwdbench::bench::kernel::KernelRow> {
    let mut exec = executor(choice, case.plan.layout, opts.seed)?;
    run_case(&mut exec, case, opts).with_context(|| format!("{} ({})", case.case, case.site()))
}

fn fail_unless_passed(checks: &[CheckResult]) -> anyhow::Result<()> {
    let failed = checks.iter().filter(|c| matches!(c, CheckResult::Fail(_))).count();
    if failed > 0 {
        bail!("{failed} GPU op(s) differ from the CPU reference (tolerance {BF16_TOL:.0e}, NaN fails)");
    }
    Ok(())
}

fn bench(b: KernelBenchArgs) -> anyhow::Result<()> {
    let opts = KernelOptions {
        warmup: b.warmup,
        iters: b.iters.max(1),
        flush: !b.no_flush,
        seed: b.op.seed,
        check: !b.no_check,
    };
    match b.suite.as_deref() {
        None => {
            let (mut case, choice) = op_case(&b.op)?;
            case.case = format!(
                "{} [{} attention, {:?} gemm{}]",
                case.case,
                choice.attention.name(),
                choice.linear,
                fp8_gemm_note(&case, choice)
            );
            let row = run_on_gpu(choice, &case, &opts)?;
            println!("{}", summary_line(&case, &row));
            if let Some(path) = &b.csv {
                append_csv(path, &csv_line("adhoc", &case, Ok(&row), opts.flush))?;
            }
            fail_unless_passed(&[row.check])
        }
        Some("seed") => {
            let path = b.csv.clone().unwrap_or(b.results_dir.join("kernel_bench").join("seed.csv"));
            seed_suite(&b.op, &opts, b.list, &path)
        }
        Some(other) => {
            bail!("--suite {other}: the only suite is `seed` (the seed pipeline's per-layer microbenchmarks)")
        }
    }
}

fn seed_suite(a: &OpArgs, opts: &KernelOptions, list: bool, path: &Path) -> anyhow::Result<()> {
    let models = SuiteModels::load(&a.model_dir)?;
    let (_, dep) = a.deploy.load()?;
    let routing = super::run::routing_mode(a.routing.as_deref(), &dep);
    let points = seed_points();
    if list {
        for (key, point) in &points {
            let case = models.case(key, point)?.with_routing(routing, opts.seed);
            let c = case.cost();
            let check = case.cpu_check_skip().map(|w| format!("skipped({w})")).unwrap_or("cpu check".into());
            println!(
                "{key}: {} [{}] {:.3} GFLOP {:.2} MB; {check}",
                case.site(),
                case.dims(),
                c.flops / 1e9,
                c.bytes() / 1e6
            );
        }
        println!("{} points", points.len());
        return Ok(());
    }
    fwdbench::exec::cuda::device::require_cuda()?;
    let choice = a.kernel_choice(&dep)?;
    if path.exists() {
        std::fs::remove_file(path).with_context(|| format!("replacing {}", path.display()))?;
    }
    let (mut checks, mut errors) = (Vec::new(), 0);
    // One executor per (model, layout) run of points: opening a GPU costs more than most ops.
    let mut open: Option<(String, RankLayout, CudaExecutor)> = None;
    for (i, (key, point)) in points.iter().enumerate() {
        let case = models.case(key, point)?.with_routing(routing, opts.seed);
        eprint!("[{}/{}] ", i + 1, points.len());
        if !open.as_ref().is_some_and(|(m, l, _)| *m == case.model && *l == case.plan.layout) {
            // The previous GPU's weights are freed before the next one's are generated.
            drop(open.take());
            let exec = executor(choice, case.plan.layout, opts.seed)?;
            open = Some((case.model.clone(), case.plan.layout, exec));
        }
        let exec = &mut open.as_mut().expect("opened above").2;
        match run_case(exec, &case, opts) {
            Ok(row) => {
                println!("{}", summary_line(&case, &row));
                append_csv(path, &csv_line("seed", &case, Ok(&row), opts.flush))?;
                checks.push(row.check);
            }
            Err(e) => {
                let fit = e.downcast_ref::<DoesNotFit>().is_some();
                let why = if fit { "does not fit on this GPU".to_string() } else { format!("error: {e:#}") };
                println!("{key}: skipped: {e:#}");
                append_csv(path, &csv_line("seed", &case, Err(&why), opts.flush))?;
                errors += usize::from(!fit);
            }
        }
    }
    println!("seed suite: {} points, rows in {}", points.len(), path.display());
    fail_unless_passed(&checks)?;
    if errors > 0 {
        bail!("{errors} suite point(s) failed on the GPU (see the `error:` lines above)");
    }
    Ok(())
}

/// Today's whole-model check: every op of a prefill and the decode after it.
fn check_model(a: &OpArgs) -> anyhow::Result<()> {
    if a.deploy.deploy != "tp1" || a.tokens.is_some() || a.m.is_some() {
        bail!(
            "--deploy, --tokens and --m/--n/--k choose one op's plan: give --op too (the whole-model check runs tp1)"
        );
    }
    let cfg = load_cfg(a)?;
    // The conf is still read, so a --conf or layer that asks for more ranks is not dropped.
    let (conf, dep) = a.deploy.load()?;
    let ranks = layouts(&dep)?.len();
    if ranks != 1 {
        bail!("the conf asks for {ranks} ranks, but the whole-model check runs tp1: give --op to check one op's shard");
    }
    super::common::print_conf_notes(Some((&conf, &dep)), fwdbench::config::run_conf::Subcommand::Kernel);
    let label = model_label(a);
    let routing = super::run::routing_mode(a.routing.as_deref(), &dep);
    let opts = PlanOptions { all_logits: false, cache_len: Some(a.seq + 1) };
    let mut prefill = build_plan(&cfg, RankLayout::single(), Shape::prefill(a.bsz, a.seq), opts)?;
    let mut decode = build_plan(&cfg, RankLayout::single(), Shape::decode(a.bsz, a.seq), opts)?;
    prefill.set_routing(routing, a.seed);
    decode.set_routing(routing, a.seed);
    let ids = fwdbench::inputs::random_ids(a.bsz, a.seq + 1, cfg.vocab_size, a.seed);
    let prefill_ids = ids.iter().map(|r| r[..a.seq].to_vec()).collect();
    let decode_ids = ids.iter().map(|r| r[a.seq..].to_vec()).collect();
    let mut gpu = executor(a.kernel_choice(&dep)?, RankLayout::single(), a.seed)?;
    let results = check_ops(&mut gpu, a.seed, &[(prefill, prefill_ids), (decode, decode_ids)])?;
    let failed: Vec<_> = results.iter().filter(|r| !r.pass).collect();
    let mut worst: std::collections::BTreeMap<&str, f64> = Default::default();
    for r in &results {
        let e = worst.entry(r.kind).or_default();
        *e = e.max(r.rel_l2);
    }
    for r in &failed {
        println!(
            "FAIL {label} op {} {} ({}): rel-L2 {:.3e}, max abs {:.3e}{}",
            r.index,
            r.name,
            r.kind,
            r.rel_l2,
            r.max_abs,
            if r.nan { ", NaN/unwritten" } else { "" }
        );
    }
    let kinds: Vec<String> = worst.iter().map(|(k, v)| format!("{k} {v:.1e}")).collect();
    println!(
        "{} kernel check {label} b{} s{}: {} ops, {} failed (tol {BF16_TOL:.0e}); worst rel-L2 by kind: {}",
        if failed.is_empty() { "PASS" } else { "FAIL" },
        a.bsz,
        a.seq,
        results.len(),
        failed.len(),
        kinds.join(", ")
    );
    if !failed.is_empty() {
        bail!("{} GPU ops differ from the CPU reference", failed.len());
    }
    Ok(())
}
