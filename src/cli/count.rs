//! `fwdbench count`: what models cost on deployments, from their plans, in one table.
//!
//! Every (model, mconf, deploy) combination of the flags is one column of the terminal
//! table (one row of `--csv`): parameters, FLOPs of one prefill and one decode forward over
//! every rank, the bytes each rank moves and sends through collectives, and the busiest
//! rank's memory by kind, as the memory planner lays it out.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use comfy_table::Table;
use serde::Serialize;

use super::common::{layouts, load_model, ConfLayerArgs, DeployArgs};
use fwdbench::config::model::ModelConfig;
use fwdbench::config::run_conf::{conf_notes, Deployment, Subcommand};
use fwdbench::dist::comm_model::{CommModel, Mode};
use fwdbench::dist::projection::plan_comm_time;
use fwdbench::model::{build_plan, PlanOptions};
use fwdbench::plan::cost::{count_params, PhaseCost};
use fwdbench::plan::memory::{fits, plan_memory, Footprint, Target, H200_BYTES, RESERVED_BYTES};
use fwdbench::plan::{RankLayout, Shape};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  fwdbench count --model deepseek --mconf full\n  \
    fwdbench count --model deepseek --mconf full --deploy tp8ep8 --bsz 8 --seq 4096 --json\n  \
    fwdbench count --model llama3_8b,llama3_70b,mixtral --deploy tp1,tp8 --seq 4096 --csv results/count.csv\n\
    Several --model, --mconf and --deploy values (comma lists or repeated flags) give one column per combination.")]
pub struct CountArgs {
    /// Model folders under --model-dir; several give one column each.
    #[arg(long, required = true, value_delimiter = ',')]
    pub model: Vec<String>,
    /// Model configs (config_<mconf>.json); several give one column each.
    #[arg(long, default_value = "full", value_delimiter = ',')]
    pub mconf: Vec<String>,
    /// Deployments, files of conf/deploy/; several give one column each.
    #[arg(long, default_value = "tp1", value_delimiter = ',')]
    pub deploy: Vec<String>,
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
    /// Also write the table as CSV, one row per combination.
    #[arg(long, value_name = "PATH")]
    pub csv: Option<PathBuf>,
    /// The other conf layers and --conf overrides, shared by every deploy.
    #[command(flatten)]
    pub layers: ConfLayerArgs,
}

#[derive(Debug, Serialize)]
pub struct CountReport {
    pub model: String,
    pub mconf: String,
    pub deploy: String,
    pub attention_backend: String,
    pub bsz: usize,
    pub seq: usize,
    pub ranks: usize,
    pub params_total: f64,
    pub params_active: f64,
    /// Prefill of bsz x seq tokens (LM head on the last position of each sequence).
    pub prefill_flops: f64,
    /// One decode step of bsz tokens over seq cached tokens.
    /// None when the decode shape is invalid (e.g. past GPT-3's learned positions).
    pub decode_flops: Option<f64>,
    pub prefill_bytes_per_rank: f64,
    pub decode_bytes_per_rank: f64,
    /// Bytes the busiest rank sends over its links in one forward's collectives (ring).
    pub prefill_comm_bytes_per_rank: f64,
    pub decode_comm_bytes_per_rank: f64,
    /// Those collectives' time from the built-in H200 NCCL figures (prefill eager, decode graphed).
    pub prefill_comm_ms: f64,
    pub decode_comm_ms: f64,
    pub weight_bytes_per_rank: f64,
    pub kv_bytes_per_rank: f64,
    pub activation_bytes_per_rank: f64,
    pub scratch_bytes_per_rank: f64,
    pub workspace_bytes_per_rank: f64,
    pub total_bytes_per_rank: f64,
    pub fits: bool,
    pub attention_flops: &'static str,
    /// Weight format (`quantization_config`, `--quant`).
    pub weight_format: &'static str,
    /// Weight format (`quantization_config`, `--quant`): bf16 or fp8.
    pub quant: fwdbench::quant::Quant,
}

/// The busiest rank's collectives of one plan: (link bytes, modelled ms).
fn comm_of(plan: &fwdbench::plan::Plan, model: &CommModel, mode: Mode) -> (f64, f64) {
    let t = plan_comm_time(plan, model, mode);
    (t.link_bytes, t.ms)
}

/// One combination, all ranks planned. `label` is (model, mconf, deploy).
pub fn report(
    cfg: &ModelConfig,
    dep: &Deployment,
    label: (&str, &str, &str),
    bsz: usize,
    seq: usize,
) -> anyhow::Result<CountReport> {
    let cfg = &dep.quantize(cfg.clone());
    let all = layouts(dep)?;
    let single = build_plan(cfg, RankLayout::single(), Shape::decode(1, 1), PlanOptions::default())?;
    let params = count_params(&single, cfg);
    let comm = CommModel::builtin();
    // Totals over every rank of one forward; memory and traffic of the busiest rank.
    let decode_valid = build_plan(cfg, all[0], Shape::decode(bsz, seq), PlanOptions::default()).is_ok();
    let (mut prefill_flops, mut decode_flops) = (0.0, 0.0);
    let (mut peak, mut pbytes, mut dbytes) = (Footprint::default(), 0f64, 0f64);
    let (mut pcomm, mut dcomm) = ((0f64, 0f64), (0f64, 0f64));
    for layout in &all {
        let prefill = build_plan(cfg, *layout, Shape::prefill(bsz, seq), PlanOptions::default())?;
        // An invalid decode shape still counts memory from the prefill-sized cache.
        let decode_shape = if decode_valid { Shape::decode(bsz, seq) } else { Shape::decode(bsz, seq - 1) };
        let decode = build_plan(cfg, *layout, decode_shape, PlanOptions::default())?;
        let (pc, dc) = (PhaseCost::of(&prefill, cfg), PhaseCost::of(&decode, cfg));
        prefill_flops += pc.flops;
        decode_flops += dc.flops;
        let (pm, dm) = (plan_memory(&prefill, Target::H200), plan_memory(&decode, Target::H200));
        // The prefill's cache is the decode's minus one token: the decode holds the peak.
        peak = peak.max(pm.footprint()).max(dm.footprint());
        pbytes = pbytes.max(pc.weight_bytes + pc.kv_bytes + pc.act_bytes);
        dbytes = dbytes.max(dc.weight_bytes + dc.kv_bytes + dc.act_bytes);
        let (p, d) = (comm_of(&prefill, &comm, Mode::Eager), comm_of(&decode, &comm, Mode::Graph));
        pcomm = if p.0 > pcomm.0 { p } else { pcomm };
        dcomm = if d.0 > dcomm.0 { d } else { dcomm };
    }
    let (model, mconf, deploy) = label;
    Ok(CountReport {
        model: model.to_string(),
        mconf: mconf.to_string(),
        deploy: deploy.to_string(),
        attention_backend: dep.attention_backend.name().to_string(),
        bsz,
        seq,
        ranks: all.len(),
        params_total: params.total,
        params_active: params.active,
        prefill_flops,
        decode_flops: decode_valid.then_some(decode_flops),
        prefill_bytes_per_rank: pbytes,
        decode_bytes_per_rank: dbytes,
        prefill_comm_bytes_per_rank: pcomm.0,
        decode_comm_bytes_per_rank: dcomm.0,
        prefill_comm_ms: pcomm.1,
        decode_comm_ms: dcomm.1,
        weight_bytes_per_rank: peak.weight_bytes as f64,
        kv_bytes_per_rank: peak.kv_bytes as f64,
        activation_bytes_per_rank: peak.arena_bytes as f64,
        scratch_bytes_per_rank: peak.scratch_bytes as f64,
        workspace_bytes_per_rank: peak.workspace_bytes as f64,
        total_bytes_per_rank: peak.total_bytes() as f64,
        fits: fits(&peak, 0, H200_BYTES).is_ok(),
        attention_flops: "both matmuls (QK^T and PV), causal pairs S(S+1)/2 in prefill",
        weight_format: match cfg.quant {
            fwdbench::quant::Quant::Fp8 => "fp8 e4m3 projections and experts with 128x128 block scales",
            fwdbench::quant::Quant::Bf16 => "bf16",
        },
        quant: cfg.quant,
    })
}

/// Every combination the flags name, models outer, deploys inner. Config and conf mistakes
/// stop the command; a combination whose plan cannot be built (a deploy that does not
/// divide a model) is skipped with a warning when there are others, so one bad pairing
/// does not lose the table.
pub fn reports(args: &CountArgs) -> anyhow::Result<Vec<CountReport>> {
    let mut deploys = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    for name in &args.deploy {
        let (conf, dep) = DeployArgs { deploy: name.clone(), layers: args.layers.clone() }.load()?;
        // Deploys share most layers: each note once, however many deploys give it.
        for note in conf_notes(Some((&conf, &dep)), Subcommand::Count) {
            if !notes.contains(&note) {
                eprintln!("note: {note}");
                notes.push(note);
            }
        }
        deploys.push((name.as_str(), dep));
    }
    let mut models = Vec::new();
    for model in &args.model {
        for mconf in &args.mconf {
            let (_, cfg) = load_model(&args.model_dir, model, mconf, &args.sets)?;
            models.push((model.as_str(), mconf.as_str(), cfg));
        }
    }
    let several = models.len() * deploys.len() > 1;
    let mut out = Vec::new();
    for (model, mconf, cfg) in &models {
        for (deploy, dep) in &deploys {
            match report(cfg, dep, (model, mconf, deploy), args.bsz, args.seq) {
                Ok(r) => out.push(r),
                Err(e) if several => {
                    eprintln!("warning: --model {model} --mconf {mconf} --deploy {deploy} skipped: {e}")
                }
                Err(e) => return Err(e.context(format!("--model {model} --mconf {mconf} --deploy {deploy}"))),
            }
        }
    }
    anyhow::ensure!(
        !out.is_empty(),
        "no combination of --model, --mconf and --deploy could be planned (see the warnings above)"
    );
    Ok(out)
}

fn gb(bytes: f64) -> String {
    format!("{:.2} GB", bytes / 1e9)
}

fn mb(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

/// The table's rows: a quantity per row, a combination per column.
fn rows(r: &CountReport) -> Vec<(String, String)> {
    let decode = match r.decode_flops {
        Some(f) => format!("{:.3} TFLOP, {} moved per rank", f / 1e12, gb(r.decode_bytes_per_rank)),
        None => "n/a: context exceeds the model's learned positions".to_string(),
    };
    vec![
        ("deploy".into(), format!("{} ({} ranks)", r.deploy, r.ranks)),
        ("attention_backend".into(), r.attention_backend.clone()),
        ("parameters".into(), format!("{:.2}B total, {:.2}B active", r.params_total / 1e9, r.params_active / 1e9)),
        (
            format!("prefill {}x{}", r.bsz, r.seq),
            format!("{:.2} TFLOP, {} moved per rank", r.prefill_flops / 1e12, gb(r.prefill_bytes_per_rank)),
        ),
        (format!("decode {} over {}", r.bsz, r.seq), decode),
        (
            "prefill comm per rank".into(),
            format!("{} sent, {:.3} ms modelled", mb(r.prefill_comm_bytes_per_rank), r.prefill_comm_ms),
        ),
        (
            "decode comm per rank".into(),
            format!("{} sent, {:.3} ms modelled", mb(r.decode_comm_bytes_per_rank), r.decode_comm_ms),
        ),
        ("weights per rank".into(), format!("{} ({})", gb(r.weight_bytes_per_rank), r.weight_format)),
        ("KV cache per rank".into(), gb(r.kv_bytes_per_rank)),
        ("activations per rank".into(), gb(r.activation_bytes_per_rank)),
        ("scratch per rank".into(), gb(r.scratch_bytes_per_rank)),
        ("workspace per rank".into(), gb(r.workspace_bytes_per_rank)),
        ("total per rank".into(), gb(r.total_bytes_per_rank)),
        ("fits on an H200".into(), if r.fits { "yes" } else { "no" }.into()),
    ]
}

/// One table: the quantity names, then one column per combination.
pub fn table(reports: &[CountReport]) -> Table {
    let mut t = Table::new();
    let mut header = vec![String::new()];
    header.extend(reports.iter().map(|r| format!("{} ({})", r.model, r.mconf)));
    t.set_header(header);
    let columns: Vec<Vec<(String, String)>> = reports.iter().map(rows).collect();
    // Row names carry the shape, which every combination shares.
    for (i, (name, _)) in columns[0].iter().enumerate() {
        let mut row = vec![name.clone()];
        row.extend(columns.iter().map(|c| c[i].1.clone()));
        t.add_row(row);
    }
    t
}

/// `--csv`: a header and one row per combination, every field of [`CountReport`].
pub fn write_csv(path: &std::path::Path, reports: &[CountReport]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("--csv {}: cannot create its folder", path.display()))?;
    }
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("--csv {}: cannot create the file", path.display()))?;
    for r in reports {
        w.serialize(r).with_context(|| format!("--csv {}: cannot write a row", path.display()))?;
    }
    w.flush().with_context(|| format!("--csv {}: cannot write the file", path.display()))?;
    Ok(())
}

pub fn count(args: CountArgs) -> anyhow::Result<()> {
    let reports = reports(&args)?;
    if let Some(path) = &args.csv {
        write_csv(path, &reports)?;
    }
    if args.json {
        // One combination stays one object, as before several were accepted.
        let text = match reports.as_slice() {
            [one] => serde_json::to_string_pretty(one)?,
            many => serde_json::to_string_pretty(many)?,
        };
        println!("{text}");
        return Ok(());
    }
    println!("{}", table(&reports));
    println!(
        "FLOPs are totals over every rank; bytes, comm and memory are the busiest rank's. Capacity {}, {} kept free. Attention FLOPs: {}.",
        gb(H200_BYTES as f64),
        gb(RESERVED_BYTES as f64),
        reports[0].attention_flops
    );
    if let Some(path) = &args.csv {
        eprintln!("wrote {} ({} rows)", path.display(), reports.len());
    }
    Ok(())
}
