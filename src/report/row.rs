//! One measured shape: its timings and what they mean against the H200's ceilings.

use serde::Serialize;

use super::Stats;
use crate::plan::cost::PhaseCost;
use crate::plan::{Phase, Plan};

/// Denominators of MFU and MBU: dense bf16 peak and the measured copy bandwidth (anchors.md).
pub const PEAK_TFLOPS: f64 = 989.0;
pub const COPY_GBS: f64 = 4277.0;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub phase: Phase,
    pub bsz: usize,
    pub seq: usize,
    pub tokens: usize,
    pub stats: Stats,
    pub tflops: f64,
    pub mfu: f64,
    pub gbs: f64,
    pub mbu: f64,
    pub bound: &'static str,
    pub graph: bool,
}

impl Row {
    pub fn new(plan: &Plan, cost: &PhaseCost, stats: Stats, graph: bool) -> Self {
        let secs = stats.median_ms / 1e3;
        let tflops = cost.flops / secs / 1e12;
        let gbs = cost.mbu_bytes() / secs / 1e9;
        let gpus = plan.layout.world as f64;
        // The bound that applies: which roofline term is larger at the measured ceilings.
        let compute_s = cost.flops / (PEAK_TFLOPS * 1e12);
        let memory_s = cost.mbu_bytes() / (COPY_GBS * 1e9);
        Row {
            phase: plan.shape.phase,
            bsz: plan.shape.batch,
            seq: plan.shape.seq,
            tokens: plan.shape.tokens(),
            stats,
            tflops,
            mfu: tflops / (PEAK_TFLOPS * gpus),
            gbs,
            mbu: gbs / (COPY_GBS * gpus),
            bound: if compute_s >= memory_s { "compute" } else { "memory" },
            graph,
        }
    }
}
