//! `fwdbench count`: what a model costs on a deployment, from its plans.

use std::path::PathBuf;

use clap::Args;
use comfy_table::Table;
use serde::Serialize;

use super::common::{layouts, load_model, DeployArgs};
use fwdbench::model::{build_plan, PlanOptions};
use fwdbench::plan::cost::{count_params, PhaseCost};
use fwdbench::plan::memory::{fits, plan_memory, Footprint, Target, H200_BYTES, RESERVED_BYTES};
use fwdbench::plan::{RankLayout, Shape};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  fwdbench count --model deepseek --mconf full\n  fwdbench count --model deepseek --mconf full --deploy tp8ep8 --bsz 8 --seq 4096 --json"
)]
pub struct CountArgs {
    #[arg(long)]
    pub model: String,
    #[arg(long, default_value = "full")]
    pub mconf: String,
    #[arg(long, default_value = "model_conf")]
    pub model_dir: PathBuf,
    /// Override a model config key, e.g. --set num_hidden_layers=4. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    #[arg(long, default_value_t = 1)]
    pub bsz: usize,
    #[arg(long, default_value_t = 2048)]
    pub seq: usize,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub deploy: DeployArgs,
}

#[derive(Debug, Serialize)]
pub struct CountReport {
    pub model: String,
    pub deploy: String,
    pub bsz: usize,
    pub seq: usize,
    pub params_total: f64,
    pub params_active: f64,
    /// Prefill of bsz x seq tokens (LM head on the last position of each sequence).
    pub prefill_flops: f64,
    /// One decode step of bsz tokens over seq cached tokens.
    /// None when the decode shape is invalid (e.g. past GPT-3's learned positions).
    pub decode_flops: Option<f64>,
    pub weight_bytes_per_rank: f64,
    pub kv_bytes_per_rank: f64,
    pub activation_bytes_per_rank: f64,
    pub prefill_bytes_per_rank: f64,
    pub decode_bytes_per_rank: f64,
    pub ranks: usize,
    pub fits: bool,
    pub attention_flops: &'static str,
    /// Weight format (`quantization_config`, `--quant`): bf16 or fp8.
    pub quant: fwdbench::quant::Quant,
}

pub fn report(args: &CountArgs) -> anyhow::Result<CountReport> {
    let (_, cfg) = load_model(&args.model_dir, &args.model, &args.mconf, &args.sets)?;
    let (_, dep) = args.deploy.load()?;
    let cfg = dep.quantize(cfg);
    let all = layouts(&dep)?;
    let single = build_plan(&cfg, RankLayout::single(), Shape::decode(1, 1), PlanOptions::default())?;
    let params = count_params(&single, &cfg);
    // Totals over every rank of one forward; memory of the busiest rank.
    let decode_valid = build_plan(&cfg, all[0], Shape::decode(args.bsz, args.seq), PlanOptions::default()).is_ok();
    let (mut prefill_flops, mut decode_flops) = (0.0, 0.0);
    let (mut peak, mut pbytes, mut dbytes) = (Footprint::default(), 0f64, 0f64);
    for layout in &all {
        let prefill = build_plan(&cfg, *layout, Shape::prefill(args.bsz, args.seq), PlanOptions::default())?;
        // An invalid decode shape still counts memory from the prefill-sized cache.
        let decode_shape =
            if decode_valid { Shape::decode(args.bsz, args.seq) } else { Shape::decode(args.bsz, args.seq - 1) };
        let decode = build_plan(&cfg, *layout, decode_shape, PlanOptions::default())?;
        let (pc, dc) = (PhaseCost::of(&prefill, &cfg), PhaseCost::of(&decode, &cfg));
        prefill_flops += pc.flops;
        decode_flops += dc.flops;
        let (pm, dm) = (plan_memory(&prefill, Target::H200), plan_memory(&decode, Target::H200));
        // The prefill's cache is the decode's minus one token: the decode holds the peak.
        peak = peak.max(pm.footprint()).max(dm.footprint());
        pbytes = pbytes.max(pc.weight_bytes + pc.kv_bytes + pc.act_bytes);
        dbytes = dbytes.max(dc.weight_bytes + dc.kv_bytes + dc.act_bytes);
    }
    let fits = fits(&peak, 0, H200_BYTES).is_ok();
    Ok(CountReport {
        model: format!("{} ({})", args.model, args.mconf),
        deploy: args.deploy.deploy.clone(),
        bsz: args.bsz,
        seq: args.seq,
        params_total: params.total,
        params_active: params.active,
        prefill_flops,
        decode_flops: decode_valid.then_some(decode_flops),
        weight_bytes_per_rank: peak.weight_bytes as f64,
        kv_bytes_per_rank: peak.kv_bytes as f64,
        activation_bytes_per_rank: peak.arena_bytes as f64,
        prefill_bytes_per_rank: pbytes,
        decode_bytes_per_rank: dbytes,
        ranks: all.len(),
        fits,
        attention_flops: "both matmuls (QK^T and PV), causal pairs S(S+1)/2 in prefill",
        quant: cfg.quant,
    })
}

pub fn count(args: CountArgs) -> anyhow::Result<()> {
    let r = report(&args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let g = |b: f64| format!("{:.2} GB", b / 1e9);
    let mut t = Table::new();
    t.set_header(vec!["", "value"]);
    let rows = [
        ("model".to_string(), r.model.clone()),
        ("deploy".to_string(), format!("{} ({} ranks)", r.deploy, r.ranks)),
        (
            "parameters".to_string(),
            format!("{:.2}B total, {:.2}B active per token", r.params_total / 1e9, r.params_active / 1e9),
        ),
        (
            format!("prefill {}x{}", r.bsz, r.seq),
            format!("{:.2} TFLOP (all ranks), {} moved per rank", r.prefill_flops / 1e12, g(r.prefill_bytes_per_rank)),
        ),
        (
            format!("decode {} over {}", r.bsz, r.seq),
            match r.decode_flops {
                Some(f) => format!("{:.3} TFLOP (all ranks), {} moved per rank", f / 1e12, g(r.decode_bytes_per_rank)),
                None => "n/a: context exceeds the model's learned positions".to_string(),
            },
        ),
        (
            "weights per rank".to_string(),
            format!(
                "{} ({})",
                g(r.weight_bytes_per_rank),
                match r.quant {
                    fwdbench::quant::Quant::Fp8 => "fp8 e4m3 projections and experts with 128x128 block scales",
                    fwdbench::quant::Quant::Bf16 => "bf16",
                }
            ),
        ),
        ("KV cache per rank".to_string(), g(r.kv_bytes_per_rank)),
        ("activations per rank".to_string(), g(r.activation_bytes_per_rank)),
        (
            "fits on an H200".to_string(),
            format!(
                "{} (capacity {}, {} kept free)",
                if r.fits { "yes" } else { "no" },
                g(H200_BYTES as f64),
                g(RESERVED_BYTES as f64)
            ),
        ),
        ("attention FLOPs".to_string(), r.attention_flops.to_string()),
    ];
    for (k, v) in rows {
        t.add_row(vec![k, v]);
    }
    println!("{t}");
    Ok(())
}
