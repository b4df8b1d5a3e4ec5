//! `fwdbench compare`: our rows against SGLang's, the seed pipeline's or another build's.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use fwdbench::report::compare::{join, read, Format, JoinBy};
use fwdbench::report::plot::{comparison_figure, write_both};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  fwdbench compare results/csv/qwen_2l.csv sglang_results.jsonl\n  fwdbench compare results/csv/sigma_full.csv results/csv/benchmark.csv --by shape   (the seed's CSV; its qwen_sigma is our sigma)\n  fwdbench compare results/csv/sigma_full.csv results/raw_output/benchmark_20250801_100000.log\n  fwdbench compare before/qwen_2l.csv after/qwen_2l.csv --csv results/compare.csv --plot results/plots/qwen_compare\n\nBoth sides are brought to fwdbench's conventions first: latency in ms (SGLang writes seconds), decode\nseq_len = tokens already cached (the seed logs prompt + 1), bsz = the global batch (the seed logs one\nDP-attention rank's). The ratio is THEIRS / OURS: above 1, OURS is faster."
)]
pub struct CompareArgs {
    /// fwdbench CSV (results/csv/*.csv): the reference side.
    #[arg(value_name = "OURS")]
    pub ours: PathBuf,
    /// The other side: SGLang bench_one_batch JSONL, the seed's CSV or raw log, or another fwdbench CSV.
    #[arg(value_name = "THEIRS")]
    pub theirs: PathBuf,
    /// What THEIRS is (default: detected): fwdbench, sglang, seed-csv, seed-log.
    #[arg(long, value_parser = format_arg)]
    pub format: Option<Format>,
    /// Match rows on `identity` (shape plus model, mconf and deploy where both name them) or `shape` alone.
    #[arg(long, default_value = "identity", value_parser = ["identity", "shape"])]
    pub by: String,
    /// Write the joined table as CSV.
    #[arg(long, value_name = "PATH")]
    pub csv: Option<PathBuf>,
    /// Draw both latencies and the ratio against batch size into <STEM>_compare.{png,svg}.
    #[arg(long, value_name = "STEM")]
    pub plot: Option<PathBuf>,
}

/// `--format` values, shared by plot, compare and analyze.
pub fn format_arg(text: &str) -> Result<Format, String> {
    Format::parse(text)
        .ok_or_else(|| format!("`{text}` is not a result format: use fwdbench, sglang, seed-csv or seed-log"))
}

pub fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let ours =
        read(&args.ours, Some(Format::Fwdbench)).context("OURS must be a CSV as `fwdbench run --save` writes")?;
    let theirs = read(&args.theirs, args.format)?;
    let (a_label, b_label) = match theirs.format {
        Format::Fwdbench => ("before", "after"),
        Format::Sglang => ("fwdbench", "sglang"),
        Format::SeedCsv | Format::SeedLog => ("fwdbench", "seed"),
    };
    let by = if args.by == "shape" { JoinBy::Shape } else { JoinBy::Identity };
    let c = join(&ours.rows, &theirs.rows, by, a_label, b_label);
    println!(
        "{a_label}: {} ({} rows); {b_label}: {} ({}, {} rows)",
        args.ours.display(),
        ours.rows.len(),
        args.theirs.display(),
        theirs.format.name(),
        theirs.rows.len()
    );
    for note in &theirs.conversions {
        println!("  converted: {note}");
    }
    anyhow::ensure!(
        !c.pairs.is_empty(),
        "no shape (phase, bsz, seq_len{}) is in both {} and {}; check the files, or pass --by shape to ignore model and deploy names",
        if by == JoinBy::Identity { ", model, mconf, deploy" } else { "" },
        args.ours.display(),
        args.theirs.display()
    );
    println!("{}", c.table());
    println!(
        "{} shapes in both; {} of {a_label}'s and {} of {b_label}'s rows have no partner",
        c.pairs.len(),
        c.only_a,
        c.only_b
    );
    if let Some(path) = &args.csv {
        c.write_csv(path).with_context(|| format!("--csv {}: cannot write the table", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(stem) = &args.plot {
        for path in write_both(&comparison_figure(&c), stem, "compare")? {
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
