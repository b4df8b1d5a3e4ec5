//! The seed pipeline's result files, read as the seed wrote them (seed-pipeline.md §1):
//! - its CSV (`results/csv/benchmark.csv`, no header): `model, arch, base, deploy, backend,
//!   phase, bsz, seq_len, latency(ms), mfu(fraction)`;
//! - its raw log (`results/raw_output/benchmark_*.log`): `Using model config: <model>
//!   <mconf>`, `Using configs: <base>, <deploy>, <backend>, <optional>`, and per device
//!   `Latency Benchmark Device <d> Phase: <Prefill|Decode>, Batch Size: <b>, Sequence
//!   Length: <s>, Average Latency: <x> ms`.
//!
//! Both keep the seed's conventions: decode `seq_len` is the prompt plus one, and under DP
//! attention `bsz` is one rank's batch (Device 0's). [`SeedRow::measurement`] converts them
//! to fwdbench's (decode seq = tokens already cached, global batch).

use std::path::Path;

use super::compare::{InputError, Measurement};
use crate::plan::Phase;

/// One row as the seed recorded it, before any conversion.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedRow {
    pub model: String,
    pub mconf: String,
    pub base: String,
    pub deploy: String,
    pub backend: String,
    pub phase: Phase,
    /// As logged: one DP rank's batch under DP attention.
    pub bsz_logged: usize,
    /// As logged: the prompt length for prefill, prompt + 1 for decode.
    pub seq_logged: usize,
    /// The mean over the seed's 50 back-to-back forwards.
    pub latency_ms: f64,
    /// The seed CSV's own MFU column (a fraction); logs have none.
    pub mfu: Option<f64>,
    /// 1-based line in the file, for messages.
    pub line: usize,
}

/// The number after `prefix` in a seed deploy name (`tp8ep8dp8` → tp 8, dp 8), if any.
fn name_factor(deploy: &str, prefix: &str) -> Option<usize> {
    let at = deploy.find(prefix)? + prefix.len();
    let digits: String = deploy[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// DP-attention ranks of a seed deploy name: its `dp<N>` (every seed deploy with `dp` in its
/// name enables DP attention), 1 without one.
pub fn dp_attention_ranks(deploy: &str) -> usize {
    name_factor(deploy, "dp").unwrap_or(1).max(1)
}

/// GPUs the seed's analysis.py divides by: the `tp<N>` of the deploy name.
pub fn seed_gpus(deploy: &str) -> usize {
    name_factor(deploy, "tp").unwrap_or(1).max(1)
}

pub fn parse_phase(text: &str) -> Option<Phase> {
    match text.trim().to_ascii_lowercase().as_str() {
        "prefill" => Some(Phase::Prefill),
        "decode" => Some(Phase::Decode),
        _ => None,
    }
}

impl SeedRow {
    /// The global batch: the logged per-rank batch times the DP-attention ranks.
    pub fn global_bsz(&self) -> usize {
        self.bsz_logged * dp_attention_ranks(&self.deploy)
    }

    /// fwdbench's sequence length: decode rows lose the seed's `+1`.
    pub fn seq(&self) -> usize {
        match self.phase {
            Phase::Prefill => self.seq_logged,
            Phase::Decode => self.seq_logged.saturating_sub(1),
        }
    }

    /// This row in fwdbench's conventions. The seed's MFU is kept only when no conversion
    /// changed what it was computed from (its batch is per rank under DP attention).
    pub fn measurement(&self) -> Measurement {
        let dp = dp_attention_ranks(&self.deploy);
        Measurement {
            model: Some(self.model.clone()),
            mconf: Some(self.mconf.clone()),
            deploy: Some(self.deploy.clone()),
            phase: self.phase,
            bsz: self.global_bsz(),
            seq: self.seq(),
            latency_ms: self.latency_ms,
            mfu: self.mfu.filter(|_| dp == 1),
            mbu: None,
            line: self.line,
        }
    }
}

fn bad(path: &Path, line: usize, msg: String) -> InputError {
    InputError::Parse { path: path.to_path_buf(), line, msg }
}

fn number<T: std::str::FromStr>(path: &Path, line: usize, what: &str, text: &str) -> Result<T, InputError> {
    let text = text.trim().trim_end_matches(',');
    text.parse().map_err(|_| bad(path, line, format!("{what} `{text}` is not a number")))
}

/// The seed's headerless 10-column CSV.
pub fn parse_seed_csv(path: &Path, text: &str) -> Result<Vec<SeedRow>, InputError> {
    let mut rows = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = raw.split(',').map(str::trim).collect();
        if f.len() != 10 {
            return Err(bad(
                path,
                line,
                format!("{} fields; the seed's CSV has 10 (model, arch, base, deploy, backend, phase, bsz, seq_len, latency, mfu)", f.len()),
            ));
        }
        let phase = parse_phase(f[5])
            .ok_or_else(|| bad(path, line, format!("phase `{}` is neither Prefill nor Decode", f[5])))?;
        rows.push(SeedRow {
            model: f[0].to_string(),
            mconf: f[1].to_string(),
            base: f[2].to_string(),
            deploy: f[3].to_string(),
            backend: f[4].to_string(),
            phase,
            bsz_logged: number(path, line, "bsz", f[6])?,
            seq_logged: number(path, line, "seq_len", f[7])?,
            latency_ms: number(path, line, "latency", f[8])?,
            mfu: Some(number(path, line, "mfu", f[9])?),
            line,
        });
    }
    Ok(rows)
}

/// The text after `key` up to the next comma (or the end), trimmed.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let rest = &text[text.find(key)? + key.len()..];
    Some(rest.split(',').next().unwrap_or(rest).trim())
}

/// Device 0's latency lines of a seed raw log (the ones the seed's analysis.py reads),
/// with the model and conf layers its header lines name. Other devices' lines are skipped.
pub fn parse_seed_log(path: &Path, text: &str) -> Result<Vec<SeedRow>, InputError> {
    let (mut model, mut mconf) = (String::new(), String::new());
    let (mut base, mut deploy, mut backend) = (String::new(), String::new(), String::new());
    let mut rows = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if let Some(at) = raw.find("Using model config:") {
            let mut words = raw[at + "Using model config:".len()..].split_whitespace();
            model = words.next().unwrap_or("").to_string();
            mconf = words.next().unwrap_or("").to_string();
        } else if let Some(at) = raw.find("Using configs:") {
            let layers: Vec<&str> = raw[at + "Using configs:".len()..].split(',').map(str::trim).collect();
            base = layers.first().unwrap_or(&"").to_string();
            deploy = layers.get(1).unwrap_or(&"").to_string();
            backend = layers.get(2).unwrap_or(&"").to_string();
        } else if let Some(at) = raw.find("Latency Benchmark Device") {
            let entry = &raw[at..];
            let device: usize =
                number(path, line, "device", field(entry, "Device").unwrap_or("").split(' ').next().unwrap_or(""))?;
            if device != 0 {
                continue;
            }
            let phase_text = field(entry, "Phase:").unwrap_or("");
            let phase = parse_phase(phase_text)
                .ok_or_else(|| bad(path, line, format!("phase `{phase_text}` is neither Prefill nor Decode")))?;
            let latency = field(entry, "Average Latency:").unwrap_or("").trim_end_matches("ms").trim();
            if deploy.is_empty() {
                return Err(bad(
                    path,
                    line,
                    "a latency line before any `Using configs:` line: the deploy is unknown; is this a seed raw log?"
                        .to_string(),
                ));
            }
            rows.push(SeedRow {
                model: model.clone(),
                mconf: mconf.clone(),
                base: base.clone(),
                deploy: deploy.clone(),
                backend: backend.clone(),
                phase,
                bsz_logged: number(path, line, "Batch Size", field(entry, "Batch Size:").unwrap_or(""))?,
                seq_logged: number(path, line, "Sequence Length", field(entry, "Sequence Length:").unwrap_or(""))?,
                latency_ms: number(path, line, "Average Latency", latency)?,
                mfu: None,
                line,
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2025-08-01 10:00:00 Using model config: qwen_sigma full
Using configs: base, tp8ep8dp8, fa3, default
Running with batch sizes: 1, sequence lengths: 500
[RECORD] Latency Benchmark Device 1 Phase: Prefill, Batch Size: 2, Sequence Length: 500, Average Latency: 99.0000 ms
[RECORD] Latency Benchmark Device 0 Phase: Prefill, Batch Size: 2, Sequence Length: 500, Average Latency: 120.5000 ms
[RECORD] Latency Benchmark Device 0 Phase: Decode, Batch Size: 2, Sequence Length: 501, Average Latency: 20.2500 ms
";

    #[test]
    fn log_rows_are_device_zero_converted_to_our_conventions() {
        let rows = parse_seed_log(Path::new("x.log"), LOG).unwrap();
        assert_eq!(rows.len(), 2, "Device 1 is skipped");
        assert_eq!(
            (rows[0].model.as_str(), rows[0].mconf.as_str(), rows[0].deploy.as_str()),
            ("qwen_sigma", "full", "tp8ep8dp8")
        );
        assert_eq!(rows[0].latency_ms, 120.5);
        let decode = rows[1].measurement();
        assert_eq!((decode.phase, decode.bsz, decode.seq), (Phase::Decode, 16, 500), "x8 DP ranks, seq - 1");
        assert_eq!(rows[0].measurement().seq, 500, "prefill keeps its length");
    }

    #[test]
    fn csv_rows_keep_mfu_only_without_a_batch_conversion() {
        let text = "qwen_sigma,full,base,tp8ep8,fa3,Prefill,1,500,58.61,0.0517\nqwen_sigma,full,base,tp8ep8dp8,fa3,Decode,64,501,51.57,0.0075\n";
        let rows = parse_seed_csv(Path::new("b.csv"), text).unwrap();
        assert_eq!(rows[0].measurement().mfu, Some(0.0517));
        let m = rows[1].measurement();
        assert_eq!((m.bsz, m.seq, m.mfu), (512, 500, None));
        let e = parse_seed_csv(Path::new("b.csv"), "a,b,c\n").unwrap_err().to_string();
        assert!(e.contains("b.csv:1") && e.contains("3 fields"), "{e}");
    }

    #[test]
    fn deploy_names_give_dp_and_gpus() {
        assert_eq!((dp_attention_ranks("tp8ep8dp8"), seed_gpus("tp8ep8dp8")), (8, 8));
        assert_eq!((dp_attention_ranks("tp16ep16"), seed_gpus("tp16ep16")), (1, 16));
        assert_eq!((dp_attention_ranks("custom"), seed_gpus("custom")), (1, 1));
    }
}
