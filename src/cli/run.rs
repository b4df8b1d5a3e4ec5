//! `fwdbench run`: time prefill and decode forwards over a shapes grid on the GPUs.

use std::path::PathBuf;

use clap::Args;

use fwdbench::bench::BenchOptions;
use fwdbench::plan::Phase;

use super::common::{layouts, load_model, DeployArgs};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  fwdbench run --model qwen --mconf 2l --deploy tp1\n  fwdbench run --model deepseek --mconf 2l --deploy tp2ep2 --shapes conf/bsz_seq.csv --save"
)]
pub struct RunArgs {
    #[arg(long)]
    pub model: String,
    #[arg(long, default_value = "2l")]
    pub mconf: String,
    #[arg(long, default_value = "model_conf")]
    pub model_dir: PathBuf,
    /// Override a model config key, e.g. --set num_hidden_layers=4. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    #[command(flatten)]
    pub deploy: DeployArgs,
    /// Shapes grid, lines like {1,8,64};{128,1024}.
    #[arg(long, default_value = "conf/bsz_seq.csv")]
    pub shapes: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    #[arg(long, default_value_t = 10)]
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
    /// Per-op profile of a phase (prefill or decode) into results/<model>_profile/.
    #[arg(long)]
    pub profile: Option<String>,
    #[arg(long, default_value = "results")]
    pub results_dir: PathBuf,
    /// Weights seed (random weights).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Real text, tokenised with the model folder's tokenizer.json, instead of random ids.
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
}

impl RunArgs {
    /// The library's options; `model_dir` is the model's own folder (its tokenizer).
    fn bench_options(&self, model_dir: PathBuf) -> BenchOptions {
        BenchOptions {
            model: self.model.clone(),
            mconf: self.mconf.clone(),
            base: self.deploy.base.clone(),
            deploy: self.deploy.deploy.clone(),
            model_dir,
            warmup: self.warmup,
            iters: self.iters,
            flush: !self.no_flush,
            graph: !self.no_graph,
            // Other names (the seed's `both`, `none`) profile nothing, as before.
            profile: [Phase::Prefill, Phase::Decode].into_iter().find(|p| self.profile.as_deref() == Some(p.name())),
            seed: self.seed,
            prompt_file: self.prompt_file.clone(),
            results_dir: self.results_dir.clone(),
            save: self.save,
        }
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    // Every input is validated before any device is touched.
    let (model_dir, cfg) = load_model(&args.model_dir, &args.model, &args.mconf, &args.sets)?;
    let (conf, dep) = args.deploy.load()?;
    let ranks = layouts(&dep)?;
    let shapes = fwdbench::config::shapes::load_shapes(&args.shapes)?;
    if let Some(p) = &args.prompt_file {
        fwdbench::inputs::prompt_ids(p, &model_dir, 1, 1)?;
    }
    let ignored = conf.ignored_keys();
    if !ignored.is_empty() {
        eprintln!("conf keys fwdbench does not implement (ignored): {}", ignored.join(", "));
    }
    fwdbench::exec::cuda::device::require_cuda()?;
    fwdbench::bench::run_grid(&args.bench_options(model_dir), &cfg, &dep, &ranks, &shapes)
}
