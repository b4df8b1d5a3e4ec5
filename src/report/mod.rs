//! What a run shows and keeps: the terminal table, the raw log (results/raw_output/), CSV
//! rows (results/csv/, with --save) and per-op profiles (results/<model>_profile/). The
//! report formats and writes what it is handed; measuring is the bench's. `plot`, `compare`,
//! `analyze` and `seed` read result files back (ours, SGLang's, the seed pipeline's).

mod csv_rows;
mod profile;
mod raw_log;
mod row;
mod seed_csv;
mod stats;
mod table;
mod trace;

pub mod analyze;
pub mod compare;
pub mod plot;
pub mod seed;

pub use csv_rows::{CsvRows, COLUMNS};
pub use profile::{op_rows, write_profile, OpRow, ProfileFiles, ProfileTarget, PROFILE_COLUMNS};
pub use raw_log::RawLog;
pub use row::{Row, Split, COPY_GBS, PEAK_TFLOPS};
pub use seed_csv::{python_float, seed_csv_line, seed_log_header, seed_log_line, SeedCsv};
pub use stats::Stats;
pub use table::{row_line, skipped_line, HEADER};
pub use trace::{trace_json, Forwards};

use std::path::Path;

use crate::plan::Shape;

/// What every row of a run shares: model, conf layers, GPU and build.
#[derive(Debug, Clone)]
pub struct Meta {
    pub model: String,
    pub mconf: String,
    pub base: String,
    pub deploy: String,
    pub backend: String,
    pub gpu: String,
    pub rev: String,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Rows as they complete: printed, logged and (with `save`) appended to CSV, so a failing
/// shape loses nothing measured before it.
pub struct Reporter {
    raw: RawLog,
    csv: Option<CsvRows>,
    meta: Meta,
    rows: usize,
    /// Rows by method (measured, projected, analytic), for the closing line.
    by_method: std::collections::BTreeMap<&'static str, usize>,
    skipped: usize,
    /// `--csv-format seed`: results/csv/benchmark.csv.
    seed_csv: Option<SeedCsv>,
    /// Seed-timed rows also get the seed's own raw-log line.
    seed_log: bool,
}

impl Reporter {
    pub fn new(meta: Meta, results_dir: &Path, save: bool) -> anyhow::Result<Self> {
        let raw = RawLog::create(results_dir, &meta)?;
        let csv = if save { Some(CsvRows::open(results_dir, &meta)?) } else { None };
        println!("{} {} on {} ({}), deploy {}", meta.model, meta.mconf, meta.gpu, meta.backend, meta.deploy);
        println!("{HEADER}");
        Ok(Reporter {
            raw,
            csv,
            meta,
            rows: 0,
            by_method: Default::default(),
            skipped: 0,
            seed_csv: None,
            seed_log: false,
        })
    }

    /// Also appends rows to the seed's results/csv/benchmark.csv (`only_seed_timed`: of the
    /// rows, those timed by the seed's method).
    pub fn with_seed_csv(mut self, results_dir: &Path, only_seed_timed: bool) -> anyhow::Result<Self> {
        self.seed_csv = Some(SeedCsv::open(results_dir, only_seed_timed)?);
        Ok(self)
    }

    /// Seed-timed measured rows also write the seed's raw-log lines, after its header
    /// lines, so the seed's own analysis reads this log.
    pub fn with_seed_log(mut self) -> anyhow::Result<Self> {
        for line in seed_log_header(&self.meta) {
            self.raw.line(&line)?;
        }
        self.seed_log = true;
        Ok(self)
    }

    pub fn row(&mut self, r: &Row) -> anyhow::Result<()> {
        let line = row_line(r);
        println!("{line}");
        self.raw.line(&line)?;
        if let Some(w) = &mut self.csv {
            w.write(&self.meta, r)?;
        }
        if let Some(w) = &mut self.seed_csv {
            w.write(&self.meta, r)?;
        }
        if self.seed_log && r.timing == "seed" && r.method == crate::dist::projection::Method::Measured {
            self.raw.line(&seed_log_line(0, r))?;
        }
        self.rows += 1;
        *self.by_method.entry(r.method.name()).or_default() += 1;
        Ok(())
    }

    /// A line about the whole run (how it was projected, what a conf key did), printed and
    /// kept in the raw log with the rows it explains.
    pub fn note(&mut self, text: &str) -> anyhow::Result<()> {
        println!("{text}");
        self.raw.line(&format!("# {text}"))
    }

    pub fn skipped(&mut self, shape: Shape, reason: &str) -> anyhow::Result<()> {
        let line = skipped_line(shape, reason);
        println!("{line}");
        self.raw.line(&line)?;
        self.skipped += 1;
        Ok(())
    }

    pub fn finish(self) -> anyhow::Result<()> {
        let kinds: Vec<String> = self.by_method.iter().map(|(m, n)| format!("{n} {m}")).collect();
        let kinds = if kinds.is_empty() { "0 measured".to_string() } else { kinds.join(", ") };
        println!("{} rows ({kinds}), {} skipped", self.rows, self.skipped);
        if let Some(s) = &self.seed_csv {
            println!("{} rows appended to {} (seed columns, measured rows only)", s.written, s.path.display());
        }
        if self.rows == 0 && self.skipped > 0 {
            anyhow::bail!("no shape could be measured");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::hf::load_model_config;
    use crate::dist::projection::{CommTime, Method, RankChoice};
    use crate::model::{build_plan, PlanOptions};
    use crate::plan::cost::PhaseCost;
    use crate::plan::{RankLayout, Shape};

    fn meta() -> Meta {
        let s = |v: &str| v.to_string();
        Meta {
            model: s("qwen"),
            mconf: s("2l"),
            base: s("base"),
            deploy: s("tp1"),
            backend: s("fa3"),
            gpu: s("H200"),
            rev: s("abc"),
        }
    }

    fn plan() -> (crate::config::model::ModelConfig, crate::plan::Plan) {
        let cfg = load_model_config(Path::new("tests/fixtures/qwen3/config.json"), &[]).unwrap();
        let plan = build_plan(&cfg, RankLayout::single(), Shape::decode(2, 16), PlanOptions::default()).unwrap();
        (cfg, plan)
    }

    #[test]
    fn rows_reach_the_raw_log_and_csv() {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, plan) = plan();
        let cost = PhaseCost::of(&plan, &cfg);
        let row = Row::new(&plan, &cost, Stats::of(&[2.0, 1.0, 3.0]), true);
        assert_eq!((row.bsz, row.seq, row.tokens), (2, 16, 2));
        for _ in 0..2 {
            let mut r = Reporter::new(meta(), dir.path(), true).unwrap();
            r.row(&row).unwrap();
            r.skipped(Shape::prefill(4, 8), "does not fit").unwrap();
            r.finish().unwrap();
        }
        let csv = std::fs::read_to_string(dir.path().join("csv/qwen_2l.csv")).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3, "one header, then one row per run: {csv}");
        assert_eq!(lines[0], COLUMNS.join(","));
        let fields: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(fields.len(), COLUMNS.len());
        assert_eq!(&fields[..9], ["qwen", "2l", "base", "tp1", "fa3/splitkv", "decode", "2", "16", "2.0000"]);
        assert_eq!(fields[17], "true");
        assert_eq!(
            &fields[21..],
            ["measured", "", "", "", "", "2", "1", "all", "", "", "", "", "", "", "", "bf16", "989", "model", "", ""]
        );
        let logs: Vec<_> = std::fs::read_dir(dir.path().join("raw_output")).unwrap().flatten().collect();
        let log = std::fs::read_to_string(logs[0].path()).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert!(lines[0].starts_with("# fwdbench abc on H200 (fa3), model qwen 2l, deploy tp1"), "{log}");
        assert_eq!(lines[1], HEADER);
        assert!(lines[2].starts_with("decode     2     16        2       2.000") && lines[2].ends_with("(graph)"));
        assert!(lines[2].contains("measured"), "{log}");
        assert_eq!(lines[3], "prefill    4      8   skipped: does not fit");
    }

    #[test]
    fn projected_rows_split_compute_and_communication() {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, plan) = plan();
        let cost = PhaseCost::of(&plan, &cfg);
        let comm = CommTime { ms: 1.0, collectives: 4, link_bytes: 1e6, sources: vec!["a".into(), "b".into()] };
        let mut row = Row::modelled(&plan, &cost, Method::Projected, Stats::of(&[3.0, 3.0]), &comm, true);
        row.run_rank = Some(RankChoice { rank: 3, why: "--project-rank".into() });
        assert_eq!(row.stats.median_ms, 4.0);
        assert_eq!(row.split.as_ref().unwrap().comm_share(), 0.25);
        let analytic = Row::modelled(&plan, &cost, Method::Analytic, Stats::estimate(2.0), &comm, false);
        let mut r = Reporter::new(meta(), dir.path(), true).unwrap();
        r.row(&row).unwrap();
        r.row(&analytic).unwrap();
        r.finish().unwrap();
        let csv = std::fs::read_to_string(dir.path().join("csv/qwen_2l.csv")).unwrap();
        let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
        let col = |name: &str| COLUMNS.iter().position(|c| *c == name).unwrap();
        assert_eq!(rows[0][col("latency_ms")], "4.0000");
        assert_eq!(rows[0][col("method")], "projected");
        assert_eq!(rows[0][col("compute_ms")], "3.0000");
        assert_eq!(rows[0][col("comm_share")], "0.2500");
        assert_eq!(rows[0][col("comm_source")], "a; b");
        assert_eq!(rows[0][col("run_rank")], "3");
        assert_eq!(rows[1][col("method")], "analytic");
        assert_eq!(rows[1][col("p10_ms")], "", "an estimate has no spread");
        let line = row_line(&analytic);
        assert!(line.contains("analytic") && line.contains("33.3%"), "{line}");
    }

    #[test]
    fn an_old_csv_is_not_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("csv")).unwrap();
        std::fs::write(dir.path().join("csv/qwen_2l.csv"), "model,mconf\n").unwrap();
        let e = Reporter::new(meta(), dir.path(), true).err().unwrap().to_string();
        assert!(e.contains("move the file aside"), "{e}");
    }

    #[test]
    fn a_run_with_only_skipped_shapes_fails() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Reporter::new(meta(), dir.path(), false).unwrap();
        r.skipped(Shape::prefill(1, 8), "does not fit").unwrap();
        assert!(r.finish().unwrap_err().to_string().contains("no shape could be measured"));
        assert!(!dir.path().join("csv").exists(), "no CSV without --save");
    }
}
