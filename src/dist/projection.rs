//! Projection of a deployment wider than the machine: one rank's exact shard is measured
//! on the local GPU (or, without a GPU, estimated from the cost model's roofline), and
//! each collective of the plan is replaced by its modelled time (`comm_model`). Every
//! figure says which method produced it.

use serde::Serialize;
use thiserror::Error;

use super::comm_model::{estimate_collective, CommModel, Mode};
use crate::plan::cost::op_cost;
use crate::plan::{Op, Plan};

/// How a row's latency was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Every rank ran, collectives included.
    Measured,
    /// One rank's shard ran on the GPU; collectives are modelled.
    Projected,
    /// No GPU: roofline per op with efficiency factors; collectives modelled.
    Analytic,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Measured => "measured",
            Method::Projected => "projected",
            Method::Analytic => "analytic",
        }
    }
}

/// Which rank of a wider deployment a projection runs, and why that one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RankChoice {
    pub rank: usize,
    pub why: String,
}

#[derive(Debug, Error, PartialEq)]
pub enum ProjectionError {
    #[error("--project-rank {rank} is not a rank of this {world}-rank deployment; ranks run from 0 to {last}")]
    NoSuchRank { rank: usize, world: usize, last: usize },
}

/// The rank to project: `requested` (`--project-rank`), else rank 0. Under expert
/// parallelism the most loaded rank would be the honest choice, but fwdbench's routing
/// depends on the token values (a learned router over random weights), so no plan can say
/// which rank's experts receive the most tokens; the reason says so rather than implying
/// rank 0 is the worst. Without EP every rank's shard has the same shapes.
pub fn choose_rank(
    world: usize,
    expert_parallel: bool,
    requested: Option<usize>,
) -> Result<RankChoice, ProjectionError> {
    if let Some(rank) = requested {
        if rank >= world {
            return Err(ProjectionError::NoSuchRank { rank, world, last: world.saturating_sub(1) });
        }
        return Ok(RankChoice { rank, why: "--project-rank".into() });
    }
    let why = if expert_parallel {
        "rank 0: routing depends on the tokens, so the plan cannot tell which EP rank is most loaded; --project-rank picks another"
    } else {
        "rank 0: every rank's shard has the same shapes"
    };
    Ok(RankChoice { rank: 0, why: why.into() })
}

/// The modelled communication of one forward on this rank.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CommTime {
    pub ms: f64,
    pub collectives: usize,
    /// Bytes this rank puts on its links, summed over the forward.
    pub link_bytes: f64,
    /// The tables or formulas the predictions came from, de-duplicated.
    pub sources: Vec<String>,
}

/// Sums the modelled time of every collective of `plan` (run back to back, as the plan
/// orders them; nothing overlaps compute in fwdbench's forwards).
pub fn plan_comm_time(plan: &Plan, model: &CommModel, mode: Mode) -> CommTime {
    let mut out = CommTime::default();
    for planned in &plan.ops {
        let Op::Collective { group, .. } = &planned.op else { continue };
        let members = plan.layout.group_ranks(*group);
        if members.len() <= 1 {
            continue;
        }
        let Some(e) = estimate_collective(&planned.op, &members, &plan.tensors, model, mode) else { continue };
        out.ms += e.prediction.us / 1e3;
        out.collectives += 1;
        out.link_bytes += e.link_bytes_per_rank;
        if !out.sources.contains(&e.prediction.source) {
            out.sources.push(e.prediction.source);
        }
    }
    out
}

/// Fractions of the H200's peaks that fwdbench's kernels reach, per op family, for the
/// analytic method. Defaults are this project's own H200 measurements (docs/perf.md,
/// anchors.md: cuBLASLt GEMMs ~80% of 989 TFLOP/s, mma.sync prefill attention ~13%, the
/// grouped MoE GEMM ~25%, memory-bound kernels ~85% of the 4277 GB/s copy bandwidth);
/// measured runs replace them as the kernels change.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Efficiency {
    pub peak_tflops: f64,
    pub copy_gbs: f64,
    pub linear: f64,
    pub attention: f64,
    pub moe: f64,
    pub memory: f64,
    /// Fixed cost of each op's launches, eager and from a graph (measured: 4.4 / 1.04 us).
    pub launch_us_eager: f64,
    pub launch_us_graph: f64,
}

impl Efficiency {
    pub const H200_V1: Efficiency = Efficiency {
        peak_tflops: 989.0,
        copy_gbs: 4277.0,
        linear: 0.80,
        attention: 0.13,
        moe: 0.25,
        memory: 0.85,
        launch_us_eager: 4.4,
        launch_us_graph: 1.04,
    };

    fn compute_fraction(&self, op: &Op) -> f64 {
        match op.family() {
            "linear" | "route" => self.linear,
            "attention" | "mla" => self.attention,
            "moe" => self.moe,
            _ => self.linear,
        }
    }
}

/// Roofline estimate of one rank's forward without collectives, in ms: each op takes the
/// longer of its FLOPs at the family's compute efficiency and its bytes at the memory
/// efficiency, plus a launch cost.
pub fn analytic_compute_ms(plan: &Plan, num_experts: usize, eff: &Efficiency, mode: Mode) -> f64 {
    let launch_us = match mode {
        Mode::Eager => eff.launch_us_eager,
        Mode::Graph => eff.launch_us_graph,
    };
    let mut us = 0.0;
    for planned in &plan.ops {
        if matches!(planned.op, Op::Collective { .. }) {
            continue;
        }
        let c = op_cost(plan, &planned.op, num_experts);
        let compute = c.flops / (eff.peak_tflops * 1e12 * eff.compute_fraction(&planned.op));
        let memory = c.bytes() / (eff.copy_gbs * 1e9 * eff.memory);
        us += compute.max(memory) * 1e6 + launch_us;
    }
    us / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::hf::load_model_config;
    use crate::dist::rank_layouts;
    use crate::model::{build_plan, PlanOptions};
    use crate::plan::Shape;

    fn plans(model: &str, tp: usize, ep: usize, dp: usize, shape: Shape) -> (Plan, usize) {
        let cfg =
            load_model_config(std::path::Path::new(&format!("model_conf/{model}/config_full.json")), &[]).unwrap();
        let layout = rank_layouts(tp, ep, dp).unwrap()[0];
        let experts = cfg.moe.as_ref().map(|m| m.num_experts).unwrap_or(0);
        (build_plan(&cfg, layout, shape, PlanOptions::default()).unwrap(), experts)
    }

    #[test]
    fn sharded_plans_have_communication_and_tp1_has_none() {
        let model = CommModel::builtin();
        let (tp1, _) = plans("qwen", 1, 1, 1, Shape::decode(8, 1024));
        assert_eq!(plan_comm_time(&tp1, &model, Mode::Graph), CommTime::default());
        for (tp, ep, dp) in [(8, 1, 1), (8, 8, 1), (8, 8, 8)] {
            let (p, experts) = plans("qwen", tp, ep, dp, Shape::decode(8, 1024));
            let comm = plan_comm_time(&p, &model, Mode::Graph);
            assert!(comm.ms > 0.0 && comm.collectives >= 2 * 94, "tp{tp} ep{ep} dp{dp}: {comm:?}");
            assert!(!comm.sources.is_empty());
            let compute = analytic_compute_ms(&p, experts, &Efficiency::H200_V1, Mode::Graph);
            assert!(compute > 0.0 && compute.is_finite());
        }
    }

    #[test]
    fn the_projected_rank_is_asked_for_or_rank_0_with_its_reason() {
        assert_eq!(choose_rank(8, true, Some(5)).unwrap(), RankChoice { rank: 5, why: "--project-rank".into() });
        let ep = choose_rank(8, true, None).unwrap();
        assert!(ep.rank == 0 && ep.why.contains("most loaded"), "{ep:?}");
        assert!(choose_rank(8, false, None).unwrap().why.contains("same shapes"));
        let e = choose_rank(8, false, Some(8)).unwrap_err().to_string();
        assert!(e.starts_with("--project-rank 8 is not a rank"), "{e}");
    }

    #[test]
    fn analytic_time_grows_with_work() {
        let (small, e) = plans("sigma", 8, 8, 1, Shape::prefill(1, 512));
        let (large, _) = plans("sigma", 8, 8, 1, Shape::prefill(8, 2048));
        let eff = Efficiency::H200_V1;
        assert!(
            analytic_compute_ms(&large, e, &eff, Mode::Eager) > 4.0 * analytic_compute_ms(&small, e, &eff, Mode::Eager)
        );
    }
}
