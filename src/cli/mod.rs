//! The `fwdbench` command line: one file per subcommand. It turns flags into the
//! library's own inputs (configs, deployments, `bench::BenchOptions`) and prints results;
//! nothing in the library depends on it.

mod analyze;
mod check;
mod comm;
mod common;
mod compare;
mod count;
mod export;
mod info;
mod kernel;
mod plot;
mod run;

use clap::{Parser, Subcommand};
use fwdbench::config::knobs;

#[derive(Debug, Parser)]
#[command(
    name = "fwdbench",
    version,
    about = "How fast is one forward of this model, at this shape, on this many GPUs?"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Time prefill and decode forwards over a grid of (batch, sequence) shapes.
    Run(run::RunArgs),
    /// Parameters, FLOPs, bytes and memory of a model on a deployment, from its plan.
    Count(count::CountArgs),
    /// Run a forward on given token ids and compare its logits with expected ones.
    Check(check::CheckArgs),
    /// What this build and this machine have: kernels, CUDA libraries, GPUs.
    Info(info::InfoArgs),
    /// Per-kernel checks against the CPU reference.
    Kernel(kernel::KernelArgs),
    /// NCCL collectives over the local GPUs: `comm bench` writes the projection's communication table.
    Comm(comm::CommArgs),
    /// Latency, MFU and MBU against batch and sequence length, as PNG and SVG, from result CSVs.
    Plot(plot::PlotArgs),
    /// Our rows against SGLang bench_one_batch, the seed pipeline or another fwdbench CSV: both latencies and the ratio.
    Compare(compare::CompareArgs),
    /// MFU and MBU of recorded latencies (seed logs and CSVs, fwdbench CSVs): our cost model beside the seed's FLOP convention.
    Analyze(analyze::AnalyzeArgs),
    /// Write the weights fwdbench uses as a Hub-format checkpoint folder (HF, SGLang, references).
    Export(export::ExportArgs),
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(a) => knobs::check_env().and_then(|()| run::run(a)),
        Command::Count(a) => count::count(a),
        Command::Check(a) => knobs::check_env().and_then(|()| check::check(a)),
        Command::Info(a) => info::info(a),
        Command::Kernel(a) => knobs::check_env().and_then(|()| kernel::kernel(a)),
        Command::Comm(a) => knobs::check_env().and_then(|()| comm::comm(a)),
        Command::Plot(a) => plot::plot(a),
        Command::Compare(a) => compare::compare(a),
        Command::Analyze(a) => analyze::analyze_cmd(a),
        Command::Export(a) => export::run_export(a),
    }
}

/// `key=value` pairs of a repeated `--set` flag.
pub fn parse_sets(sets: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    sets.iter()
        .map(|s| {
            s.split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| anyhow::anyhow!("--set {s}: expected key=value, e.g. --set num_hidden_layers=4"))
        })
        .collect()
}
