//! `fwdbench comm bench`: the nccl-tests-like sweep that writes the communication table
//! `run --project --comm-table` reads. On a node it starts one worker per local GPU (the
//! same launcher `run` uses); each worker joins global rank 0's rendezvous and times its
//! share; rank 0 prints the table and writes the CSV.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};

use fwdbench::bench::comm::{
    mode_name, parse_bytes, parse_dtype, parse_modes, parse_ops, parse_size_list, require_comm_libraries, run_rank,
    series_lines, size_list, CommBenchOptions, Series,
};
use fwdbench::dist::comm_model::CommTable;
use fwdbench::dist::launch::{node_ranks, spawn_local_workers, Worker, DEFAULT_PORT};

#[derive(Debug, Args)]
pub struct CommArgs {
    #[command(subcommand)]
    pub command: CommCommand,
}

#[derive(Debug, Subcommand)]
pub enum CommCommand {
    /// Time NCCL collectives over message sizes, eager and graphed; write the communication table.
    Bench(CommBenchArgs),
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  fwdbench comm bench\n  fwdbench comm bench --gpus 2 --ops all_reduce --mode graph --max-bytes 64M\n  fwdbench comm bench --factor 2   (every size of the public 8xH200 table, 1K to 512M)\n  fwdbench comm bench --ops all_reduce --sizes 10K,20K,40K,80K,160K,320K   (the seed's ar.py: bsz 1-32 x 5120 bf16)\n  fwdbench comm bench --nnodes 2 --ip 10.0.0.1 --rank 1   (on the second node)\nThe CSV feeds `fwdbench run --project --comm-table <csv>`."
)]
pub struct CommBenchArgs {
    /// GPUs per node (the world is gpus x nnodes); all visible GPUs when absent.
    #[arg(long)]
    pub gpus: Option<usize>,
    /// Collectives, comma-separated: all_reduce, all_gather, reduce_scatter, all_to_all, or all.
    #[arg(long, default_value = "all")]
    pub ops: String,
    /// Smallest message (nccl-tests' size: the larger of the send and receive buffers).
    #[arg(long, default_value = "1K")]
    pub min_bytes: String,
    /// Largest message.
    #[arg(long, default_value = "1G")]
    pub max_bytes: String,
    /// Each size is the previous one times this.
    #[arg(long, default_value_t = 4)]
    pub factor: u64,
    /// Exact message sizes instead of --min-bytes/--max-bytes/--factor, e.g. 1K,1M,512M.
    #[arg(long, conflicts_with_all = ["min_bytes", "max_bytes", "factor"])]
    pub sizes: Option<String>,
    /// eager (one collective between events), graph (collectives replayed from a CUDA graph), or both.
    #[arg(long, default_value = "eager,graph")]
    pub mode: String,
    /// Timed iterations per size; the table keeps their median, p10 and p90.
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Untimed iterations per size first (NCCL sets up connections lazily).
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Collectives captured back to back in one graph (graph mode's time is a replay over this).
    #[arg(long, default_value_t = 10)]
    pub graph_ops: usize,
    /// Element type: bf16 or f32.
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
    /// The CSV to write; results/comm/comm_<world>x<gpu>.csv when absent.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Address of the node running global rank 0 (several nodes); this host when absent.
    #[arg(long)]
    pub ip: Option<String>,
    /// This node's rank, from 0 (several nodes).
    #[arg(long, default_value_t = 0)]
    pub rank: usize,
    /// Nodes in the run, each running this command with its own --rank.
    #[arg(long, default_value_t = 1)]
    pub nnodes: usize,
    /// Port of rank 0's rendezvous.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
}

impl CommBenchArgs {
    /// The sweep the flags ask for; every flag is checked before any device is touched.
    fn options(&self) -> anyhow::Result<CommBenchOptions> {
        let sizes = match &self.sizes {
            Some(list) => parse_size_list(list)?,
            None => size_list(
                parse_bytes("--min-bytes", &self.min_bytes)?,
                parse_bytes("--max-bytes", &self.max_bytes)?,
                self.factor,
            )?,
        };
        let opts = CommBenchOptions {
            ops: parse_ops(&self.ops)?,
            sizes,
            modes: parse_modes(&self.mode)?,
            warmup: self.warmup,
            iters: self.iters,
            graph_ops: self.graph_ops,
            dtype: parse_dtype(&self.dtype)?,
        };
        opts.validate()?;
        anyhow::ensure!(self.nnodes >= 1, "--nnodes 0: a run has at least one node");
        anyhow::ensure!(self.gpus != Some(0), "--gpus 0: give at least one GPU per node");
        anyhow::ensure!(
            self.nnodes == 1 || self.rank == 0 || self.ip.is_some(),
            "--rank {} of --nnodes {} needs --ip, the address of the node with rank 0",
            self.rank,
            self.nnodes
        );
        Ok(opts)
    }

    /// Where rank 0 listens: every interface when other nodes must reach it.
    fn bind(&self, master: &str) -> String {
        if self.nnodes > 1 {
            format!("0.0.0.0:{}", self.port)
        } else {
            master.to_string()
        }
    }
}

pub fn comm(args: CommArgs) -> anyhow::Result<()> {
    match args.command {
        CommCommand::Bench(a) => bench(a),
    }
}

fn bench(args: CommBenchArgs) -> anyhow::Result<()> {
    let opts = args.options()?;
    if let Some(worker) = Worker::from_env()? {
        return run_worker(&args, &opts, &worker, &args.bind(&worker.master));
    }
    require_comm_libraries()?;
    let visible = cudarc::driver::CudaContext::device_count().context("counting this node's GPUs")? as usize;
    anyhow::ensure!(visible > 0, "the CUDA driver sees no GPU on this node; check nvidia-smi and CUDA_VISIBLE_DEVICES");
    let per_node = args.gpus.unwrap_or(visible);
    anyhow::ensure!(
        per_node <= visible,
        "--gpus {per_node}: this node has {visible} visible GPU(s); lower --gpus, or leave it out to use them all"
    );
    let world = per_node * args.nnodes;
    let ranks = node_ranks(world, args.nnodes, args.rank)?;
    super::common::print_conf_notes(None, fwdbench::config::run_conf::Subcommand::Comm);
    if world == 1 {
        // One process alone: no workers to start, and a free port for its own rendezvous.
        let worker = Worker { rank: 0, world: 1, local_rank: 0, master: "127.0.0.1:0".into() };
        return run_worker(&args, &opts, &worker, "127.0.0.1:0");
    }
    let master = format!("{}:{}", args.ip.as_deref().unwrap_or("127.0.0.1"), args.port);
    let own_args: Vec<String> = std::env::args().skip(1).collect();
    Ok(spawn_local_workers(&own_args, ranks, world, &master)?)
}

/// `comm_8xh200.csv` for 8 "NVIDIA H200"s.
fn default_out(world: usize, gpu: &str) -> PathBuf {
    let name = gpu.to_lowercase().replace("nvidia", "");
    let words: Vec<&str> = name.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let gpu = if words.is_empty() { "gpu".to_string() } else { words.join("_") };
    Path::new("results").join("comm").join(format!("comm_{world}x{gpu}.csv"))
}

fn run_worker(args: &CommBenchArgs, opts: &CommBenchOptions, worker: &Worker, bind: &str) -> anyhow::Result<()> {
    let mut table = CommTable { origin: "fwdbench comm bench".into(), points: Vec::new() };
    let mut out: Option<PathBuf> = None;
    run_rank(worker, bind, opts, |series: &Series| {
        let path =
            out.get_or_insert_with(|| args.out.clone().unwrap_or_else(|| default_out(series.world, &series.gpu)));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("--out {}: cannot create its folder", path.display()))?;
        }
        for line in series_lines(&series.rows, opts.dtype, opts.graph_ops) {
            println!("{line}");
        }
        println!();
        table.points.extend(series.rows.iter().map(|r| r.point.clone()));
        // Rewritten after every series, so a failure later loses nothing measured.
        table.save(path)?;
        Ok(())
    })?;
    if let Some(path) = out {
        let modes: Vec<&str> = opts.modes.iter().map(|&m| mode_name(m)).collect();
        eprintln!(
            "wrote {} ({} rows, {} mode); use it with `fwdbench run --project --comm-table {}`",
            path.display(),
            table.points.len(),
            modes.join(" and "),
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_names_read_like_the_machine() {
        assert_eq!(default_out(8, "NVIDIA H200"), Path::new("results/comm/comm_8xh200.csv"));
        assert_eq!(default_out(2, "NVIDIA H100 80GB HBM3"), Path::new("results/comm/comm_2xh100_80gb_hbm3.csv"));
        assert_eq!(default_out(1, "NVIDIA"), Path::new("results/comm/comm_1xgpu.csv"));
    }
}
