//! One shape's result: its timings, what they mean against the H200's ceilings, and how
//! they were obtained (measured on every rank, projected from one rank, or analytic).

use serde::Serialize;

use super::Stats;
use crate::dist::projection::{CommTime, Method, RankChoice};
use crate::plan::cost::{ExpertLoad, PhaseCost};
use crate::plan::{Phase, Plan};
use crate::quant::Quant;

/// Denominators of MFU and MBU: dense bf16 peak and the measured copy bandwidth (anchors.md).
/// FP8 rows divide by the dense FP8 peak instead (`Quant::peak_tflops`, the CSV's
/// `peak_tflops` column).
pub const PEAK_TFLOPS: f64 = 989.0;
pub const COPY_GBS: f64 = 4277.0;

/// A projected or analytic latency's parts: compute (measured or roofline) plus modelled
/// communication.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Split {
    pub compute_ms: f64,
    pub comm_ms: f64,
    /// The comm model's sources, `; `-joined.
    pub comm_source: String,
}

impl Split {
    pub fn comm_share(&self) -> f64 {
        let total = self.compute_ms + self.comm_ms;
        if total > 0.0 {
            self.comm_ms / total
        } else {
            0.0
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub phase: Phase,
    /// The global batch (all DP ranks together) and one rank's share of it.
    pub bsz: usize,
    pub bsz_per_rank: usize,
    pub seq: usize,
    pub tokens: usize,
    pub world: usize,
    pub stats: Stats,
    pub tflops: f64,
    pub mfu: f64,
    pub gbs: f64,
    pub mbu: f64,
    pub bound: &'static str,
    /// What ran: decode replayed from a CUDA graph (or, analytic, modelled as one).
    pub graph: bool,
    pub method: Method,
    /// Projected and analytic rows.
    pub split: Option<Split>,
    pub run_rank: Option<RankChoice>,
    /// Measured rows: the fastest and slowest rank's median (the row is the slowest).
    pub rank_spread: Option<(f64, f64)>,
    /// Anything a reader of this row must know (e.g. an analytic shard that would not fit).
    pub note: String,
    /// Measured rows: the memory plan's MiB beside the device's (`bench::memory`).
    pub memory_mib: Option<(f64, f64)>,
    /// The timing method of a timed row (`bench::timing::TimingMethod::name`); empty for
    /// an analytic estimate.
    pub timing: &'static str,
    /// The plan's weight format; sets the MFU denominator.
    pub quant: Quant,
    /// `--routing`: model, balanced or uniform.
    pub routing: &'static str,
    /// Measured MoE rows: experts with at least one token (mean over MoE layers, all
    /// experts of the model) and the most tokens one expert received.
    pub experts_touched: Option<f64>,
    pub max_expert_tokens: Option<u32>,
}

impl Row {
    /// A measured row: `stats` is the slowest rank's.
    pub fn new(plan: &Plan, cost: &PhaseCost, stats: Stats, graph: bool) -> Self {
        let secs = stats.median_ms / 1e3;
        let tflops = cost.flops / secs / 1e12;
        let gbs = cost.mbu_bytes() / secs / 1e9;
        // `cost` is this rank's plan: its FLOPs and bytes over one GPU's ceilings (every
        // rank of a deployment does the same share, so this is also the deployment's MFU).
        // The bound that applies: which roofline term is larger at the measured ceilings.
        let quant = Quant::of_plan(plan);
        let peak = quant.peak_tflops();
        let compute_s = cost.flops / (peak * 1e12);
        let memory_s = cost.mbu_bytes() / (COPY_GBS * 1e9);
        Row {
            phase: plan.shape.phase,
            bsz: plan.shape.batch,
            bsz_per_rank: plan.local_batch,
            seq: plan.shape.seq,
            tokens: plan.shape.tokens(),
            world: plan.layout.world,
            stats,
            tflops,
            mfu: tflops / peak,
            gbs,
            mbu: gbs / COPY_GBS,
            bound: if compute_s >= memory_s { "compute" } else { "memory" },
            graph,
            method: Method::Measured,
            split: None,
            run_rank: None,
            rank_spread: None,
            note: String::new(),
            memory_mib: None,
            timing: "",
            quant,
            routing: plan.routing().name(),
            experts_touched: None,
            max_expert_tokens: None,
        }
    }

    /// Records the routing that ran (the row's cost must already count it).
    pub fn set_expert_load(&mut self, load: Option<&ExpertLoad>) {
        self.experts_touched = load.map(ExpertLoad::experts_touched);
        self.max_expert_tokens = load.map(ExpertLoad::max_expert_tokens);
    }

    /// A row from one rank's compute (`compute`: measured timings, or an analytic
    /// estimate) plus the modelled communication `comm`; every timing carries `comm`.
    pub fn modelled(
        plan: &Plan,
        cost: &PhaseCost,
        method: Method,
        compute: Stats,
        comm: &CommTime,
        graph: bool,
    ) -> Self {
        let add = |ms: f64| ms + comm.ms;
        let stats = Stats {
            median_ms: add(compute.median_ms),
            p10_ms: add(compute.p10_ms),
            p90_ms: add(compute.p90_ms),
            min_ms: add(compute.min_ms),
            iters: compute.iters,
        };
        let mut row = Row::new(plan, cost, stats, graph);
        row.method = method;
        row.split =
            Some(Split { compute_ms: compute.median_ms, comm_ms: comm.ms, comm_source: comm.sources.join("; ") });
        row
    }
}
