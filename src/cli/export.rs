//! `fwdbench export`: the model fwdbench would time, as a Hub-format checkpoint folder.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::common::ModelArgs;
use fwdbench::export::config::{copy_tokenizer, export_config};
use fwdbench::export::{export, ExportOptions, StoredDType};
use fwdbench::weights::{RandomWeights, SafetensorsWeights, WeightSource};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dtype {
    Bf16,
    F32,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  fwdbench export --model qwen --mconf 2l --out /tmp/qwen_2l\n  fwdbench export --model deepseek --mconf full --layers 4 --set num_experts_per_tok=4 --out /tmp/ds_4l\n  fwdbench export --model qwen --mconf full --weights /models/Qwen3-30B-A3B --layers 2 --out /tmp/qwen_real_2l\n\nThen: python python/reference/reference_logits.py --engine hf --model /tmp/qwen_2l --ids ids.json --out expect.safetensors\n      fwdbench check --config /tmp/qwen_2l/config.json --weights /tmp/qwen_2l --input ids.json --expect expect.safetensors\n\n--set overrides are written into the exported config.json."
)]
pub struct ExportArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Keep only the first N decoder layers (a small version of a big model).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub layers: Option<u32>,
    /// Values from this checkpoint (a .safetensors file, an index json or a folder) instead of the random weights.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Seed of the random weights (the same as `run --seed`).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// New or empty folder to write into.
    #[arg(long)]
    pub out: PathBuf,
    /// Storage of the bf16 weights (tensors fwdbench keeps in f32 stay f32).
    #[arg(long, value_enum, default_value = "bf16")]
    pub dtype: Dtype,
    /// Largest safetensors shard, MiB.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub max_shard_mib: u64,
}

pub fn run_export(args: ExportArgs) -> anyhow::Result<()> {
    // The model as `run` reads it: validated, and its key warnings printed once.
    let (dir, _) = args.model.load()?;
    let path = dir.join(format!("config_{}.json", args.model.mconf));
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let base: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
    let dtype = match args.dtype {
        Dtype::Bf16 => StoredDType::BF16,
        Dtype::F32 => StoredDType::F32,
    };
    let overrides = super::parse_sets(&args.model.sets)?;
    let json = export_config(&base, &overrides, args.layers.map(|n| n as usize), dtype, &path.display().to_string())
        .with_context(|| format!("--model {} --mconf {}", args.model.model, args.model.mconf))?;
    let random = RandomWeights { seed: args.seed };
    let loaded = match &args.weights {
        Some(w) => Some(SafetensorsWeights::open(w).with_context(|| format!("--weights {}", w.display()))?),
        None => None,
    };
    let src: &dyn WeightSource = match &loaded {
        Some(w) => w,
        None => &random,
    };
    let opts = ExportOptions { dtype, max_shard_bytes: (args.max_shard_mib as usize) << 20 };
    let summary =
        export(&json, src, &args.out, &opts).with_context(|| format!("exporting to {}", args.out.display()))?;
    let mut copied = copy_tokenizer(&dir, &args.out)?;
    if copied.is_empty() {
        if let Some(w) = args.weights.as_deref().filter(|w| w.is_dir()) {
            copied = copy_tokenizer(w, &args.out)?;
        }
    }
    println!(
        "exported {} {} ({} layers, weights {}) to {}: {} tensors in {} shard(s), {:.1} MiB {}",
        args.model.model,
        args.model.mconf,
        summary.config.num_layers,
        src.describe(),
        args.out.display(),
        summary.tensors,
        summary.shards,
        summary.data_bytes as f64 / (1 << 20) as f64,
        dtype.torch_name(),
    );
    match copied.is_empty() {
        true => println!("no tokenizer files in {} (token ids still work)", dir.display()),
        false => println!("tokenizer files: {}", copied.join(", ")),
    }
    Ok(())
}
