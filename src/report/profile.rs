//! Per-op profiles, results/<model>_profile/<mconf>_<phase>_b<b>_s<s>.csv: one row per plan
//! op with the time the caller measured and the op's FLOPs and bytes from the cost model.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};

use crate::config::model::ModelConfig;
use crate::plan::cost::plan_cost;
use crate::plan::Plan;

/// Writes `op_ms[i]`, the time of `plan.ops[i]`; returns the file written.
pub fn write_profile(
    results_dir: &Path,
    model: &str,
    mconf: &str,
    plan: &Plan,
    cfg: &ModelConfig,
    op_ms: &[f64],
) -> anyhow::Result<PathBuf> {
    ensure!(op_ms.len() == plan.ops.len(), "{} op times for a plan of {} ops", op_ms.len(), plan.ops.len());
    let dir = results_dir.join(format!("{model}_profile"));
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let s = plan.shape;
    let path = dir.join(format!("{mconf}_{}_b{}_s{}.csv", s.phase.name(), s.batch, s.seq));
    let mut w = csv::Writer::from_path(&path).with_context(|| format!("cannot write {}", path.display()))?;
    w.write_record(["index", "layer", "name", "kind", "ms", "gflop", "mb"])?;
    let (costs, _) = plan_cost(plan, cfg);
    for (i, ((p, c), ms)) in plan.ops.iter().zip(&costs).zip(op_ms).enumerate() {
        w.write_record([
            i.to_string(),
            p.site.layer.map(|l| l.to_string()).unwrap_or_default(),
            p.site.name.clone(),
            p.op.kind_name().to_string(),
            format!("{ms:.4}"),
            format!("{:.3}", c.flops / 1e9),
            format!("{:.3}", c.bytes() / 1e6),
        ])?;
    }
    w.flush()?;
    Ok(path)
}
