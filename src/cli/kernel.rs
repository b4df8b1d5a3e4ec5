//! `fwdbench kernel check`: every GPU op of a model's prefill and decode plans against the
//! CPU reference, one op at a time, on random data.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};

use super::common::load_model;
use fwdbench::check::compare::BF16_TOL;
use fwdbench::check::ops::check_ops;
use fwdbench::exec::cuda::executor::CudaExecutor;
use fwdbench::exec::cuda::weights::Values;
use fwdbench::model::{build_plan, PlanOptions};
use fwdbench::plan::{RankLayout, Shape};

#[derive(Debug, Args)]
pub struct KernelArgs {
    #[command(subcommand)]
    pub command: KernelCommand,
}

#[derive(Debug, Subcommand)]
pub enum KernelCommand {
    /// Check every op of a model's prefill and decode against the CPU reference.
    Check(KernelCheckArgs),
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  fwdbench kernel check --model deepseek --mconf 2l --set n_routed_experts=16 --bsz 2 --seq 37"
)]
pub struct KernelCheckArgs {
    /// A model of model_conf/ (or give --config).
    #[arg(long, required_unless_present = "config")]
    pub model: Option<String>,
    #[arg(long, default_value = "2l")]
    pub mconf: String,
    #[arg(long, default_value = "model_conf")]
    pub model_dir: PathBuf,
    /// A config.json to check instead of --model/--mconf (e.g. a test fixture).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    #[arg(long, default_value_t = 2)]
    pub bsz: usize,
    /// Prompt length of the prefill; the decode step then sees seq + 1 keys.
    #[arg(long, default_value_t = 37)]
    pub seq: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub fn kernel(args: KernelArgs) -> anyhow::Result<()> {
    match args.command {
        KernelCommand::Check(a) => check(a),
    }
}

fn check(a: KernelCheckArgs) -> anyhow::Result<()> {
    let cfg = match &a.config {
        Some(path) => fwdbench::config::hf::load_model_config(path, &super::parse_sets(&a.sets)?)?,
        None => load_model(&a.model_dir, a.model.as_deref().unwrap_or_default(), &a.mconf, &a.sets)?.1,
    };
    let opts = PlanOptions { all_logits: false, cache_len: Some(a.seq + 1) };
    let prefill = build_plan(&cfg, RankLayout::single(), Shape::prefill(a.bsz, a.seq), opts)?;
    let decode = build_plan(&cfg, RankLayout::single(), Shape::decode(a.bsz, a.seq), opts)?;
    let ids = fwdbench::inputs::random_ids(a.bsz, a.seq + 1, cfg.vocab_size, a.seed);
    let prefill_ids = ids.iter().map(|r| r[..a.seq].to_vec()).collect();
    let decode_ids = ids.iter().map(|r| r[a.seq..].to_vec()).collect();
    let mut gpu = CudaExecutor::new(RankLayout::single(), Values::Random { seed: a.seed })?;
    let results = check_ops(&mut gpu, a.seed, &[(prefill, prefill_ids), (decode, decode_ids)])?;
    let label = a.config.as_ref().map(|p| p.display().to_string()).unwrap_or(format!(
        "{} {}",
        a.model.as_deref().unwrap_or_default(),
        a.mconf
    ));
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
