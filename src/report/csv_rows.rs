//! CSV rows of a run (`--save`), appended to results/csv/<model>_<mconf>.csv. The first ten
//! columns line up with the seed pipeline's benchmark.csv; a new file gets a header. The
//! columns after the seed's say how each number was obtained (`method`), how a projected
//! latency splits into compute and modelled communication, and, for several ranks, the
//! per-rank spread and the per-rank batch; then the memory plan against the device, `timing`
//! (which method timed the row), the weight format and its peak; the last three, the routing
//! (`--routing`) and, for MoE models, the experts the measured forward touched and its
//! most-loaded expert.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{now_secs, Meta, Row};

pub const COLUMNS: [&str; 41] = [
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
    "method",
    "compute_ms",
    "comm_ms",
    "comm_share",
    "comm_source",
    "bsz_per_rank",
    "world",
    "run_rank",
    "rank_choice",
    "rank_min_ms",
    "rank_max_ms",
    "note",
    "mem_planned_mib",
    "mem_used_mib",
    "timing",
    "quant",
    "peak_tflops",
    "routing",
    "experts_touched",
    "max_expert_tokens",
];

pub struct CsvRows {
    writer: csv::Writer<File>,
    pub path: PathBuf,
}

/// An existing file must have this build's header, or appended rows would not line up.
fn check_header(path: &Path) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut first = String::new();
    BufReader::new(file).read_line(&mut first)?;
    let header = COLUMNS.join(",");
    anyhow::ensure!(
        first.trim_end() == header || first.is_empty(),
        "{} has other columns than this fwdbench writes ({header}); move the file aside (or pass another --results-dir) and run again",
        path.display()
    );
    Ok(())
}

impl CsvRows {
    pub fn open(results_dir: &Path, meta: &Meta) -> anyhow::Result<Self> {
        let dir = results_dir.join("csv");
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{}_{}.csv", meta.model, meta.mconf));
        let new = !path.exists() || fs::metadata(&path).is_ok_and(|m| m.len() == 0);
        if !new {
            check_header(&path)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot append to {}", path.display()))?;
        let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(file);
        if new {
            writer.write_record(COLUMNS)?;
        }
        Ok(CsvRows { writer, path })
    }

    pub fn write(&mut self, m: &Meta, r: &Row) -> anyhow::Result<()> {
        let f4 = |v: f64| format!("{v:.4}");
        // An analytic estimate has no spread over iterations.
        let timed = |v: f64| if r.stats.iters > 0 { f4(v) } else { String::new() };
        let split = r.split.as_ref();
        let (rank_min, rank_max) = r.rank_spread.map_or((String::new(), String::new()), |(lo, hi)| (f4(lo), f4(hi)));
        self.writer.write_record([
            m.model.clone(),
            m.mconf.clone(),
            m.base.clone(),
            m.deploy.clone(),
            attention_kernels(&m.backend, r.phase),
            r.phase.name().to_string(),
            r.bsz.to_string(),
            r.seq.to_string(),
            f4(r.stats.median_ms),
            f4(r.mfu),
            timed(r.stats.p10_ms),
            timed(r.stats.p90_ms),
            timed(r.stats.min_ms),
            format!("{:.2}", r.tflops),
            format!("{:.1}", r.gbs),
            f4(r.mbu),
            r.bound.to_string(),
            r.graph.to_string(),
            m.gpu.clone(),
            m.rev.clone(),
            now_secs().to_string(),
            r.method.name().to_string(),
            split.map_or_else(String::new, |s| f4(s.compute_ms)),
            split.map_or_else(String::new, |s| f4(s.comm_ms)),
            split.map_or_else(String::new, |s| f4(s.comm_share())),
            split.map_or_else(String::new, |s| s.comm_source.clone()),
            r.bsz_per_rank.to_string(),
            r.world.to_string(),
            r.run_rank.as_ref().map_or_else(|| "all".to_string(), |c| c.rank.to_string()),
            r.run_rank.as_ref().map_or_else(String::new, |c| c.why.clone()),
            rank_min,
            rank_max,
            r.note.clone(),
            r.memory_mib.map_or_else(String::new, |(planned, _)| format!("{planned:.1}")),
            r.memory_mib.map_or_else(String::new, |(_, used)| format!("{used:.1}")),
            r.timing.to_string(),
            r.quant.name().to_string(),
            format!("{:.0}", r.quant.peak_tflops()),
            r.routing.to_string(),
            r.experts_touched.map_or_else(String::new, |v| format!("{v:.1}")),
            r.max_expert_tokens.map_or_else(String::new, |v| v.to_string()),
        ])?;
        self.writer.flush()?;
        Ok(())
    }
}

/// The attention kernel family that ran for a row: the backend's prefill kernels (fa3, fa2),
/// and in decode `<backend>/splitkv`, the split-KV kernels both backends share.
pub fn attention_kernels(backend: &str, phase: crate::plan::Phase) -> String {
    match phase {
        crate::plan::Phase::Prefill => backend.to_string(),
        crate::plan::Phase::Decode => format!("{backend}/splitkv"),
    }
}
