//! CSV rows of a run (`--save`), appended to results/csv/<model>_<mconf>.csv. The first ten
//! columns line up with the seed pipeline's benchmark.csv; a new file gets a header.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{now_secs, Meta, Row};

pub const COLUMNS: [&str; 21] = [
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
];

pub struct CsvRows {
    writer: csv::Writer<File>,
    pub path: PathBuf,
}

impl CsvRows {
    pub fn open(results_dir: &Path, meta: &Meta) -> anyhow::Result<Self> {
        let dir = results_dir.join("csv");
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{}_{}.csv", meta.model, meta.mconf));
        let new = !path.exists();
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
        self.writer.write_record([
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
        self.writer.flush()?;
        Ok(())
    }
}
