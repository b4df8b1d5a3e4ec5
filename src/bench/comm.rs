//! `fwdbench comm bench`: an nccl-tests-like sweep of the four collectives a deployment
//! runs (all-reduce, all-gather, reduce-scatter, all-to-all) over message sizes, eager and
//! inside a CUDA graph, whose slowest-rank figures become the communication table that
//! projection reads (`dist::comm_model::CommTable`).
//!
//! Conventions are nccl-tests': a message's size is the larger of the send and receive
//! buffers (all-gather: the gathered output; reduce-scatter and all-to-all: the input),
//! rounded down to whole elements per rank; algorithm bandwidth is size / time and bus
//! bandwidth multiplies it by the ring factor (2(n-1)/n for all-reduce, (n-1)/n for the
//! others). Eager: each collective alone between two events, after an NCCL barrier so that
//! ranks start together (a rank that starts early would time its wait for the others).
//! Graph: K collectives back to back in one captured graph, the replay's time over K.

use std::time::Duration;

use anyhow::Context;
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::CudaGraph;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::dist::comm_model::{busbw_gbs, CommModel, CommOp, CommPoint, CommTable, Mode};
use crate::dist::launch::{rendezvous_timeout, Worker};
use crate::dist::nccl::{buffer_bytes, NcclComm, NcclError};
use crate::dist::worker::{communicators, setup_rank};
use crate::exec::cuda::gpu::Gpu;
use crate::exec::cuda::kernels::collective::CollectiveBackend;
use crate::exec::cuda::memory::DeviceBuffer;
use crate::plan::DType;
use crate::report::Stats;

/// GPU memory left free beside the two message buffers: NCCL's own buffers, the captured
/// graphs and the CUDA context grow after the fit is decided.
const RESERVE_BYTES: u64 = 2 << 30;
/// The CSV keeps three decimals and its reader wants positive times: a one-rank collective
/// that NCCL reduces to nothing is written at this floor instead of as 0.
const MIN_US: f64 = 1e-3;

#[derive(Debug, Error, PartialEq)]
pub enum CommBenchError {
    #[error("{flag} `{value}` is not a byte size; write a whole number with an optional K, M or G suffix (powers of 1024), e.g. 1K, 64M, 1G")]
    Size { flag: &'static str, value: String },
    #[error("--min-bytes {} is larger than --max-bytes {}; swap them", human_bytes(*min), human_bytes(*max))]
    Range { min: u64, max: u64 },
    #[error("--factor {0} would not grow the message size; use 2 or more (nccl-tests' -f)")]
    Factor(u64),
    #[error("{flag} `{value}` is not one of {known}")]
    Unknown { flag: &'static str, value: String, known: String },
    #[error("{flag} is empty; give at least one of {known}")]
    Empty { flag: &'static str, known: String },
    #[error("--{flag} {value}: it must be at least 1")]
    Zero { flag: &'static str, value: usize },
    #[error("rank {rank} measured {theirs} message sizes of {op} where rank 0 measured {ours}; every rank must run the same fwdbench build and flags")]
    Mismatch { rank: usize, op: &'static str, theirs: String, ours: String },
}

/// What one sweep measures; every rank of the world gets the same.
#[derive(Debug, Clone, PartialEq)]
pub struct CommBenchOptions {
    pub ops: Vec<CommOp>,
    /// Requested message sizes in bytes, ascending.
    pub sizes: Vec<u64>,
    pub modes: Vec<Mode>,
    pub warmup: usize,
    pub iters: usize,
    /// Collectives captured back to back in one graph.
    pub graph_ops: usize,
    pub dtype: DType,
}

impl CommBenchOptions {
    pub fn validate(&self) -> Result<(), CommBenchError> {
        for (flag, value) in [("iters", self.iters), ("graph-ops", self.graph_ops)] {
            if value == 0 {
                return Err(CommBenchError::Zero { flag, value });
            }
        }
        Ok(())
    }
}

/// `1024`, `1K`, `64M`, `1G` (powers of 1024, as nccl-tests reads `-b`/`-e`); a trailing
/// `B` or `iB` is allowed.
pub fn parse_bytes(flag: &'static str, value: &str) -> Result<u64, CommBenchError> {
    let err = || CommBenchError::Size { flag, value: value.into() };
    let v = value.trim();
    let v = v.strip_suffix("iB").or_else(|| v.strip_suffix(['B', 'b'])).unwrap_or(v);
    let (digits, shift) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                _ => return Err(err()),
            };
            (&v[..i], shift)
        }
        _ => (v, 0),
    };
    let n: u64 = digits.parse().map_err(|_| err())?;
    n.checked_mul(1 << shift).filter(|&b| b > 0).ok_or_else(err)
}

/// nccl-tests' `-b min -e max -f factor`: min, min * factor, ... up to max.
pub fn size_list(min: u64, max: u64, factor: u64) -> Result<Vec<u64>, CommBenchError> {
    if factor < 2 {
        return Err(CommBenchError::Factor(factor));
    }
    if min > max {
        return Err(CommBenchError::Range { min, max });
    }
    let mut sizes = vec![min];
    while let Some(next) = sizes.last().and_then(|s| s.checked_mul(factor)).filter(|&s| s <= max) {
        sizes.push(next);
    }
    Ok(sizes)
}

/// A comma-separated `--sizes` list, sorted, without repeats.
pub fn parse_size_list(value: &str) -> Result<Vec<u64>, CommBenchError> {
    let mut sizes = value.split(',').map(|s| parse_bytes("--sizes", s)).collect::<Result<Vec<_>, _>>()?;
    sizes.sort_unstable();
    sizes.dedup();
    Ok(sizes)
}

/// Items of a comma-separated flag, each one of `known` (by `name`); `all` means every one.
fn parse_names<T: Copy + PartialEq>(
    flag: &'static str,
    value: &str,
    known: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<Vec<T>, CommBenchError> {
    let names = || known.iter().map(|&k| name(k)).collect::<Vec<_>>().join(", ") + " or all";
    let mut out: Vec<T> = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let found: Vec<T> = match known.iter().find(|&&k| name(k) == item) {
            Some(&k) => vec![k],
            None if item == "all" => known.to_vec(),
            None => return Err(CommBenchError::Unknown { flag, value: item.into(), known: names() }),
        };
        out.extend(found.into_iter().filter(|k| !out.contains(k)).collect::<Vec<_>>());
    }
    if out.is_empty() {
        return Err(CommBenchError::Empty { flag, known: names() });
    }
    Ok(out)
}

pub fn parse_ops(value: &str) -> Result<Vec<CommOp>, CommBenchError> {
    parse_names("--ops", value, &CommOp::ALL, CommOp::name)
}

pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Eager => "eager",
        Mode::Graph => "graph",
    }
}

pub fn parse_modes(value: &str) -> Result<Vec<Mode>, CommBenchError> {
    parse_names("--mode", value, &[Mode::Eager, Mode::Graph], mode_name)
}

pub fn parse_dtype(value: &str) -> Result<DType, CommBenchError> {
    match value.trim() {
        "bf16" => Ok(DType::BF16),
        "f32" | "fp32" => Ok(DType::F32),
        other => Err(CommBenchError::Unknown { flag: "--dtype", value: other.into(), known: "bf16, f32".into() }),
    }
}

/// `1K`, `64M`, `1G`, or plain bytes where the size is not a whole multiple.
pub fn human_bytes(bytes: u64) -> String {
    for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Elements per rank (all-to-all: per peer) of a message of at most `bytes` over `ranks`
/// ranks, and the exact message size they make; `None` below one element per rank.
pub fn message_count(op: CommOp, bytes: u64, dtype: DType, ranks: usize) -> Option<(usize, u64)> {
    let per_element = dtype.bytes() * if op == CommOp::AllReduce { 1 } else { ranks };
    let count = usize::try_from(bytes).ok()? / per_element;
    if count == 0 {
        return None;
    }
    let (send, recv) = buffer_bytes(op, count, dtype, ranks)?;
    Some((count, send.max(recv) as u64))
}

/// Algorithm bandwidth in GB/s (nccl-tests' algbw): message bytes over time.
pub fn algbw_gbs(bytes: u64, us: f64) -> f64 {
    bytes as f64 / (us * 1e3)
}

/// One rank's figures for one message size, in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankTiming {
    pub bytes: u64,
    pub us_median: f64,
    pub us_p10: f64,
    pub us_p90: f64,
}

impl RankTiming {
    pub fn of(bytes: u64, samples_us: &[f64]) -> RankTiming {
        let ms: Vec<f64> = samples_us.iter().map(|us| us / 1e3).collect();
        let s = Stats::of(&ms);
        let us = |ms: f64| (ms * 1e3).max(MIN_US);
        RankTiming { bytes, us_median: us(s.median_ms), us_p10: us(s.p10_ms), us_p90: us(s.p90_ms) }
    }
}

/// A table row and how far the ranks were apart.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasuredRow {
    /// The slowest rank's figures (the one with the largest median).
    pub point: CommPoint,
    pub slowest_rank: usize,
    /// Slowest minus fastest rank's median.
    pub spread_us: f64,
}

/// Every rank's timings of one (op, mode) series (index = rank) merged into table rows.
pub fn slowest_rank_rows(
    op: CommOp,
    mode: Mode,
    per_rank: &[Vec<RankTiming>],
) -> Result<Vec<MeasuredRow>, CommBenchError> {
    let ranks = per_rank.len();
    let sizes = |t: &[RankTiming]| t.iter().map(|t| human_bytes(t.bytes)).collect::<Vec<_>>().join(",");
    if let Some(rank) =
        (1..ranks).find(|&r| per_rank[r].iter().map(|t| t.bytes).ne(per_rank[0].iter().map(|t| t.bytes)))
    {
        return Err(CommBenchError::Mismatch {
            rank,
            op: op.name(),
            theirs: sizes(&per_rank[rank]),
            ours: sizes(&per_rank[0]),
        });
    }
    let rows = (0..per_rank.first().map_or(0, Vec::len)).map(|i| {
        let at = |r: usize| &per_rank[r][i];
        let slowest = (0..ranks).max_by(|&a, &b| at(a).us_median.total_cmp(&at(b).us_median)).expect("one rank");
        let fastest = (0..ranks).map(|r| at(r).us_median).fold(f64::INFINITY, f64::min);
        let t = at(slowest);
        let point = CommPoint {
            op,
            ranks,
            bytes: t.bytes,
            mode,
            us_median: t.us_median,
            us_p10: t.us_p10,
            us_p90: t.us_p90,
            busbw_gbs: busbw_gbs(op, ranks, t.bytes, t.us_median),
        };
        MeasuredRow { point, slowest_rank: slowest, spread_us: t.us_median - fastest }
    });
    Ok(rows.collect())
}

/// The built-in public figure for `op` over `ranks` at `bytes`, and whether it is one of
/// its points (otherwise interpolated log-log between them); `None` where the public
/// table has no series of that world size or the size lies outside it.
pub fn public_us(public: &CommTable, model: &CommModel, op: CommOp, ranks: usize, bytes: u64) -> Option<(f64, bool)> {
    let series: Vec<&CommPoint> = public.points.iter().filter(|p| p.op == op && p.ranks == ranks).collect();
    let (lo, hi) = (series.iter().map(|p| p.bytes).min()?, series.iter().map(|p| p.bytes).max()?);
    if let Some(p) = series.iter().find(|p| p.bytes == bytes) {
        return Some((p.us_median, true));
    }
    (lo..=hi).contains(&bytes).then(|| (model.predict(op, ranks, bytes, Mode::Eager, false).us, false))
}

pub const SERIES_HEADER: &str =
    "     bytes   median_us    p10_us    p90_us  algbw_GB/s  busbw_GB/s  spread_us  public_us  measured/public";

/// The terminal lines of one series: a title, the header, one line per size.
pub fn series_lines(rows: &[MeasuredRow], dtype: DType, graph_ops: usize) -> Vec<String> {
    let Some(first) = rows.first() else { return vec![] };
    let (op, ranks, mode) = (first.point.op, first.point.ranks, first.point.mode);
    let how = match mode {
        Mode::Eager => "eager, one collective between events".to_string(),
        Mode::Graph => format!("graph, {graph_ops} collectives per replay"),
    };
    let (public, model) = (CommTable::public_h200(), CommModel::builtin());
    let mut out = vec![
        format!("{} over {ranks} rank(s), {how}, {dtype:?}; the slowest rank's times; public = nccl-tests 8xH200 NCCL 2.29.2, eager (~ interpolated)", op.name()),
        SERIES_HEADER.to_string(),
    ];
    for r in rows {
        let p = &r.point;
        let compare = match public_us(&public, &model, op, ranks, p.bytes) {
            Some((us, exact)) => {
                format!("{:>10} {:>16.2}", format!("{}{us:.1}", if exact { "" } else { "~" }), p.us_median / us)
            }
            None => format!("{:>10} {:>16}", "-", "-"),
        };
        out.push(format!(
            "{:>10} {:11.2} {:9.2} {:9.2} {:11.2} {:11.2} {:10.2} {compare}",
            human_bytes(p.bytes),
            p.us_median,
            p.us_p10,
            p.us_p90,
            algbw_gbs(p.bytes, p.us_median),
            p.busbw_gbs,
            r.spread_us
        ));
    }
    out
}

/// `fwdbench comm bench` needs the CUDA driver and NCCL: one sentence when either is missing.
pub fn require_comm_libraries() -> anyhow::Result<()> {
    // SAFETY: probing only dlopens the libraries.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        anyhow::bail!("fwdbench comm bench times NCCL collectives on NVIDIA GPUs, but this machine has no CUDA driver (libcuda.so); run it on the GPU machine (`fwdbench run --project --analytic` models communication without one)");
    }
    // SAFETY: as above.
    if !unsafe { cudarc::nccl::sys::is_culib_present() } {
        return Err(NcclError::LibraryMissing.into());
    }
    Ok(())
}

/// One (op, mode) series as rank 0 hands it on.
#[derive(Debug, Clone)]
pub struct Series {
    /// The GPU's name (rank 0's) and the world size, for the table's file name.
    pub gpu: String,
    pub world: usize,
    pub rows: Vec<MeasuredRow>,
}

/// The two message buffers, allocated once at the largest size that fits.
struct Buffers {
    send: DeviceBuffer,
    recv: DeviceBuffer,
}

/// Enqueues one `op` of `count` elements per rank on the communicator's stream.
fn issue(comm: &NcclComm, op: CommOp, b: &Buffers, count: usize, dtype: DType) -> Result<(), NcclError> {
    let (send, recv) = (b.send.ptr, b.recv.ptr);
    match op {
        CommOp::AllReduce => comm.all_reduce_in_place(send, count, dtype),
        CommOp::AllGather => comm.all_gather(send, recv, count, dtype),
        CommOp::ReduceScatter => comm.reduce_scatter(send, recv, count, dtype),
        CommOp::AllToAll => comm.all_to_all(send, recv, count, dtype),
    }
}

/// The smallest of every rank's `value`: an all-reduce of a vector in which each rank
/// fills only its own slot (NCCL sums, so the sum holds every rank's value).
fn agree_min(gpu: &Gpu, comm: &NcclComm, value: usize) -> anyhow::Result<usize> {
    let mut slots = vec![0i32; comm.size()];
    slots[comm.rank()] = i32::try_from(value).context("too many message sizes")?;
    let buf = DeviceBuffer::upload(&slots)?;
    comm.all_reduce_in_place(buf.ptr, slots.len(), DType::I32)?;
    gpu.sync().context("agreeing on the message sizes that fit")?;
    let all: Vec<i32> = buf.download(slots.len())?;
    Ok(all.into_iter().min().unwrap_or(0).max(0) as usize)
}

/// Per requested size: elements per rank and exact message bytes (repeats after rounding
/// dropped), and the sizes too small for one element per rank.
fn messages(op: CommOp, sizes: &[u64], dtype: DType, ranks: usize) -> (Vec<(usize, u64)>, Vec<u64>) {
    let (mut fit, mut small) = (Vec::<(usize, u64)>::new(), Vec::new());
    for &s in sizes {
        match message_count(op, s, dtype, ranks) {
            Some(m) if fit.last().is_some_and(|l| l.1 == m.1) => {}
            Some(m) => fit.push(m),
            None => small.push(s),
        }
    }
    (fit, small)
}

/// Events and the iteration loop shared by both modes.
struct Timer<'a> {
    gpu: &'a Gpu,
    comm: &'a NcclComm,
    warmup: usize,
    iters: usize,
}

impl Timer<'_> {
    /// At least one untimed launch: NCCL connects peers and builds its plans lazily, so
    /// the first collective of a kind or size is slow.
    fn warm(&self, launch: &dyn Fn() -> anyhow::Result<()>) -> anyhow::Result<()> {
        for _ in 0..self.warmup.max(1) {
            launch()?;
        }
        self.gpu.sync().context("warm-up collectives")
    }

    /// Microseconds per collective of each timed launch, `per_launch` collectives each.
    fn samples(&self, launch: &dyn Fn() -> anyhow::Result<()>, per_launch: usize) -> anyhow::Result<Vec<f64>> {
        self.warm(launch)?;
        // The barrier is enqueued before the start event, so every rank's GPU leaves it
        // together and starts the clock at the same moment; no L2 flush (nccl-tests has none).
        let align = || Ok(self.comm.barrier()?);
        let ms = super::timing::time_iterations(self.gpu, None, self.iters, align, launch)?;
        Ok(ms.into_iter().map(|t| t * 1e3 / per_launch as f64).collect())
    }
}

/// `count` collectives back to back in one CUDA graph. Every rank captures the same
/// sequence (capture is collective for NCCL).
fn capture(gpu: &Gpu, count: usize, launch: &dyn Fn() -> anyhow::Result<()>) -> anyhow::Result<CudaGraph> {
    gpu.stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
    let captured = (0..count).try_for_each(|_| launch());
    // The capture is ended even after an error, so the stream is usable for the message.
    let graph = gpu.stream.end_capture(CUgraphInstantiate_flags(0));
    captured.context("capturing collectives into a CUDA graph")?;
    graph?.context("the graph capture produced no graph")
}

/// This rank's part of the sweep: set-up through `dist::worker::setup_rank` (rank 0
/// listens on `bind`), then every op, mode and size of `opts`. Collective: every rank
/// of the world calls it with the same options. Rank 0 gets each (op, mode) series,
/// merged over ranks, in `on_series` as soon as it is measured.
pub fn run_rank(
    worker: &Worker,
    bind: &str,
    opts: &CommBenchOptions,
    mut on_series: impl FnMut(&Series) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    opts.validate()?;
    let (world, rank) = (worker.world, worker.rank);
    // One group of all ranks for tensor and expert parallelism: the world communicator is
    // the only one timed, and no sub-group but the one-rank DP peers needs a split.
    let layout = crate::dist::rank_layouts(world, world, 1)?[rank];
    let setup = setup_rank(worker, &layout, bind)?;
    let (gpu, mut rendezvous) = (setup.gpu, setup.rendezvous);
    let backend = communicators(&gpu).context("the rank set-up left no NCCL communicators")?;
    let CollectiveBackend::Nccl(comms) = &*backend else { unreachable!("communicators() are NCCL ones") };
    let comm = comms.world();
    let say = |line: String| {
        if worker.is_leader() {
            eprintln!("{line}");
        }
    };

    let (free, _) = gpu.ctx.mem_get_info()?;
    let room = (free as u64).saturating_sub(RESERVE_BYTES) / 2;
    let fit = agree_min(&gpu, comm, opts.sizes.partition_point(|&s| s <= room))?;
    let (sizes, skipped) = opts.sizes.split_at(fit);
    if !skipped.is_empty() {
        let names: Vec<String> = skipped.iter().map(|&s| human_bytes(s)).collect();
        say(format!(
            "message sizes {} skipped: a send and a receive buffer of each do not fit in the GPU memory free on every rank, less {} GiB for NCCL and the graphs",
            names.join(", "),
            RESERVE_BYTES >> 30
        ));
    }
    let Some(&largest) = sizes.last() else {
        anyhow::bail!("not even the smallest message size ({}) fits in GPU memory on every rank; free some memory or lower --min-bytes", human_bytes(opts.sizes[0]));
    };
    let bufs = Buffers { send: DeviceBuffer::zeroed(largest as usize)?, recv: DeviceBuffer::zeroed(largest as usize)? };
    let timer = Timer { gpu: &gpu, comm, warmup: opts.warmup, iters: opts.iters };
    let timeout: Duration = rendezvous_timeout();
    let total = opts.ops.len() * opts.modes.len();
    for (i, (&op, &mode)) in opts.ops.iter().flat_map(|op| opts.modes.iter().map(move |m| (op, m))).enumerate() {
        say(format!("[{}/{total}] {} {}", i + 1, op.name(), mode_name(mode)));
        let (messages, too_small) = messages(op, sizes, opts.dtype, world);
        if !too_small.is_empty() && mode == opts.modes[0] {
            let names: Vec<String> = too_small.iter().map(|&s| human_bytes(s)).collect();
            say(format!(
                "{} sizes {} skipped: less than one {:?} element per rank",
                op.name(),
                names.join(", "),
                opts.dtype
            ));
        }
        let mut timings = Vec::with_capacity(messages.len());
        for &(count, bytes) in &messages {
            let launch = || Ok(issue(comm, op, &bufs, count, opts.dtype)?);
            let samples = match mode {
                Mode::Eager => timer.samples(&launch, 1),
                Mode::Graph => timer.warm(&launch).and_then(|_| {
                    let graph = capture(&gpu, opts.graph_ops, &launch)?;
                    timer.samples(&|| Ok(graph.launch()?), opts.graph_ops)
                }),
            };
            let samples = samples
                .with_context(|| format!("rank {rank}: {} {} of {}", op.name(), mode_name(mode), human_bytes(bytes)))?;
            timings.push(RankTiming::of(bytes, &samples));
        }
        if let Some(all) = rendezvous.gather(&serde_json::to_vec(&timings)?, timeout)? {
            let per_rank = all
                .iter()
                .enumerate()
                .map(|(r, b)| serde_json::from_slice(b).with_context(|| format!("rank {r} sent unreadable timings")))
                .collect::<anyhow::Result<Vec<Vec<RankTiming>>>>()?;
            let rows = slowest_rank_rows(op, mode, &per_rank)?;
            on_series(&Series { gpu: gpu.name.clone(), world, rows })?;
        }
    }
    // No rank tears its communicators down while another still waits in a collective.
    rendezvous.barrier(timeout)?;
    Ok(())
}
