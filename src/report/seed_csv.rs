//! The seed pipeline's own outputs, for tools that read them (`run --csv-format seed`,
//! `run --timing seed`): rows appended to results/csv/benchmark.csv in its ten columns with
//! no header (`model, arch, base, deploy, backend, phase, bsz, seq_len, latency, mfu`), and
//! its raw-log line `Latency Benchmark Device 0 Phase: ..., Average Latency: x ms`.
//!
//! Its conventions, as its analysis.py wrote them (seed-pipeline.md §1): phase `Prefill` or
//! `Decode`; bsz is device 0's, so one rank's share under DP attention; a decode's seq_len
//! is the cache plus the new token (S + 1); latency is the log's `%.4f` value and mfu a
//! fraction, both printed as Python prints a float. The mfu is fwdbench's (its cost model,
//! 989 TFLOP/s), not the seed's FLOP counter: `fwdbench analyze` recomputes the seed's.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{Meta, Row};
use crate::dist::projection::Method;
use crate::plan::Phase;

/// The seed's name of a phase.
pub fn seed_phase(phase: Phase) -> &'static str {
    match phase {
        Phase::Prefill => "Prefill",
        Phase::Decode => "Decode",
    }
}

/// The seed's sequence length of a row: a decode step sees its S cached tokens plus one.
pub fn seed_seq_len(r: &Row) -> usize {
    match r.phase {
        Phase::Prefill => r.seq,
        Phase::Decode => r.seq + 1,
    }
}

/// `v` as Python's `str(float)` prints it: shortest round trip, `.0` on whole numbers,
/// exponent form below 1e-4 and from 1e16 with at least two exponent digits (`1e-05`).
pub fn python_float(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // Rust's Debug is also shortest-round-trip and switches to exponents at the same bounds.
    let text = format!("{v:?}");
    let Some((mantissa, exp)) = text.split_once('e') else { return text };
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp),
    };
    format!("{mantissa}e{sign}{digits:0>2}")
}

/// The latency as the seed's log printed it and its analysis read it back.
fn seed_latency(ms: f64) -> String {
    let logged = format!("{ms:.4}");
    python_float(logged.parse().expect("a formatted float parses"))
}

/// The raw-log line the seed printed for this row on `device`.
pub fn seed_log_line(device: usize, r: &Row) -> String {
    format!(
        "Latency Benchmark Device {device} Phase: {}, Batch Size: {}, Sequence Length: {}, Average Latency: {:.4} ms",
        seed_phase(r.phase),
        r.bsz_per_rank,
        seed_seq_len(r),
        r.stats.median_ms
    )
}

/// The lines the seed's analysis reads before the latency lines (model, then conf layers).
pub fn seed_log_header(m: &Meta) -> [String; 2] {
    [
        format!("Using model config: {} {}", m.model, m.mconf),
        format!("Using configs: {}, {}, {}", m.base, m.deploy, m.backend),
    ]
}

/// One benchmark.csv line (no newline).
pub fn seed_csv_line(m: &Meta, r: &Row) -> String {
    [
        m.model.clone(),
        m.mconf.clone(),
        m.base.clone(),
        m.deploy.clone(),
        m.backend.clone(),
        seed_phase(r.phase).to_string(),
        r.bsz_per_rank.to_string(),
        seed_seq_len(r).to_string(),
        seed_latency(r.stats.median_ms),
        python_float(r.mfu),
    ]
    .join(",")
}

/// results/csv/benchmark.csv, appended to.
pub struct SeedCsv {
    file: File,
    pub path: PathBuf,
    /// Only rows timed by the seed's method (a `--timing both` run): the file has no
    /// column that would tell two methods' rows apart.
    only_seed_timed: bool,
    pub written: usize,
}

impl SeedCsv {
    pub fn open(results_dir: &Path, only_seed_timed: bool) -> anyhow::Result<Self> {
        let dir = results_dir.join("csv");
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("benchmark.csv");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot append to {}", path.display()))?;
        Ok(SeedCsv { file, path, only_seed_timed, written: 0 })
    }

    /// Measured rows only: the seed's file holds measurements, and has no column that
    /// would mark a projected or analytic estimate.
    pub fn wants(&self, r: &Row) -> bool {
        r.method == Method::Measured && (!self.only_seed_timed || r.timing == "seed")
    }

    pub fn write(&mut self, m: &Meta, r: &Row) -> anyhow::Result<()> {
        if !self.wants(r) {
            return Ok(());
        }
        writeln!(self.file, "{}", seed_csv_line(m, r))
            .with_context(|| format!("cannot append to {}", self.path.display()))?;
        self.file.flush()?;
        self.written += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_prints_them() {
        // Expected values are Python 3's str() of the same doubles.
        for (v, want) in [
            (5.0, "5.0"),
            (12.34, "12.34"),
            (0.1 + 0.2, "0.30000000000000004"),
            (0.0001, "0.0001"),
            (1e-5, "1e-05"),
            (1.2345e-7, "1.2345e-07"),
            (1e16, "1e+16"),
            (123456789012345.6, "123456789012345.6"),
            (0.0, "0.0"),
            (-2.5e-300, "-2.5e-300"),
        ] {
            assert_eq!(python_float(v), want, "{v:e}");
        }
        assert_eq!(seed_latency(1.23456), "1.2346");
        assert_eq!(seed_latency(3.0), "3.0");
    }
}
