//! `fwdbench check`: one forward on given token ids against expected logits.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use super::common::{layouts, DeployArgs};
use fwdbench::bench::memory::cuda_check;
use fwdbench::check::compare::{CPU_LOGITS_TOL, CUDA_LOGITS_TOL, MIN_TOP1};
use fwdbench::check::{compare, cpu_logits, expected_rows, CheckMode};
use fwdbench::weights::SafetensorsWeights;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Device {
    Cpu,
    Cuda,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  fwdbench check --config tests/fixtures/qwen3/config.json --weights tests/fixtures/qwen3/model.safetensors \\\n      --input tests/fixtures/qwen3/input.json --expect tests/fixtures/qwen3/logits.safetensors\n  fwdbench check ... --deploy tp2 --decode --device cuda"
)]
pub struct CheckArgs {
    /// HF-style config.json.
    #[arg(long)]
    pub config: PathBuf,
    /// Weights: a .safetensors file, an index json, or a folder of shards.
    #[arg(long)]
    pub weights: PathBuf,
    /// Token ids: {"input_ids": [[...], ...]}.
    #[arg(long)]
    pub input: PathBuf,
    /// Expected logits: a safetensors file with tensor "logits" [batch, seq, vocab] (or SGLang's "logprobs", compared with our log-softmax), e.g. from python/reference/reference_logits.py.
    #[arg(long)]
    pub expect: PathBuf,
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
    /// Prefill all but the last token, then one decode step; compare the last position.
    #[arg(long)]
    pub decode: bool,
    /// Largest accepted relative L2 error (default 1e-4 on the CPU, 2e-2 on CUDA).
    #[arg(long, value_parser = positive_finite)]
    pub tol: Option<f64>,
    /// Smallest accepted top-1 agreement, a fraction in [0, 1].
    #[arg(long, default_value_t = MIN_TOP1, value_parser = fraction)]
    pub min_top1: f64,
    #[command(flatten)]
    pub deploy: DeployArgs,
}

pub fn check(args: CheckArgs) -> anyhow::Result<()> {
    let cfg = super::common::load_config_file(&args.config, &[])?;
    let (_, dep) = args.deploy.load()?;
    let layouts = layouts(&dep)?;
    let weights = SafetensorsWeights::open(&args.weights)?;
    let expected = SafetensorsWeights::open(&args.expect)?;
    // SGLang reports log-probabilities, not logits (reference_logits.py --engine sglang).
    let logprobs = !expected.contains("logits") && expected.contains("logprobs");
    let (shape, want) = expected
        .read_tensor(if logprobs { "logprobs" } else { "logits" })
        .with_context(|| format!("--expect {}", args.expect.display()))?;
    let ids = fwdbench::inputs::read_ids_json(&args.input)?;
    let (batch, seq) = (ids.len(), ids[0].len());
    if shape != [batch, seq, cfg.vocab_size] {
        bail!(
            "--expect {}: logits have shape {shape:?}, expected [{batch}, {seq}, {}] from --input and --config",
            args.expect.display(),
            cfg.vocab_size
        );
    }
    fwdbench::inputs::check_vocab(&ids, cfg.vocab_size, &format!("--input {}", args.input.display()))?;
    let mode = if args.decode { CheckMode::Decode } else { CheckMode::Prefill };
    let got = match args.device {
        Device::Cpu => cpu_logits(&cfg, layouts, &weights, &ids, mode)?,
        Device::Cuda => {
            let (got, mem) = cuda_check(&cfg, &layouts, &weights, &ids, mode)?;
            println!(
                "memory: the plan holds {:.1} MiB, the device uses {:.1} MiB beyond its baseline",
                mem.planned_mib(),
                mem.used_mib()
            );
            if let Some(w) = mem.warning() {
                eprintln!("{w}");
            }
            got
        }
    };
    let mut got: Vec<f32> = got.into_iter().flatten().flatten().collect();
    if logprobs {
        got.chunks_mut(cfg.vocab_size).for_each(log_softmax);
    }
    let want = expected_rows(&want, batch, seq, cfg.vocab_size, mode);
    let a = compare(&got, &want, cfg.vocab_size);
    let tol = args.tol.unwrap_or(if args.device == Device::Cpu { CPU_LOGITS_TOL } else { CUDA_LOGITS_TOL });
    let ok = a.rel_l2 <= tol && a.top1 >= args.min_top1;
    println!(
        "check {} {} {:?} on {:?} ({} ranks): rel-L2 {:.3e} (tol {:.0e}), max abs {:.3e}, top-1 {:.1}% ({:.1}% strict) of {} rows: {}",
        args.config.display(),
        if args.decode { "decode" } else { "prefill" },
        args.deploy.deploy,
        args.device,
        dep.tp_size,
        a.rel_l2,
        tol,
        a.max_abs,
        100.0 * a.top1,
        100.0 * a.top1_strict,
        a.rows,
        if ok { "PASS" } else { "FAIL" }
    );
    if !ok {
        bail!("logits differ from {} beyond tolerance", args.expect.display());
    }
    Ok(())
}

/// `row` in place as log-probabilities (max-shifted, in f64).
fn log_softmax(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)) as f64;
    let log_sum = row.iter().map(|v| (*v as f64 - max).exp()).sum::<f64>().ln() + max;
    row.iter_mut().for_each(|v| *v = (*v as f64 - log_sum) as f32);
}

/// A tolerance: a finite number above zero (NaN would make every comparison pass or fail).
fn positive_finite(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{text}` is not a positive finite number (e.g. 2e-2)")),
    }
}

/// A fraction of rows: a number in [0, 1].
fn fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{text}` is not a fraction between 0 and 1 (e.g. 0.99)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_rows_are_log_probabilities() {
        let mut row = [1.0f32, 2.0, 3.0, 1000.0];
        log_softmax(&mut row);
        let total: f64 = row.iter().map(|v| (*v as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6 && row[3].abs() < 1e-6, "{row:?}");
        assert!((row[1] - row[0] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn tolerances_must_be_meaningful_numbers() {
        assert_eq!(positive_finite("2e-2"), Ok(2e-2));
        for bad in ["NaN", "-1", "0", "inf", "x"] {
            assert!(positive_finite(bad).is_err(), "{bad}");
        }
        assert_eq!(fraction("0.99"), Ok(0.99));
        assert!(fraction("2").is_err() && fraction("NaN").is_err() && fraction("-0.1").is_err());
    }
}
