//! Per-op profiles of one shape, in results/<model>_profile/: `<mconf>_<phase>_b<b>_s<s>.csv`
//! with one row per plan op (the time the caller measured, the op's FLOPs and bytes from the
//! cost model, what they achieve and which roofline bounds the op), and beside it the same
//! ops plus the timed forwards as a Chrome trace (`.trace.json`, see `trace`).
//!
//! An op's bound compares its two roofline terms at the ceilings MFU and MBU use (989
//! TFLOP/s, the measured 4277 GB/s copy bandwidth). Unlike a row's MBU, which counts
//! weights and KV cache only, an op's bytes include its activations: a norm or an
//! activation function moves nothing else.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};
use serde::Serialize;

use super::trace::{write_trace, Forwards};
use super::{COPY_GBS, PEAK_TFLOPS};
use crate::config::model::ModelConfig;
use crate::plan::cost::{plan_cost, OpCost};
use crate::plan::Plan;

/// The CSV's columns.
pub const PROFILE_COLUMNS: [&str; 11] =
    ["index", "layer", "name", "kind", "ms", "gflop", "mb", "tflops", "gbs", "bound", "roof_pct"];

/// One op's measured time against its cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpRow {
    pub index: usize,
    pub layer: Option<usize>,
    pub name: String,
    pub kind: &'static str,
    /// The stream the op ran on. The CUDA engine enqueues every op on its one stream
    /// (exec/cuda/gpu.rs); the trace draws one track per stream all the same.
    pub stream: usize,
    pub ms: f64,
    pub flops: f64,
    pub bytes: f64,
    pub tflops: f64,
    pub gbs: f64,
    /// `compute` or `memory`: the larger roofline term.
    pub bound: &'static str,
    /// Achieved share of the bounding ceiling, in percent.
    pub roof_pct: f64,
}

impl OpRow {
    fn new(index: usize, plan: &Plan, cost: &OpCost, ms: f64) -> Self {
        let planned = &plan.ops[index];
        let secs = ms / 1e3;
        let per_sec = |v: f64| if secs > 0.0 { v / secs } else { 0.0 };
        let (tflops, gbs) = (per_sec(cost.flops) / 1e12, per_sec(cost.bytes()) / 1e9);
        let compute_bound = cost.flops / (PEAK_TFLOPS * 1e12) >= cost.bytes() / (COPY_GBS * 1e9);
        let (bound, roof_pct) =
            if compute_bound { ("compute", 100.0 * tflops / PEAK_TFLOPS) } else { ("memory", 100.0 * gbs / COPY_GBS) };
        OpRow {
            index,
            layer: planned.site.layer,
            name: planned.site.name.clone(),
            kind: planned.op.kind_name(),
            stream: 0,
            ms,
            flops: cost.flops,
            bytes: cost.bytes(),
            tflops,
            gbs,
            bound,
            roof_pct,
        }
    }
}

/// `op_ms[i]` is the time of `plan.ops[i]`.
pub fn op_rows(plan: &Plan, cfg: &ModelConfig, op_ms: &[f64]) -> anyhow::Result<Vec<OpRow>> {
    ensure!(op_ms.len() == plan.ops.len(), "{} op times for a plan of {} ops", op_ms.len(), plan.ops.len());
    let (costs, _) = plan_cost(plan, cfg);
    Ok(costs.iter().zip(op_ms).enumerate().map(|(i, (c, &ms))| OpRow::new(i, plan, c, ms)).collect())
}

/// What a profile is of: names for the file and the trace's title.
#[derive(Debug, Clone)]
pub struct ProfileTarget<'a> {
    pub results_dir: &'a Path,
    pub model: &'a str,
    pub mconf: &'a str,
}

/// The files one profile wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileFiles {
    pub csv: PathBuf,
    pub trace: PathBuf,
}

/// Writes the CSV and the trace of `plan`'s ops (`op_ms`, one eager forward) and its timed
/// `forwards`.
pub fn write_profile(
    target: &ProfileTarget,
    plan: &Plan,
    cfg: &ModelConfig,
    op_ms: &[f64],
    forwards: &Forwards,
) -> anyhow::Result<ProfileFiles> {
    let rows = op_rows(plan, cfg, op_ms)?;
    let dir = target.results_dir.join(format!("{}_profile", target.model));
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let s = plan.shape;
    let stem = format!("{}_{}_b{}_s{}", target.mconf, s.phase.name(), s.batch, s.seq);
    let csv = dir.join(format!("{stem}.csv"));
    write_csv(&csv, &rows)?;
    let title = format!("fwdbench {} {} {} bsz {} seq {}", target.model, target.mconf, s.phase.name(), s.batch, s.seq);
    let trace = dir.join(format!("{stem}.trace.json"));
    write_trace(&trace, &title, &rows, forwards)?;
    Ok(ProfileFiles { csv, trace })
}

fn write_csv(path: &Path, rows: &[OpRow]) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
    w.write_record(PROFILE_COLUMNS)?;
    for r in rows {
        w.write_record([
            r.index.to_string(),
            r.layer.map(|l| l.to_string()).unwrap_or_default(),
            r.name.clone(),
            r.kind.to_string(),
            format!("{:.4}", r.ms),
            format!("{:.3}", r.flops / 1e9),
            format!("{:.3}", r.bytes / 1e6),
            format!("{:.2}", r.tflops),
            format!("{:.1}", r.gbs),
            r.bound.to_string(),
            format!("{:.1}", r.roof_pct),
        ])?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::cost::OpCost;

    #[test]
    fn an_ops_bound_is_its_larger_roofline_term() {
        let cfg = crate::config::hf::load_model_config(Path::new("tests/fixtures/qwen3/config.json"), &[]).unwrap();
        let plan = crate::model::build_plan(
            &cfg,
            crate::plan::RankLayout::single(),
            crate::plan::Shape::prefill(1, 8),
            Default::default(),
        )
        .unwrap();
        // 989 GFLOP and 1 MB in 1 ms: compute bound, at the peak exactly.
        let heavy = OpCost { flops: 989e9, act_bytes: 1e6, ..Default::default() };
        let r = OpRow::new(0, &plan, &heavy, 1.0);
        assert_eq!((r.bound, r.tflops), ("compute", 989.0));
        assert!((r.roof_pct - 100.0).abs() < 1e-9);
        // 1 GFLOP and 4.277 GB in 2 ms: memory bound at half the copy bandwidth.
        let light = OpCost { flops: 1e9, weight_bytes: 4.277e9, ..Default::default() };
        let r = OpRow::new(0, &plan, &light, 2.0);
        assert_eq!(r.bound, "memory");
        assert!((r.gbs - 2138.5).abs() < 1e-6 && (r.roof_pct - 50.0).abs() < 1e-9, "{r:?}");
        // An op timed at zero (below event resolution) achieves nothing rather than infinity.
        assert_eq!(OpRow::new(0, &plan, &light, 0.0).gbs, 0.0);
        assert!(op_rows(&plan, &cfg, &[1.0]).is_err());
    }
}
