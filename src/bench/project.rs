//! Projection of a deployment wider than the machine: one rank's exact shard (its per-rank
//! shapes and weights) runs on GPU 0 with its collectives replaced by local stand-ins
//! (`CollectiveBackend::Modelled`), and each row adds the modelled time of the collectives
//! the real deployment would run (`dist::projection::plan_comm_time`: graph figures for a
//! graphed decode, eager otherwise). `analytic` needs no GPU: the cost model's roofline
//! stands in for the measured compute. Every row says which method produced it.

use crate::config::model::ModelConfig;
use crate::config::run_conf::Deployment;
use crate::dist::comm_model::{CommModel, Mode};
use crate::dist::projection::{analytic_compute_ms, plan_comm_time, Efficiency, Method, RankChoice};
use crate::exec::cuda::executor::CudaExecutor;
use crate::exec::cuda::kernels::collective::CollectiveBackend;
use crate::exec::cuda::memory::DeviceBuffer;
use crate::exec::cuda::weights::Values;
use crate::model::{build_plan, PlanOptions};
use crate::plan::cost::PhaseCost;
use crate::plan::memory::{fits, plan_memory, Target, H200_BYTES};
use crate::plan::{Phase, Plan, RankLayout, Shape};
use crate::report::{Row, Stats};

use super::progress::Progress;
use super::timing::TimingPlan;
use super::{bind_shape, graph_off_reason, grid, input_ids, meta, report_profile, time_shape, BenchOptions, ShapeRun};

/// How to project: which rank, with which communication model, measured or analytic.
pub struct Projection {
    pub choice: RankChoice,
    pub comm: CommModel,
    /// Where `comm`'s figures come from, for the run's header line.
    pub comm_label: String,
    pub analytic: bool,
}

fn mode(graph: bool) -> Mode {
    if graph {
        Mode::Graph
    } else {
        Mode::Eager
    }
}

fn experts(cfg: &ModelConfig) -> usize {
    cfg.moe.as_ref().map_or(0, |m| m.num_experts)
}

/// The analytic row of `shape`: no memory is needed, but a shard that would not fit one
/// H200 says so in the row's note.
pub fn analytic_row(
    cfg: &ModelConfig,
    layout: RankLayout,
    shape: Shape,
    graph_off: impl Fn(usize) -> Option<String>,
    comm: &CommModel,
    routing: crate::plan::RoutingMode,
) -> anyhow::Result<Row> {
    let mut plan = build_plan(cfg, layout, shape, PlanOptions::default())?;
    // Labels the row only: nothing runs, so MoE bytes keep the uniform estimate.
    plan.set_routing(routing, 0);
    let off = if shape.phase == Phase::Decode { graph_off(plan.local_batch) } else { None };
    let graph = shape.phase == Phase::Decode && off.is_none();
    let compute = analytic_compute_ms(&plan, experts(cfg), &Efficiency::H200_V1, mode(graph));
    let comm_time = plan_comm_time(&plan, comm, mode(graph));
    let mut row =
        Row::modelled(&plan, &PhaseCost::of(&plan, cfg), Method::Analytic, Stats::estimate(compute), &comm_time, graph);
    let mut notes: Vec<String> = off.into_iter().collect();
    notes.extend(fit_note(&plan));
    row.note = notes.join("; ");
    Ok(row)
}

fn fit_note(plan: &Plan) -> Option<String> {
    let need = plan_memory(plan, Target::H200);
    fits(&need.footprint(), 0, H200_BYTES).err().map(|e| format!("would not fit one H200 ({e})"))
}

/// Runs the projection over `shapes` and reports it (this process is the only one).
pub fn project_grid(
    opts: &BenchOptions,
    cfg: &ModelConfig,
    dep: &Deployment,
    layouts: &[RankLayout],
    p: &Projection,
    shapes: &[(usize, usize)],
) -> anyhow::Result<()> {
    let layout = layouts[p.choice.rank];
    let world = layouts.len();
    let graph_off = |per_rank| graph_off_reason(opts, dep, per_rank);
    let mut exec = if p.analytic {
        None
    } else {
        let exec = CudaExecutor::new(layout, Values::Random { seed: opts.seed })?;
        exec.gpu().set_collectives(CollectiveBackend::Modelled);
        exec.gpu().set_kernel_choice(super::kernel_choice(dep));
        Some(exec)
    };
    let gpu = match &exec {
        Some(e) => format!("{} (projected)", e.gpu().name),
        None => "none (analytic H200 model)".to_string(),
    };
    let mut reporter = opts.reporter(meta(opts, dep, gpu), !p.analytic)?;
    let method = if p.analytic { Method::Analytic } else { Method::Projected };
    reporter.note(&format!(
        "{}: rank {} of {world} ({}); communication modelled from {}",
        method.name(),
        p.choice.rank,
        p.choice.why,
        p.comm_label
    ))?;
    let flush = if exec.is_some() { Some(super::timing::flush_buffer()?) } else { None };
    let mut progress = Progress::new(shapes.len() * 2, true);
    for shape in grid(shapes) {
        progress.start(&shape);
        let rows = match (&mut exec, &flush) {
            (Some(exec), Some(flush)) => measured_rows(exec, cfg, opts, flush, shape, &graph_off, &p.comm, &progress),
            _ => analytic_row(cfg, layout, shape, graph_off, &p.comm, opts.routing).map(|r| vec![r]),
        };
        match rows {
            Ok(rows) => {
                for mut row in rows {
                    row.run_rank = Some(p.choice.clone());
                    progress.suspend(|| reporter.row(&row))?;
                }
            }
            Err(e) => progress.suspend(|| reporter.skipped(shape, &format!("{e:#}")))?,
        }
    }
    drop(progress);
    reporter.finish()
}

/// One rank's shard timed on the GPU (one row per timing method), plus its modelled
/// collectives.
#[allow(clippy::too_many_arguments)]
fn measured_rows(
    exec: &mut CudaExecutor,
    cfg: &ModelConfig,
    opts: &BenchOptions,
    flush: &DeviceBuffer,
    shape: Shape,
    graph_off: &dyn Fn(usize) -> Option<String>,
    comm: &CommModel,
    progress: &Progress,
) -> anyhow::Result<Vec<Row>> {
    let ids = ids_in_own_vocab_shard(input_ids(opts, cfg, &shape)?, cfg, &crate::exec::Executor::layouts(&*exec)[0]);
    let cost = bind_shape(exec, cfg, shape, opts, &ids)?;
    let plan = &exec.bound()?.plan;
    let off = if shape.phase == Phase::Decode { graph_off(plan.local_batch) } else { None };
    let mut rows = Vec::new();
    let mut load = None;
    for (n, timing) in opts.timing_plans().into_iter().enumerate() {
        let profile = n == 0 && opts.profile.contains(&shape.phase);
        let req = ShapeRun { timing, graph: off.is_none(), align: None, profile, leader: true };
        let t = time_shape(exec, cfg, opts, flush, &req)?;
        report_profile(progress, t.profile.as_ref());
        if n == 0 {
            load = super::routed_load(exec, cfg)?;
        }
        let plan = &exec.bound()?.plan;
        let cost = super::routed_cost(plan, cfg, cost, load.as_ref());
        let mut row = projected_row(exec, &cost, comm, &t, timing, off.as_deref())?;
        row.set_expert_load(load.as_ref());
        rows.push(row);
    }
    Ok(rows)
}

fn projected_row(
    exec: &CudaExecutor,
    cost: &PhaseCost,
    comm: &CommModel,
    t: &super::Timing,
    timing: TimingPlan,
    graph_off: Option<&str>,
) -> anyhow::Result<Row> {
    let plan = &exec.bound()?.plan;
    let comm_time = plan_comm_time(plan, comm, mode(t.graph));
    let mut row = Row::modelled(plan, cost, Method::Projected, t.stats, &comm_time, t.graph);
    row.note = super::row_note(graph_off, &timing);
    row.timing = timing.method.name();
    Ok(row)
}

/// A projected rank has no peers to sum its vocab-parallel embedding with: a token outside
/// its vocab shard would embed to a zero row and every such token would route alike. Drawing
/// the ids from the rank's own shard keeps its activations, and so its routing, like a real
/// run's.
fn ids_in_own_vocab_shard(ids: Vec<Vec<i32>>, cfg: &ModelConfig, layout: &crate::plan::RankLayout) -> Vec<Vec<i32>> {
    if layout.attn_tp == 1 {
        return ids;
    }
    let shard = crate::model::vocab_shard(cfg.vocab_size, layout.attn_tp);
    let start = layout.attn_tp_rank() * shard;
    let real = cfg.vocab_size.saturating_sub(start).min(shard).max(1);
    ids.into_iter().map(|row| row.into_iter().map(|id| (start + id as usize % real) as i32).collect()).collect()
}

#[cfg(test)]
mod shard_ids {
    use super::*;

    #[test]
    fn projected_ids_fall_in_the_ranks_vocab_shard() {
        let cfg =
            crate::config::hf::load_model_config(std::path::Path::new("model_conf/qwen/config_2l.json"), &[]).unwrap();
        let layout = crate::dist::rank_layouts(8, 8, 1).unwrap()[3];
        let shard = crate::model::vocab_shard(cfg.vocab_size, 8);
        let ids = ids_in_own_vocab_shard(crate::inputs::random_ids(4, 16, cfg.vocab_size, 1), &cfg, &layout);
        assert!(ids.iter().flatten().all(|&i| (3 * shard..4 * shard).contains(&(i as usize))));
        let one = crate::dist::rank_layouts(1, 1, 1).unwrap()[0];
        let same = crate::inputs::random_ids(2, 3, cfg.vocab_size, 1);
        assert_eq!(ids_in_own_vocab_shard(same.clone(), &cfg, &one), same);
    }
}
