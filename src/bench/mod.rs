//! The timing loop: for every (batch, sequence) of the grid, the prefill forward and the
//! decode step, timed with CUDA events around the forward only, after warm-up, with the
//! L2 flushed before every timed iteration (unless `--no-flush`) and decode replayed from
//! a captured CUDA graph (unless `--no-graph`). Rows are printed, logged and (with
//! `--save`) appended to CSV as they complete, so a failing shape loses nothing measured.

mod report;
mod stats;

use std::path::Path;

use anyhow::{bail, Context};
use cudarc::driver::sys::{CUevent_flags, CUgraphInstantiate_flags, CUstreamCaptureMode};

use crate::cli::RunArgs;
use crate::config::model::ModelConfig;
use crate::config::run_conf::Deployment;
use crate::exec::cuda::engine::{BoundPlan, DeviceCaches};
use crate::exec::cuda::gpu::Gpu;
use crate::exec::cuda::kernels::init::{fill_normal_launch, FillNormalParams, FILL_NORMAL_BF16};
use crate::exec::cuda::memory::DeviceBuffer;
use crate::exec::cuda::weights::{DeviceWeights, Values};
use crate::model::{build_plan, PlanOptions};
use crate::plan::cost::PhaseCost;
use crate::plan::memory::{fits, plan_memory, Target};
use crate::plan::{Phase, RankLayout, Shape};
pub use report::{Reporter, Row};
pub use stats::Stats;

/// Denominators of MFU and MBU: dense bf16 peak and the measured copy bandwidth (anchors.md).
pub const PEAK_TFLOPS: f64 = 989.0;
pub const COPY_GBS: f64 = 4277.0;
const FLUSH_BYTES: usize = 256 << 20;

pub fn run_grid(
    args: &RunArgs,
    cfg: &ModelConfig,
    model_dir: &Path,
    dep: &Deployment,
    ranks: &[RankLayout],
    shapes: &[(usize, usize)],
) -> anyhow::Result<()> {
    if ranks.len() > 1 {
        bail!(
            "--deploy {} needs {} GPUs: multi-GPU runs (NCCL) are not built yet; use a tp1 deployment",
            args.deploy.deploy,
            ranks.len()
        );
    }
    let gpu = Gpu::new(0)?;
    let mut reporter = Reporter::new(args, &gpu.name, dep)?;
    let mut weights = DeviceWeights::default();
    let flush = DeviceBuffer::zeroed(FLUSH_BYTES)?;
    let total = shapes.len() * 2;
    let mut done = 0;
    for &(bsz, seq) in shapes {
        for phase in [Phase::Prefill, Phase::Decode] {
            done += 1;
            let shape = Shape { phase, batch: bsz, seq };
            eprintln!("[{done}/{total}] {} bsz {bsz} seq {seq}", phase.name());
            let ids = input_ids(args, cfg, model_dir, &shape)?;
            match time_shape(&gpu, cfg, ranks[0], shape, args, &mut weights, &flush, &ids) {
                Ok(row) => reporter.row(&row)?,
                Err(e) => reporter.skipped(shape, &format!("{e:#}"))?,
            }
        }
    }
    reporter.finish()
}

fn input_ids(args: &RunArgs, cfg: &ModelConfig, model_dir: &Path, shape: &Shape) -> anyhow::Result<Vec<i32>> {
    let n = shape.new_tokens_per_seq();
    let rows = match &args.prompt_file {
        Some(p) => crate::cli::inputs::prompt_ids(p, model_dir, shape.batch, shape.context())?
            .into_iter()
            .map(|r| r[r.len() - n..].to_vec())
            .collect(),
        None => crate::cli::inputs::random_ids(shape.batch, n, cfg.vocab_size, args.seed),
    };
    Ok(rows.concat())
}

/// Fills every cache with random values: a decode step is timed without running a prefill.
fn fill_caches(gpu: &Gpu, caches: &DeviceCaches, seed: u64) -> anyhow::Result<()> {
    for (i, buf) in caches.k.iter().chain(caches.v.iter().flatten()).enumerate() {
        let elems = buf.bytes / 2;
        let p = FillNormalParams {
            dst: buf.ptr,
            dst_ld: 1,
            rows: elems as i64,
            cols: 1,
            seed: seed ^ (i as u64 + 1),
            mean: 0.0,
            std: 1.0,
            src_ld: 1,
            ..Default::default()
        };
        gpu.launch(FILL_NORMAL_BF16, fill_normal_launch(elems, 1), p)?;
    }
    gpu.sync()
}

#[allow(clippy::too_many_arguments)]
fn time_shape(
    gpu: &Gpu,
    cfg: &ModelConfig,
    layout: RankLayout,
    shape: Shape,
    args: &RunArgs,
    weights: &mut DeviceWeights,
    flush: &DeviceBuffer,
    ids: &[i32],
) -> anyhow::Result<Row> {
    let plan = build_plan(cfg, layout, shape, PlanOptions::default())?;
    let need = plan_memory(&plan, Target { sm_count: gpu.sm_count });
    let resident_weights: usize =
        plan.weights.iter().filter(|w| weights.map.contains_key(&w.name)).map(|w| w.bytes()).sum();
    let (free, _) = gpu.ctx.mem_get_info()?;
    fits(&need.footprint(), (resident_weights + need.workspace_bytes) as u64, free as u64)?;
    let cost = PhaseCost::of(&plan, cfg);
    let caches = DeviceCaches::new(&plan.caches)?;
    if shape.phase == Phase::Decode {
        fill_caches(gpu, &caches, args.seed)?;
    }
    let ptrs = weights.bind(gpu, &plan, &Values::Random { seed: args.seed })?;
    let bound = BoundPlan::new(gpu, plan, &ptrs, &caches)?;
    bound.set_ids(ids)?;
    for _ in 0..args.warmup.max(1) {
        bound.forward(gpu)?;
    }
    gpu.sync().context("warm-up forward")?;
    let graph = if shape.phase == Phase::Decode && !args.no_graph {
        gpu.stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
        let captured = bound.forward(gpu);
        let g = gpu.stream.end_capture(CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH)?;
        captured.context("capturing the decode forward")?;
        let g = g.context("graph capture produced no graph")?;
        g.launch()?;
        gpu.sync().context("graph replay")?;
        Some(g)
    } else {
        None
    };
    let start = gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    let end = gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    let mut times = Vec::with_capacity(args.iters);
    for _ in 0..args.iters.max(1) {
        if !args.no_flush {
            // SAFETY: the flush buffer is FLUSH_BYTES long.
            unsafe { cudarc::driver::result::memset_d8_async(flush.ptr, 1, FLUSH_BYTES, gpu.stream.cu_stream())? };
        }
        start.record(&gpu.stream)?;
        match &graph {
            Some(g) => g.launch()?,
            None => bound.forward(gpu)?,
        }
        end.record(&gpu.stream)?;
        times.push(start.elapsed_ms(&end)? as f64);
    }
    if let Some(p) = &args.profile {
        if p == shape.phase.name() {
            report::write_profile(args, gpu, &bound, cfg, &start, &end)?;
        }
    }
    let stats = Stats::of(&times);
    Ok(Row::new(&bound.plan, &cost, stats, graph.is_some()))
}

/// Used by the profile writer: one op's time, eagerly.
pub fn time_op(
    gpu: &Gpu,
    bound: &BoundPlan,
    i: usize,
    start: &cudarc::driver::CudaEvent,
    end: &cudarc::driver::CudaEvent,
) -> anyhow::Result<f64> {
    start.record(&gpu.stream)?;
    bound.run_op(gpu, i)?;
    end.record(&gpu.stream)?;
    Ok(start.elapsed_ms(end)? as f64)
}
