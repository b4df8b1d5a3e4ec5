//! Readers for every result file `compare`, `plot` and `analyze` take: fwdbench's CSV,
//! SGLang bench_one_batch's JSONL, and the seed's CSV and raw log (report::seed). Each
//! yields [`Measurement`]s in fwdbench's conventions and says which conversions it made.

use std::path::{Path, PathBuf};

use super::{InputError, Measurement};
use crate::plan::Phase;
use crate::report::seed::{self, dp_attention_ranks};

/// What a result file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `results/csv/<model>_<mconf>.csv` as `fwdbench run --save` writes it (header row).
    Fwdbench,
    /// SGLang `bench_one_batch --result-filename`: one JSON object per line, seconds.
    Sglang,
    /// The seed's headerless 10-column CSV.
    SeedCsv,
    /// The seed's raw log.
    SeedLog,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Fwdbench => "fwdbench",
            Format::Sglang => "sglang",
            Format::SeedCsv => "seed-csv",
            Format::SeedLog => "seed-log",
        }
    }

    pub fn parse(text: &str) -> Option<Format> {
        [Format::Fwdbench, Format::Sglang, Format::SeedCsv, Format::SeedLog].into_iter().find(|f| f.name() == text)
    }

    /// From the file itself: `.jsonl`/`.json` are SGLang's, `.log` the seed's, a CSV whose
    /// first line is fwdbench's header is ours and any other CSV the seed's.
    pub fn detect(path: &Path, text: &str) -> Format {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        match ext.as_str() {
            "jsonl" | "json" => Format::Sglang,
            "log" | "txt" => Format::SeedLog,
            _ if text.trim_start().starts_with('{') => Format::Sglang,
            _ if text.lines().next().is_some_and(|l| l.starts_with("model,mconf,")) => Format::Fwdbench,
            _ if text.contains("Latency Benchmark Device") => Format::SeedLog,
            _ => Format::SeedCsv,
        }
    }
}

/// One file's rows and the conversions that brought them to fwdbench's conventions.
#[derive(Debug, Clone)]
pub struct Measurements {
    pub path: PathBuf,
    pub format: Format,
    pub rows: Vec<Measurement>,
    pub conversions: Vec<String>,
}

/// Reads `path` as `format` (detected from the file when `None`).
pub fn read(path: &Path, format: Option<Format>) -> Result<Measurements, InputError> {
    let text = std::fs::read_to_string(path).map_err(|source| InputError::Io { path: path.to_path_buf(), source })?;
    let format = format.unwrap_or_else(|| Format::detect(path, &text));
    let mut conversions = Vec::new();
    let rows = match format {
        Format::Fwdbench => read_fwdbench(path, &text)?,
        Format::Sglang => {
            conversions.push("SGLang latencies in seconds → ms".to_string());
            conversions.push(
                "SGLang's median decode step covers caches of input_len..input_len+output_len-1 tokens; joined at seq = input_len"
                    .to_string(),
            );
            read_sglang(path, &text)?
        }
        Format::SeedCsv | Format::SeedLog => {
            let seed_rows = if format == Format::SeedCsv {
                seed::parse_seed_csv(path, &text)?
            } else {
                seed::parse_seed_log(path, &text)?
            };
            seed_conversions(&seed_rows, &mut conversions);
            seed_rows.iter().map(seed::SeedRow::measurement).collect()
        }
    };
    if rows.is_empty() {
        return Err(InputError::Empty { path: path.to_path_buf(), format: format.name() });
    }
    Ok(Measurements { path: path.to_path_buf(), format, rows, conversions })
}

fn seed_conversions(rows: &[seed::SeedRow], out: &mut Vec<String>) {
    out.push(
        "seed latency is the mean of 50 back-to-back forwards (fwdbench: the median of timed iterations)".to_string(),
    );
    if rows.iter().any(|r| r.phase == Phase::Decode) {
        out.push("seed decode seq_len is prompt + 1 → seq_len - 1".to_string());
    }
    let mut dp: Vec<String> = rows
        .iter()
        .filter(|r| dp_attention_ranks(&r.deploy) > 1)
        .map(|r| format!("{} (x{})", r.deploy, dp_attention_ranks(&r.deploy)))
        .collect();
    dp.dedup();
    if !dp.is_empty() {
        out.push(format!("seed bsz is one DP-attention rank's → global batch for {}", dp.join(", ")));
    }
}

fn bad(path: &Path, line: usize, msg: String) -> InputError {
    InputError::Parse { path: path.to_path_buf(), line, msg }
}

/// fwdbench's CSV, by column name, so files from builds with more columns still read.
fn read_fwdbench(path: &Path, text: &str) -> Result<Vec<Measurement>, InputError> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(text.as_bytes());
    let header = reader.headers().map_err(|e| bad(path, 1, e.to_string()))?.clone();
    let column = |name: &str| header.iter().position(|h| h == name);
    let need = |name: &str| {
        column(name).ok_or_else(|| {
            bad(path, 1, format!("no `{name}` column; expected a CSV as `fwdbench run --save` writes (results/csv/<model>_<mconf>.csv)"))
        })
    };
    let (model, mconf, deploy, phase) = (need("model")?, need("mconf")?, need("deploy")?, need("phase")?);
    let (bsz, seq, latency) = (need("bsz")?, need("seq_len")?, need("latency_ms")?);
    let (mfu, mbu) = (column("mfu"), column("mbu"));
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.map_err(|e| bad(path, line, e.to_string()))?;
        let get = |c: usize| record.get(c).unwrap_or("").trim();
        let num = |c: usize, what: &str| -> Result<f64, InputError> {
            get(c).parse().map_err(|_| bad(path, line, format!("{what} `{}` is not a number", get(c))))
        };
        let opt = |c: Option<usize>| c.and_then(|c| get(c).parse::<f64>().ok());
        let phase = seed::parse_phase(get(phase))
            .ok_or_else(|| bad(path, line, format!("phase `{}` is neither prefill nor decode", get(phase))))?;
        rows.push(Measurement {
            model: Some(get(model).to_string()),
            mconf: Some(get(mconf).to_string()),
            deploy: Some(get(deploy).to_string()),
            phase,
            bsz: num(bsz, "bsz")? as usize,
            seq: num(seq, "seq_len")? as usize,
            latency_ms: num(latency, "latency_ms")?,
            mfu: opt(mfu),
            mbu: opt(mbu),
            line,
        });
    }
    Ok(rows)
}

/// SGLang bench_one_batch JSONL: each object gives a prefill row and, with
/// `median_decode_latency`, a decode row. Its batch is the whole batch sent.
fn read_sglang(path: &Path, text: &str) -> Result<Vec<Measurement>, InputError> {
    let mut rows = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(raw).map_err(|e| bad(path, line, format!("not a JSON object: {e}")))?;
        let int = |key: &str| {
            v.get(key).and_then(serde_json::Value::as_u64).map(|n| n as usize).ok_or_else(|| {
                bad(path, line, format!("no integer `{key}`; expected bench_one_batch's --result-filename lines"))
            })
        };
        let secs = |key: &str| v.get(key).and_then(serde_json::Value::as_f64);
        let (bsz, seq) = (int("batch_size")?, int("input_len")?);
        let prefill =
            secs("prefill_latency").ok_or_else(|| bad(path, line, "no `prefill_latency` (seconds)".to_string()))?;
        let row = |phase, s: f64| Measurement {
            model: None,
            mconf: None,
            deploy: None,
            phase,
            bsz,
            seq,
            latency_ms: s * 1e3,
            mfu: None,
            mbu: None,
            line,
        };
        rows.push(row(Phase::Prefill, prefill));
        if let Some(decode) = secs("median_decode_latency") {
            rows.push(row(Phase::Decode, decode));
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_apart() {
        let p = Path::new;
        assert_eq!(Format::detect(p("r.jsonl"), ""), Format::Sglang);
        assert_eq!(Format::detect(p("benchmark_1.log"), ""), Format::SeedLog);
        assert_eq!(Format::detect(p("a.csv"), "model,mconf,base\n"), Format::Fwdbench);
        assert_eq!(
            Format::detect(p("benchmark.csv"), "qwen_sigma,full,base,tp8,fa3,Prefill,1,2,3,4\n"),
            Format::SeedCsv
        );
        assert_eq!(Format::parse("seed-log"), Some(Format::SeedLog));
    }

    #[test]
    fn sglang_seconds_become_milliseconds() {
        let text = r#"{"run_name":"x","batch_size":4,"input_len":1024,"output_len":16,"prefill_latency":0.125,"median_decode_latency":0.0105}"#;
        let rows = read_sglang(Path::new("r.jsonl"), text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].phase, rows[0].bsz, rows[0].seq, rows[0].latency_ms), (Phase::Prefill, 4, 1024, 125.0));
        assert!((rows[1].latency_ms - 10.5).abs() < 1e-9);
        let e = read_sglang(Path::new("r.jsonl"), r#"{"batch_size":1}"#).unwrap_err().to_string();
        assert!(e.contains("r.jsonl:1") && e.contains("input_len"), "{e}");
    }

    #[test]
    fn fwdbench_csv_needs_its_columns() {
        let e = read_fwdbench(Path::new("a.csv"), "model,mconf,deploy,phase,bsz\n").unwrap_err().to_string();
        assert!(e.contains("seq_len") && e.contains("fwdbench run --save"), "{e}");
    }
}
