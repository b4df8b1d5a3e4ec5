//! Rows of a run: the terminal table, the raw log (results/raw_output/), CSV rows
//! (results/csv/, with --save) and per-op profiles (results/<model>_profile/).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use super::{Stats, COPY_GBS, PEAK_TFLOPS};
use crate::cli::RunArgs;
use crate::config::model::ModelConfig;
use crate::config::run_conf::Deployment;
use crate::exec::cuda::engine::BoundPlan;
use crate::exec::cuda::gpu::Gpu;
use crate::plan::cost::{plan_cost, PhaseCost};
use crate::plan::{Phase, Plan, Shape};

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub phase: Phase,
    pub bsz: usize,
    pub seq: usize,
    pub tokens: usize,
    pub stats: Stats,
    pub tflops: f64,
    pub mfu: f64,
    pub gbs: f64,
    pub mbu: f64,
    pub bound: &'static str,
    pub graph: bool,
}

impl Row {
    pub fn new(plan: &Plan, cost: &PhaseCost, stats: Stats, graph: bool) -> Self {
        let secs = stats.median_ms / 1e3;
        let tflops = cost.flops / secs / 1e12;
        let gbs = cost.mbu_bytes() / secs / 1e9;
        let gpus = plan.layout.world as f64;
        // The bound that applies: which roofline term is larger at the measured ceilings.
        let compute_s = cost.flops / (PEAK_TFLOPS * 1e12);
        let memory_s = cost.mbu_bytes() / (COPY_GBS * 1e9);
        Row {
            phase: plan.shape.phase,
            bsz: plan.shape.batch,
            seq: plan.shape.seq,
            tokens: plan.shape.tokens(),
            stats,
            tflops,
            mfu: tflops / (PEAK_TFLOPS * gpus),
            gbs,
            mbu: gbs / (COPY_GBS * gpus),
            bound: if compute_s >= memory_s { "compute" } else { "memory" },
            graph,
        }
    }
}

pub struct Reporter {
    raw: File,
    csv: Option<csv::Writer<File>>,
    meta: Meta,
    rows: usize,
    skipped: usize,
}

struct Meta {
    model: String,
    mconf: String,
    base: String,
    deploy: String,
    backend: String,
    gpu: String,
    rev: String,
}

const HEADER: &str =
    "phase    bsz    seq   tokens   median_ms    p10_ms    p90_ms  TFLOP/s    MFU     GB/s    MBU  bound";

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Reporter {
    pub fn new(args: &RunArgs, gpu: &str, dep: &Deployment) -> anyhow::Result<Self> {
        let meta = Meta {
            model: args.model.clone(),
            mconf: args.mconf.clone(),
            base: args.deploy.base.clone(),
            deploy: args.deploy.deploy.clone(),
            backend: dep.attention_backend.clone(),
            gpu: gpu.to_string(),
            rev: env!("FWDBENCH_GIT_REV").to_string(),
        };
        let raw_dir = args.results_dir.join("raw_output");
        fs::create_dir_all(&raw_dir).with_context(|| format!("cannot create {}", raw_dir.display()))?;
        let raw_path = raw_dir.join(format!("{}_{}_{}_{}.log", meta.model, meta.mconf, meta.deploy, now_secs()));
        let mut raw = File::create(&raw_path).with_context(|| format!("cannot write {}", raw_path.display()))?;
        writeln!(
            raw,
            "# fwdbench {} on {} ({}), model {} {}, deploy {}",
            meta.rev, meta.gpu, meta.backend, meta.model, meta.mconf, meta.deploy
        )?;
        let csv = if args.save {
            let dir = args.results_dir.join("csv");
            fs::create_dir_all(&dir)?;
            let path: PathBuf = dir.join(format!("{}_{}.csv", meta.model, meta.mconf));
            let new = !path.exists();
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("cannot append to {}", path.display()))?;
            let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(file);
            if new {
                w.write_record([
                    "model",
                    "mconf",
                    "base",
                    "deploy",
                    "backend",
                    "phase",
                    "bsz",
                    "seq_len",
                    "latency_ms",
                    "mfu",
                    "p10_ms",
                    "p90_ms",
                    "min_ms",
                    "tflops",
                    "gbs",
                    "mbu",
                    "bound",
                    "cuda_graph",
                    "gpu",
                    "git_rev",
                    "timestamp",
                ])?;
            }
            Some(w)
        } else {
            None
        };
        println!("{} {} on {} ({}), deploy {}", meta.model, meta.mconf, meta.gpu, meta.backend, meta.deploy);
        println!("{HEADER}");
        writeln!(raw, "{HEADER}")?;
        Ok(Reporter { raw, csv, meta, rows: 0, skipped: 0 })
    }

    pub fn row(&mut self, r: &Row) -> anyhow::Result<()> {
        let line = format!(
            "{:7} {:4} {:6} {:8} {:11.3} {:9.3} {:9.3} {:8.1} {:5.1}% {:8.0} {:5.1}%  {}{}",
            r.phase.name(),
            r.bsz,
            r.seq,
            r.tokens,
            r.stats.median_ms,
            r.stats.p10_ms,
            r.stats.p90_ms,
            r.tflops,
            100.0 * r.mfu,
            r.gbs,
            100.0 * r.mbu,
            r.bound,
            if r.graph { " (graph)" } else { "" }
        );
        println!("{line}");
        writeln!(self.raw, "{line}")?;
        self.raw.flush()?;
        if let Some(w) = &mut self.csv {
            let m = &self.meta;
            w.write_record([
                m.model.clone(),
                m.mconf.clone(),
                m.base.clone(),
                m.deploy.clone(),
                m.backend.clone(),
                r.phase.name().to_string(),
                r.bsz.to_string(),
                r.seq.to_string(),
                format!("{:.4}", r.stats.median_ms),
                format!("{:.4}", r.mfu),
                format!("{:.4}", r.stats.p10_ms),
                format!("{:.4}", r.stats.p90_ms),
                format!("{:.4}", r.stats.min_ms),
                format!("{:.2}", r.tflops),
                format!("{:.1}", r.gbs),
                format!("{:.4}", r.mbu),
                r.bound.to_string(),
                r.graph.to_string(),
                m.gpu.clone(),
                m.rev.clone(),
                now_secs().to_string(),
            ])?;
            w.flush()?;
        }
        self.rows += 1;
        Ok(())
    }

    pub fn skipped(&mut self, shape: Shape, reason: &str) -> anyhow::Result<()> {
        let line = format!("{:7} {:4} {:6}   skipped: {reason}", shape.phase.name(), shape.batch, shape.seq);
        println!("{line}");
        writeln!(self.raw, "{line}")?;
        self.skipped += 1;
        Ok(())
    }

    pub fn finish(self) -> anyhow::Result<()> {
        println!("{} rows measured, {} skipped", self.rows, self.skipped);
        if self.rows == 0 && self.skipped > 0 {
            anyhow::bail!("no shape could be measured");
        }
        Ok(())
    }
}

/// Per-op times of one eager forward into results/<model>_profile/.
pub fn write_profile(
    args: &RunArgs,
    gpu: &Gpu,
    bound: &BoundPlan,
    cfg: &ModelConfig,
    start: &cudarc::driver::CudaEvent,
    end: &cudarc::driver::CudaEvent,
) -> anyhow::Result<()> {
    let dir = args.results_dir.join(format!("{}_profile", args.model));
    fs::create_dir_all(&dir)?;
    let s = bound.plan.shape;
    let path = dir.join(format!("{}_{}_b{}_s{}.csv", args.mconf, s.phase.name(), s.batch, s.seq));
    let mut w = csv::Writer::from_path(&path).with_context(|| format!("cannot write {}", path.display()))?;
    w.write_record(["index", "layer", "name", "kind", "ms", "gflop", "mb"])?;
    let (costs, _) = plan_cost(&bound.plan, cfg);
    for (i, (p, c)) in bound.plan.ops.iter().zip(&costs).enumerate() {
        let ms = super::time_op(gpu, bound, i, start, end)?;
        w.write_record([
            i.to_string(),
            p.site.layer.map(|l| l.to_string()).unwrap_or_default(),
            p.site.name.clone(),
            p.op.kind_name().to_string(),
            format!("{ms:.4}"),
            format!("{:.3}", c.flops / 1e9),
            format!("{:.3}", c.bytes() / 1e6),
        ])?;
    }
    w.flush()?;
    eprintln!("profile written to {}", path.display());
    Ok(())
}
