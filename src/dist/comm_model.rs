//! How long a collective takes: the communication model that projection uses in place of
//! the collectives a deployment wider than the machine would run.
//!
//! A table of (collective, ranks, message bytes, graph|eager) -> microseconds, with
//! built-in public 8xH200 figures that a measured table (`fwdbench comm bench`'s CSV)
//! replaces series by series. Between a series' points time is interpolated log-log; beyond
//! its ends it is extrapolated alpha-beta (a straight line through the two end points).
//! Other world sizes reuse the nearest series at the message size that puts the same bytes
//! on each link under the ring algorithm; groups that span nodes add an alpha-beta term for
//! the inter-node link. Message bytes follow nccl-tests: the larger of the send and receive
//! buffers (all-gather: the gathered output; reduce-scatter and all-to-all: the input).
//! Every prediction carries a `source` saying which of these produced it.

use std::collections::BTreeMap;
use std::path::Path;

use thiserror::Error;

use crate::plan::{Collective, Op, TensorInfo, View};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CommOp {
    AllReduce,
    AllGather,
    ReduceScatter,
    AllToAll,
}

impl CommOp {
    pub const ALL: [CommOp; 4] = [CommOp::AllReduce, CommOp::AllGather, CommOp::ReduceScatter, CommOp::AllToAll];

    /// The name in tables and profiles (the plan op's `kind_name` where it has one).
    pub fn name(self) -> &'static str {
        match self {
            CommOp::AllReduce => "all_reduce",
            CommOp::AllGather => "all_gather",
            CommOp::ReduceScatter => "reduce_scatter",
            CommOp::AllToAll => "all_to_all",
        }
    }

    pub fn parse(name: &str) -> Option<CommOp> {
        CommOp::ALL.into_iter().find(|op| op.name() == name)
    }

    pub fn of_plan(kind: Collective) -> CommOp {
        match kind {
            Collective::AllReduce => CommOp::AllReduce,
            Collective::AllGather(_) => CommOp::AllGather,
            Collective::ReduceScatterRows => CommOp::ReduceScatter,
        }
    }

    /// Bytes each rank puts on its link per message byte under the ring algorithm
    /// (nccl-tests' bus-bandwidth factor): 2(n-1)/n for all-reduce, (n-1)/n otherwise.
    pub fn ring_factor(self, ranks: usize) -> f64 {
        let n = ranks.max(1) as f64;
        match self {
            CommOp::AllReduce => 2.0 * (n - 1.0) / n,
            _ => (n - 1.0) / n,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    Eager,
    /// Launched from a captured CUDA graph (decode always is).
    Graph,
}

/// One row of a communication table.
#[derive(Debug, Clone, PartialEq)]
pub struct CommPoint {
    pub op: CommOp,
    pub ranks: usize,
    pub bytes: u64,
    pub mode: Mode,
    pub us_median: f64,
    pub us_p10: f64,
    pub us_p90: f64,
    pub busbw_gbs: f64,
}

/// Rows as `fwdbench comm bench` writes them, and where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct CommTable {
    pub origin: String,
    pub points: Vec<CommPoint>,
}

pub const CSV_HEADER: [&str; 8] = ["op", "ranks", "bytes", "graph", "us_median", "us_p10", "us_p90", "busbw_gbs"];

#[derive(Debug, Error)]
pub enum CommTableError {
    #[error("cannot read the communication table {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write the communication table {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("{path} line {line}: {what}; a communication table has the columns {} (as `fwdbench comm bench` writes it)", CSV_HEADER.join(","))]
    Line { path: String, line: u64, what: String },
}

/// Link constants for what no table covers (aiconfigurator `systems/h200_sxm.yaml`:
/// `intra_node_bw`, `inter_node_bw` per GPU over CX7 NDR, `p2p_latency`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Links {
    pub gpus_per_node: usize,
    pub intra_node_gbs: f64,
    pub inter_node_gbs: f64,
    pub latency_us: f64,
}

impl Links {
    pub const H200: Links = Links { gpus_per_node: 8, intra_node_gbs: 450.0, inter_node_gbs: 50.0, latency_us: 10.0 };

    /// `alpha + bus bytes / beta` over a link of `gbs` GB/s.
    fn alpha_beta_us(&self, op: CommOp, ranks: usize, bytes: f64, gbs: f64) -> f64 {
        self.latency_us + bytes * op.ring_factor(ranks) / (gbs * 1e3)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub us: f64,
    pub source: String,
}

/// One (op, ranks, mode) series: points sorted by bytes, times made non-decreasing.
#[derive(Debug, Clone)]
struct Series {
    points: Vec<(f64, f64)>,
    source: String,
}

impl Series {
    fn new(mut points: Vec<(f64, f64)>, source: String) -> Series {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        // A larger message never takes less time: the published reduce-scatter and
        // all-to-all rows dip (13.3 us at 16 KiB, 11.8 us at 128 KiB), which is noise.
        for i in 1..points.len() {
            points[i].1 = points[i].1.max(points[i - 1].1);
        }
        Series { points, source }
    }

    /// Time for `bytes`, and whether it lies beyond the measured range.
    fn time_us(&self, bytes: f64, links: &Links, op: CommOp, ranks: usize) -> (f64, bool) {
        let p = &self.points;
        let (first, last) = (p[0], p[p.len() - 1]);
        // Slope of the line through two points, in us per byte; one point: the link's.
        let slope = |a: (f64, f64), b: (f64, f64)| {
            if b.0 > a.0 {
                ((b.1 - a.1) / (b.0 - a.0)).max(0.0)
            } else {
                op.ring_factor(ranks) / (links.intra_node_gbs * 1e3)
            }
        };
        if bytes < first.0 {
            let s = slope(first, *p.get(1).unwrap_or(&first));
            return ((first.1 - s * (first.0 - bytes)).max(0.0), true);
        }
        if bytes > last.0 {
            let s = slope(*p.get(p.len().wrapping_sub(2)).unwrap_or(&last), last);
            return (last.1 + s * (bytes - last.0), true);
        }
        let i = p.partition_point(|q| q.0 < bytes);
        let (hi, lo) = (p[i], p[i.saturating_sub(1)]);
        if hi.0 == bytes || lo.0 == hi.0 {
            return (hi.1, false);
        }
        let w = (bytes.ln() - lo.0.ln()) / (hi.0.ln() - lo.0.ln());
        // Clamped so that rounding in exp(ln) cannot step below a point (monotonicity).
        ((lo.1.ln() + w * (hi.1.ln() - lo.1.ln())).exp().clamp(lo.1, hi.1), false)
    }
}

/// Sizes of the public figures below: nccl-tests' powers of two from 1 KiB to 512 MiB.
const PUBLIC_BYTES: [u64; 8] = [1 << 10, 16 << 10, 128 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20, 512 << 20];

/// Median microseconds measured by NVIDIA's AIConfigurator project on one 8-GPU H200 SXM
/// node with NCCL 2.29.2 and nccl-tests (fp16, one process driving all GPUs, no CUDA
/// graph), as stored in ai-dynamo/aiconfigurator
/// `systems/data/h200_sxm/comm/nccl/2.29.2/nccl_perf.parquet` at commit 095f58a and
/// transcribed in design/multi-gpu.md §2.
const PUBLIC_US: [(CommOp, usize, [f64; 8]); 5] = [
    (CommOp::AllReduce, 8, [16.8, 18.3, 21.4, 26.1, 51.4, 121.7, 319.6, 2040.0]),
    (CommOp::AllGather, 8, [10.3, 12.3, 14.6, 17.0, 41.3, 66.9, 206.0, 1395.0]),
    (CommOp::ReduceScatter, 8, [10.2, 13.3, 11.8, 14.4, 30.4, 69.5, 199.0, 1393.0]),
    (CommOp::AllToAll, 8, [7.4, 7.3, 9.8, 16.2, 26.6, 73.4, 219.0, 1510.0]),
    (CommOp::AllReduce, 2, [6.0, 7.3, 7.5, 14.3, 32.4, 76.2, 248.0, 1704.0]),
];
pub const PUBLIC_SOURCE: &str = "public nccl-tests 8xH200 NCCL 2.29.2";

/// Bus bandwidth in GB/s of a collective of `bytes` that took `us` (nccl-tests' busbw).
pub fn busbw_gbs(op: CommOp, ranks: usize, bytes: u64, us: f64) -> f64 {
    bytes as f64 * op.ring_factor(ranks) / (us * 1e3)
}

impl CommTable {
    /// The built-in public figures as a table (eager: nccl-tests ran without graphs).
    pub fn public_h200() -> CommTable {
        let points = PUBLIC_US
            .iter()
            .flat_map(|&(op, ranks, us)| {
                PUBLIC_BYTES.iter().zip(us).map(move |(&bytes, us)| CommPoint {
                    op,
                    ranks,
                    bytes,
                    mode: Mode::Eager,
                    us_median: us,
                    us_p10: us,
                    us_p90: us,
                    busbw_gbs: busbw_gbs(op, ranks, bytes, us),
                })
            })
            .collect();
        CommTable { origin: PUBLIC_SOURCE.into(), points }
    }

    pub fn load(path: &Path) -> Result<CommTable, CommTableError> {
        let name = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| CommTableError::Read { path: name.clone(), source })?;
        CommTable::parse(&text, &name)
    }

    /// Parses CSV text; `origin` names it in errors and in prediction sources.
    pub fn parse(text: &str, origin: &str) -> Result<CommTable, CommTableError> {
        let err = |line: u64, what: String| CommTableError::Line { path: origin.into(), line, what };
        let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
        let header = reader.headers().map_err(|e| err(1, format!("unreadable header ({e})")))?.clone();
        if header.iter().ne(CSV_HEADER) {
            return Err(err(1, format!("the header is `{}`", header.iter().collect::<Vec<_>>().join(","))));
        }
        let mut points: Vec<CommPoint> = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| err(e.position().map_or(0, |p| p.line()), e.to_string()))?;
            let line = record.position().map_or(0, |p| p.line());
            let point = parse_point(&record).map_err(|what| err(line, what))?;
            let same =
                |q: &&CommPoint| (q.op, q.ranks, q.bytes, q.mode) == (point.op, point.ranks, point.bytes, point.mode);
            if points.iter().any(|q| same(&q)) {
                return Err(err(
                    line,
                    format!("a second row for {} over {} ranks at {} bytes", point.op.name(), point.ranks, point.bytes),
                ));
            }
            points.push(point);
        }
        Ok(CommTable { origin: origin.into(), points })
    }

    pub fn to_csv(&self) -> String {
        let mut out = CSV_HEADER.join(",") + "\n";
        for p in &self.points {
            out += &format!(
                "{},{},{},{},{:.3},{:.3},{:.3},{:.3}\n",
                p.op.name(),
                p.ranks,
                p.bytes,
                p.mode == Mode::Graph,
                p.us_median,
                p.us_p10,
                p.us_p90,
                p.busbw_gbs
            );
        }
        out
    }

    pub fn save(&self, path: &Path) -> Result<(), CommTableError> {
        std::fs::write(path, self.to_csv())
            .map_err(|source| CommTableError::Write { path: path.display().to_string(), source })
    }
}

fn parse_point(r: &csv::StringRecord) -> Result<CommPoint, String> {
    if r.len() != CSV_HEADER.len() {
        return Err(format!("{} fields where the header has {}", r.len(), CSV_HEADER.len()));
    }
    let op = CommOp::parse(&r[0]).ok_or_else(|| {
        let names: Vec<&str> = CommOp::ALL.iter().map(|o| o.name()).collect();
        format!("unknown collective `{}` (known: {})", &r[0], names.join(", "))
    })?;
    let int = |i: usize| {
        r[i].parse::<u64>()
            .ok()
            .filter(|&v| v > 0)
            .ok_or(format!("{} `{}` is not a positive integer", CSV_HEADER[i], &r[i]))
    };
    let time = |i: usize| {
        r[i].parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v > 0.0)
            .ok_or(format!("{} `{}` is not a positive number", CSV_HEADER[i], &r[i]))
    };
    let mode = match &r[3] {
        "true" | "1" | "graph" => Mode::Graph,
        "false" | "0" | "eager" => Mode::Eager,
        other => return Err(format!("graph `{other}` is not true or false")),
    };
    let (us_median, us_p10, us_p90) = (time(4)?, time(5)?, time(6)?);
    if !(us_p10 <= us_median && us_median <= us_p90) {
        return Err(format!("us_p10 {us_p10} <= us_median {us_median} <= us_p90 {us_p90} does not hold"));
    }
    let busbw_gbs = r[7]
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or(format!("busbw_gbs `{}` is not a number", &r[7]))?;
    Ok(CommPoint { op, ranks: int(1)? as usize, bytes: int(2)?, mode, us_median, us_p10, us_p90, busbw_gbs })
}

/// The model: series by (op, ranks, mode), and the link constants for the rest.
#[derive(Debug, Clone)]
pub struct CommModel {
    series: BTreeMap<(CommOp, usize, Mode), Series>,
    pub links: Links,
}

impl CommModel {
    /// The public H200 figures and H200 link constants.
    pub fn builtin() -> CommModel {
        CommModel { series: BTreeMap::new(), links: Links::H200 }.with_table(&CommTable::public_h200(), PUBLIC_SOURCE)
    }

    /// Replaces every series the measured `table` has (the others stay).
    pub fn with_measured(self, table: &CommTable) -> CommModel {
        let source = format!("measured {}", table.origin);
        self.with_table(table, &source)
    }

    fn with_table(mut self, table: &CommTable, source: &str) -> CommModel {
        let mut grouped: BTreeMap<(CommOp, usize, Mode), Vec<(f64, f64)>> = BTreeMap::new();
        // One rank sends nothing (`predict` gives it 0), and its ring factor of 0 would
        // scale every other world size's message to infinity: such rows are not a series.
        for p in table.points.iter().filter(|p| p.ranks > 1) {
            grouped.entry((p.op, p.ranks, p.mode)).or_default().push((p.bytes as f64, p.us_median));
        }
        for (key, points) in grouped {
            self.series.insert(key, Series::new(points, source.into()));
        }
        self
    }

    /// Time of `op` over `ranks` ranks on a message of `bytes` (nccl-tests' size), in
    /// `mode`, where `spans_nodes` says whether the group leaves one node.
    pub fn predict(&self, op: CommOp, ranks: usize, bytes: u64, mode: Mode, spans_nodes: bool) -> Prediction {
        if ranks <= 1 {
            return Prediction { us: 0.0, source: "no communication (one rank)".into() };
        }
        let local = if spans_nodes { self.links.gpus_per_node.min(ranks) } else { ranks };
        let mut p = self.predict_node(op, local, bytes as f64, mode);
        if spans_nodes {
            let l = &self.links;
            p.us += l.alpha_beta_us(op, ranks, bytes as f64, l.inter_node_gbs);
            p.source = format!(
                "alpha-beta inter-node ({} us, {} GB/s per GPU) over {} ranks + {}",
                l.latency_us, l.inter_node_gbs, ranks, p.source
            );
        }
        p
    }

    fn predict_node(&self, op: CommOp, ranks: usize, bytes: f64, mode: Mode) -> Prediction {
        let other = if mode == Mode::Graph { Mode::Eager } else { Mode::Graph };
        // The world size with figures closest by ratio (4 is as far from 2 as from 8), this
        // mode first; ties go to more ranks, whose latency floor is the safer guess.
        let ratio = |n: usize| n.max(ranks) as f64 / n.min(ranks) as f64;
        let best = [mode, other].into_iter().find_map(|m| {
            let candidates = self.series.iter().filter(|((o, _, sm), _)| *o == op && *sm == m);
            candidates.min_by(|((_, a, _), _), ((_, b, _), _)| ratio(*a).total_cmp(&ratio(*b)).then(b.cmp(a)))
        });
        let Some(((_, table_ranks, table_mode), series)) = best else {
            let l = &self.links;
            let us = l.alpha_beta_us(op, ranks, bytes, l.intra_node_gbs);
            return Prediction { us, source: format!("alpha-beta ({} us, {} GB/s)", l.latency_us, l.intra_node_gbs) };
        };
        // Same bytes per link: the message at `table_ranks` that moves what ours moves.
        let scaled = bytes * op.ring_factor(ranks) / op.ring_factor(*table_ranks);
        let (us, beyond) = series.time_us(scaled, &self.links, op, *table_ranks);
        let mut source = series.source.clone();
        if *table_ranks != ranks {
            source += &format!(", scaled from {table_ranks} to {ranks} ranks by ring factors");
        }
        if *table_mode != mode {
            source += if *table_mode == Mode::Eager { ", eager figures" } else { ", graph figures" };
        }
        if beyond {
            source += ", alpha-beta beyond its sizes";
        }
        Prediction { us, source }
    }
}

/// A plan collective's traffic and modelled time.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectiveEstimate {
    pub op: CommOp,
    pub ranks: usize,
    /// nccl-tests' message size: the larger of the send and receive buffers.
    pub message_bytes: u64,
    /// Bytes each rank sends over its links under the ring algorithm.
    pub link_bytes_per_rank: f64,
    pub prediction: Prediction,
}

fn view_bytes(tensors: &[TensorInfo], v: &View) -> u64 {
    let t = &tensors[v.id.0];
    (t.rows * v.cols * t.dtype.bytes()) as u64
}

/// The traffic and time of `op` if it is a collective (`None` otherwise), over `group`
/// (global ranks, as `RankLayout::group_ranks` gives them), with the plan's `tensors`.
pub fn estimate_collective(
    op: &Op,
    group: &[usize],
    tensors: &[TensorInfo],
    model: &CommModel,
    mode: Mode,
) -> Option<CollectiveEstimate> {
    let Op::Collective { kind, x, out, .. } = op else { return None };
    let comm_op = CommOp::of_plan(*kind);
    let message_bytes = view_bytes(tensors, x).max(view_bytes(tensors, out));
    let node = |r: &usize| r / model.links.gpus_per_node;
    let spans_nodes = group.first().is_some_and(|first| group.iter().any(|r| node(r) != node(first)));
    let ranks = group.len();
    Some(CollectiveEstimate {
        op: comm_op,
        ranks,
        message_bytes,
        link_bytes_per_rank: message_bytes as f64 * comm_op.ring_factor(ranks),
        prediction: model.predict(comm_op, ranks, message_bytes, mode, spans_nodes),
    })
}
