//! `fwdbench compare`: fwdbench rows joined with another engine's or another build's rows
//! of the same shapes, both latencies in ms and their ratio. Every source is first brought
//! to fwdbench's conventions (sources.rs): latency in ms, decode `seq` = tokens already in
//! the cache, `bsz` = the global batch.

mod sources;

pub use sources::{read, Format, Measurements};

use std::path::{Path, PathBuf};

use crate::plan::Phase;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: {msg}", path.display())]
    Parse { path: PathBuf, line: usize, msg: String },
    #[error("{} has no result rows (read as {format}); pass --format if it is another kind of file", path.display())]
    Empty { path: PathBuf, format: &'static str },
}

/// One latency in fwdbench's conventions, with the identity its source gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub model: Option<String>,
    pub mconf: Option<String>,
    pub deploy: Option<String>,
    pub phase: Phase,
    /// Global batch: every DP rank's sequences together.
    pub bsz: usize,
    /// Prefill: prompt tokens per sequence. Decode: tokens already in the KV cache.
    pub seq: usize,
    pub latency_ms: f64,
    /// Fractions of the peak, where the source has them.
    pub mfu: Option<f64>,
    pub mbu: Option<f64>,
    /// 1-based line in its file.
    pub line: usize,
}

impl Measurement {
    fn same_shape(&self, o: &Measurement) -> bool {
        (self.phase, self.bsz, self.seq) == (o.phase, o.bsz, o.seq)
    }

    /// Same shape, and the same model, mconf and deploy wherever both sides name one.
    fn same_identity(&self, o: &Measurement) -> bool {
        let agree = |a: &Option<String>, b: &Option<String>| a.is_none() || b.is_none() || a == b;
        self.same_shape(o)
            && agree(&self.model, &o.model)
            && agree(&self.mconf, &o.mconf)
            && agree(&self.deploy, &o.deploy)
    }

    /// `model mconf deploy` as far as known.
    pub fn identity(&self) -> String {
        [&self.model, &self.mconf, &self.deploy].iter().filter_map(|v| v.as_deref()).collect::<Vec<_>>().join(" ")
    }
}

/// Later rows of a file replace earlier rows of the same identity and shape (a CSV that
/// several runs appended to keeps the newest).
pub fn newest(rows: &[Measurement]) -> Vec<Measurement> {
    let mut kept: Vec<Measurement> = Vec::new();
    for r in rows {
        let same =
            |k: &Measurement| k.same_shape(r) && (&k.model, &k.mconf, &k.deploy) == (&r.model, &r.mconf, &r.deploy);
        match kept.iter_mut().find(|k| same(k)) {
            Some(k) => *k = r.clone(),
            None => kept.push(r.clone()),
        }
    }
    kept
}

/// How rows of the two sides are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinBy {
    /// Shape plus model, mconf and deploy where both sides name them.
    Identity,
    /// Shape alone (e.g. the seed's `qwen_sigma` against our `sigma`).
    Shape,
}

/// One shape both sides measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// Side A's row (its identity labels the pair).
    pub a: Measurement,
    pub b_ms: f64,
}

impl Pair {
    /// B over A: above 1, A is faster.
    pub fn ratio(&self) -> f64 {
        self.b_ms / self.a.latency_ms
    }
}

#[derive(Debug, Clone)]
pub struct Comparison {
    pub a_label: String,
    pub b_label: String,
    pub pairs: Vec<Pair>,
    /// Rows of each side the other side lacks.
    pub only_a: usize,
    pub only_b: usize,
}

/// Joins the newest row of each shape on both sides, in A's order.
pub fn join(a: &[Measurement], b: &[Measurement], by: JoinBy, a_label: &str, b_label: &str) -> Comparison {
    let (a, b) = (newest(a), newest(b));
    let matches = |x: &Measurement, y: &Measurement| match by {
        JoinBy::Identity => x.same_identity(y),
        JoinBy::Shape => x.same_shape(y),
    };
    let mut pairs = Vec::new();
    let mut used_b = vec![false; b.len()];
    for x in &a {
        if let Some((i, y)) = b.iter().enumerate().find(|(_, y)| matches(x, y)) {
            used_b[i] = true;
            pairs.push(Pair { a: x.clone(), b_ms: y.latency_ms });
        }
    }
    let only_a = a.iter().filter(|x| !b.iter().any(|y| matches(x, y))).count();
    Comparison {
        a_label: a_label.to_string(),
        b_label: b_label.to_string(),
        pairs,
        only_a,
        only_b: used_b.iter().filter(|u| !**u).count(),
    }
}

impl Comparison {
    /// One pair's fields: identity and shape, both latencies, the ratio (`digits` decimals).
    fn fields(&self, p: &Pair, digits: usize) -> Vec<String> {
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        vec![
            s(&p.a.model),
            s(&p.a.mconf),
            s(&p.a.deploy),
            p.a.phase.name().to_string(),
            p.a.bsz.to_string(),
            p.a.seq.to_string(),
            format!("{:.digits$}", p.a.latency_ms),
            format!("{:.digits$}", p.b_ms),
            format!("{:.digits$}", p.ratio()),
        ]
    }

    /// The terminal table: one row per pair.
    pub fn table(&self) -> comfy_table::Table {
        let mut t = comfy_table::Table::new();
        let mut header: Vec<String> = ["model", "mconf", "deploy", "phase", "bsz", "seq"].map(String::from).to_vec();
        header.extend([
            format!("{} ms", self.a_label),
            format!("{} ms", self.b_label),
            format!("{} / {}", self.b_label, self.a_label),
        ]);
        t.set_header(header);
        for p in &self.pairs {
            t.add_row(self.fields(p, 3));
        }
        t
    }

    /// The pairs as CSV; `a` and `b` name the sources, the ratio is `latency_b / latency_a`.
    pub fn write_csv(&self, path: &Path) -> Result<(), csv::Error> {
        let header = [
            "model",
            "mconf",
            "deploy",
            "phase",
            "bsz",
            "seq_len",
            "latency_a_ms",
            "latency_b_ms",
            "ratio_b_over_a",
            "a",
            "b",
        ];
        let rows = self.pairs.iter().map(|p| {
            let mut f = self.fields(p, 4);
            f.extend([self.a_label.clone(), self.b_label.clone()]);
            f
        });
        write_csv_table(path, &header, rows)
    }
}

/// A CSV file of `header` and `rows`, its folder created (compare's and analyze's tables).
pub fn write_csv_table(
    path: &Path,
    header: &[&str],
    rows: impl IntoIterator<Item = Vec<String>>,
) -> Result<(), csv::Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(header)?;
    for r in rows {
        w.write_record(r)?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(deploy: Option<&str>, phase: Phase, bsz: usize, seq: usize, ms: f64) -> Measurement {
        Measurement {
            model: deploy.map(|_| "qwen".to_string()),
            mconf: None,
            deploy: deploy.map(str::to_string),
            phase,
            bsz,
            seq,
            latency_ms: ms,
            mfu: None,
            mbu: None,
            line: 1,
        }
    }

    #[test]
    fn joins_newest_rows_by_shape_and_named_identity() {
        let a = vec![
            m(Some("tp1"), Phase::Prefill, 1, 128, 9.0),
            m(Some("tp1"), Phase::Prefill, 1, 128, 10.0),
            m(Some("tp2"), Phase::Prefill, 1, 128, 6.0),
            m(Some("tp1"), Phase::Decode, 1, 128, 2.0),
        ];
        let b = vec![m(Some("tp1"), Phase::Prefill, 1, 128, 15.0), m(Some("tp1"), Phase::Decode, 8, 128, 1.0)];
        let c = join(&a, &b, JoinBy::Identity, "ours", "theirs");
        assert_eq!(c.pairs.len(), 1, "tp2 and the decode shape have no partner");
        assert_eq!(c.pairs[0].ratio(), 1.5, "the newest tp1 row (10 ms) is used");
        assert_eq!((c.only_a, c.only_b), (2, 1));
        let shape = join(&a, &b, JoinBy::Shape, "ours", "theirs");
        assert_eq!(shape.pairs.len(), 2, "tp2 matches by shape alone");
        let anonymous = vec![m(None, Phase::Prefill, 1, 128, 20.0)];
        assert_eq!(
            join(&a, &anonymous, JoinBy::Identity, "a", "b").pairs.len(),
            2,
            "an unnamed side matches any deploy"
        );
    }
}
