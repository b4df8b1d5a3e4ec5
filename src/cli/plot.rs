//! `fwdbench plot`: latency, MFU and MBU against batch and sequence length from result CSVs.

use std::path::PathBuf;

use clap::Args;

use fwdbench::report::compare::Format;
use fwdbench::report::plot::plot_files;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  fwdbench plot results/csv/qwen_2l.csv\n  fwdbench plot results/csv/sigma_full.csv old/sigma_full.csv --out results/plots/sigma\n\nWrites <out>_batch.{png,svg} (x = batch size, one line per deploy or model and sequence length) and\n<out>_seq.{png,svg} (x = sequence length, one line per deploy or model and batch size): latency, MFU and\nMBU for prefill and decode. Rows appended by several runs keep the newest per shape."
)]
pub struct PlotArgs {
    /// Result files: fwdbench CSVs (results/csv/*.csv), or the seed's CSV and logs, SGLang JSONL.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Output path without extension (default: results/plots/<first file's name>).
    #[arg(long, value_name = "STEM")]
    pub out: Option<PathBuf>,
    /// What the files are (default: detected): fwdbench, sglang, seed-csv, seed-log.
    #[arg(long, value_parser = super::compare::format_arg)]
    pub format: Option<Format>,
}

pub fn plot(args: PlotArgs) -> anyhow::Result<()> {
    let stem = args.out.clone().unwrap_or_else(|| {
        let name = args.files[0].file_stem().map_or_else(|| "plot".into(), |n| n.to_string_lossy().into_owned());
        PathBuf::from("results/plots").join(name)
    });
    for path in plot_files(&args.files, args.format, &stem)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}
