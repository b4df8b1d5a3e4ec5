//! `fwdbench analyze`: MFU and MBU of recorded latencies, with our cost model and with the
//! seed pipeline's FLOP convention side by side.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use comfy_table::Table;

use fwdbench::config::model::ModelConfig;
use fwdbench::config::run_conf::{load_run_conf, ConfLayers};
use fwdbench::plan::RankLayout;
use fwdbench::report::analyze::{analyze, Analysis, SeedModel, CONVENTIONS};
use fwdbench::report::compare::{newest, read, write_csv_table, Format, Measurement};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  fwdbench analyze results/raw_output/benchmark_20250801_100000.log     (a seed raw log)\n  fwdbench analyze results/csv/benchmark.csv --model sigma               (the seed's CSV, rows named qwen_sigma)\n  fwdbench analyze results/csv/qwen_2l.csv --csv results/qwen_2l_analysis.csv\n  fwdbench analyze sglang.jsonl --model qwen --mconf full --deploy tp8\n\nEach row's model is model_conf/<model>/config_<mconf>.json and its deploy conf/deploy/<deploy>.yaml,\nboth as the row names them unless --model/--mconf/--deploy say otherwise."
)]
pub struct AnalyzeArgs {
    /// Result files: the seed's raw logs or CSV, fwdbench CSVs, SGLang JSONL.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// What the files are (default: detected): fwdbench, sglang, seed-csv, seed-log.
    #[arg(long, value_parser = super::compare::format_arg)]
    pub format: Option<Format>,
    /// Model folder for every row, instead of the row's own model name.
    #[arg(long)]
    pub model: Option<String>,
    /// Model config for every row, instead of the row's own mconf.
    #[arg(long)]
    pub mconf: Option<String>,
    /// Deployment for every row, instead of the row's own deploy.
    #[arg(long)]
    pub deploy: Option<String>,
    #[arg(long, default_value = "model_conf")]
    pub model_dir: PathBuf,
    /// Folder holding base.yaml and deploy/.
    #[arg(long, default_value = "conf")]
    pub conf_dir: PathBuf,
    /// Write the table as CSV.
    #[arg(long, value_name = "PATH")]
    pub csv: Option<PathBuf>,
}

/// Models and deployments read once, however many rows name them.
#[derive(Default)]
struct Cache {
    models: BTreeMap<(String, String), (ModelConfig, SeedModel)>,
    deploys: BTreeMap<String, Vec<RankLayout>>,
}

fn pick<'a>(flag: &'a Option<String>, row: &'a Option<String>, what: &str, file: &Path) -> anyhow::Result<&'a str> {
    flag.as_deref()
        .or(row.as_deref())
        .filter(|v| !v.is_empty())
        .with_context(|| format!("{}: its rows name no {what}; pass --{what}", file.display()))
}

impl Cache {
    fn model(&mut self, dir: &Path, model: &str, mconf: &str) -> anyhow::Result<&(ModelConfig, SeedModel)> {
        let key = (model.to_string(), mconf.to_string());
        if !self.models.contains_key(&key) {
            let path = dir.join(model).join(format!("config_{mconf}.json"));
            let hint = || {
                format!(
                    "model {model} mconf {mconf}: {} (pass --model-dir, or --model/--mconf to use another config)",
                    path.display()
                )
            };
            let cfg = super::common::load_config_file(&path, &[]).with_context(hint)?;
            let text = std::fs::read_to_string(&path).with_context(hint)?;
            let json = serde_json::from_str(&text).with_context(hint)?;
            let seed = SeedModel::from_config(&json).with_context(hint)?;
            self.models.insert(key.clone(), (cfg, seed));
        }
        Ok(&self.models[&key])
    }

    fn layouts(&mut self, conf_dir: &Path, deploy: &str) -> anyhow::Result<Vec<RankLayout>> {
        if !self.deploys.contains_key(deploy) {
            let what = || format!("deploy {deploy} (pass --conf-dir, or --deploy to use another deployment)");
            let conf = load_run_conf(conf_dir, &ConfLayers::new(deploy), &[]).with_context(what)?;
            let dep = conf.deployment().with_context(what)?;
            let layouts = fwdbench::dist::rank_layouts(dep.tp_size, dep.ep_size, dep.dp_size).with_context(what)?;
            self.deploys.insert(deploy.to_string(), layouts);
        }
        Ok(self.deploys[deploy].clone())
    }
}

fn analyze_file(args: &AnalyzeArgs, cache: &mut Cache, path: &Path) -> anyhow::Result<Vec<(String, Analysis)>> {
    let file = read(path, args.format)?;
    for note in &file.conversions {
        println!("{}: converted: {note}", path.display());
    }
    let mut out = Vec::new();
    for row in newest(&file.rows) {
        let model = pick(&args.model, &row.model, "model", path)?.to_string();
        let mconf = pick(&args.mconf, &row.mconf, "mconf", path)?.to_string();
        let deploy = pick(&args.deploy, &row.deploy, "deploy", path)?.to_string();
        let layouts = cache.layouts(&args.conf_dir, &deploy)?;
        let (cfg, seed) = cache.model(&args.model_dir, &model, &mconf)?;
        let named = Measurement { model: Some(model), mconf: Some(mconf), deploy: Some(deploy), ..row.clone() };
        let a = analyze(&named, cfg, seed, &layouts).with_context(|| format!("{}:{}", path.display(), row.line))?;
        out.push((
            format!("{}:{}", path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()), row.line),
            a,
        ));
    }
    Ok(out)
}

const COLUMNS: [&str; 14] = [
    "source",
    "model",
    "mconf",
    "deploy",
    "phase",
    "bsz",
    "seq_len",
    "latency_ms",
    "ours_tflop",
    "ours_mfu",
    "ours_mbu",
    "seed_tflop",
    "seed_mfu",
    "recorded_mfu",
];

fn fields(source: &str, a: &Analysis, pct: bool) -> Vec<String> {
    let r = &a.row;
    let frac = |v: f64| if pct { format!("{:.2}%", v * 100.0) } else { format!("{v:.6}") };
    vec![
        source.to_string(),
        r.model.clone().unwrap_or_default(),
        r.mconf.clone().unwrap_or_default(),
        r.deploy.clone().unwrap_or_default(),
        r.phase.name().to_string(),
        r.bsz.to_string(),
        r.seq.to_string(),
        format!("{:.4}", r.latency_ms),
        format!("{:.4}", a.ours_flops / 1e12),
        frac(a.ours_mfu),
        frac(a.ours_mbu),
        format!("{:.4}", a.seed_flops / 1e12),
        frac(a.seed_mfu),
        r.mfu.map_or_else(String::new, frac),
    ]
}

pub fn analyze_cmd(args: AnalyzeArgs) -> anyhow::Result<()> {
    let mut cache = Cache::default();
    let mut rows = Vec::new();
    for path in &args.files {
        rows.extend(analyze_file(&args, &mut cache, path)?);
    }
    for c in CONVENTIONS {
        println!("{c}");
    }
    let mut t = Table::new();
    t.set_header(COLUMNS.to_vec());
    for (source, a) in &rows {
        t.add_row(fields(source, a, true));
    }
    println!("{t}");
    if let Some(path) = &args.csv {
        write_csv_table(path, &COLUMNS, rows.iter().map(|(source, a)| fields(source, a, false)))
            .with_context(|| format!("--csv {}: cannot write the table", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
