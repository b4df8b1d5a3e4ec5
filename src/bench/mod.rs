//! The timing loop: for every (batch, sequence) of the grid, the prefill forward and the
//! decode step, timed with CUDA events around the forward only, after warm-up, with the
//! L2 flushed before every timed iteration (unless `flush` is off) and decode replayed
//! from a captured CUDA graph (unless `graph` is off). Measurements go to `report` as
//! they complete, so a failing shape loses nothing measured.

pub mod kernel;
pub mod suite;
pub mod timing;

use std::path::PathBuf;

use anyhow::{bail, Context};
use cudarc::driver::sys::{CUevent_flags, CUgraphInstantiate_flags, CUstreamCaptureMode};

use crate::config::model::ModelConfig;
use crate::config::run_conf::Deployment;
use crate::exec::cuda::engine::{BoundPlan, DeviceCaches};
use crate::exec::cuda::executor::CudaExecutor;
use crate::exec::cuda::gpu::Gpu;
use crate::exec::cuda::kernels::init::{fill_normal_launch, FillNormalParams, FILL_NORMAL_BF16};
use crate::exec::cuda::memory::DeviceBuffer;
use crate::exec::cuda::weights::Values;
use crate::exec::Executor;
use crate::model::{build_plan, PlanOptions};
use crate::plan::cost::PhaseCost;
use crate::plan::memory::{fits, plan_memory, Target};
use crate::plan::{Phase, RankLayout, Shape};
use crate::report::{Meta, Reporter, Row, Stats};

/// What a run measures and where it writes, independent of how it was asked for.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Labels of the report: model folder name, config name, conf layers.
    pub model: String,
    pub mconf: String,
    pub base: String,
    pub deploy: String,
    /// The model folder: where `prompt_file`'s tokenizer.json lives.
    pub model_dir: PathBuf,
    pub warmup: usize,
    pub iters: usize,
    /// Flush the L2 cache before every timed iteration.
    pub flush: bool,
    /// Replay decode from a captured CUDA graph.
    pub graph: bool,
    /// The phase whose per-op times are written to a profile.
    pub profile: Option<Phase>,
    /// Seed of the random weights, ids and KV cache contents.
    pub seed: u64,
    /// Real text (tokenised with the model folder's tokenizer.json) instead of random ids.
    pub prompt_file: Option<PathBuf>,
    pub results_dir: PathBuf,
    /// Append CSV rows to results/csv/.
    pub save: bool,
}

pub fn run_grid(
    opts: &BenchOptions,
    cfg: &ModelConfig,
    dep: &Deployment,
    ranks: &[RankLayout],
    shapes: &[(usize, usize)],
) -> anyhow::Result<()> {
    if ranks.len() > 1 {
        bail!(
            "--deploy {} needs {} GPUs: multi-GPU runs (NCCL) are not built yet; use a tp1 deployment",
            opts.deploy,
            ranks.len()
        );
    }
    let mut exec = CudaExecutor::new(ranks[0], Values::Random { seed: opts.seed })?;
    let meta = Meta {
        model: opts.model.clone(),
        mconf: opts.mconf.clone(),
        base: opts.base.clone(),
        deploy: opts.deploy.clone(),
        backend: dep.attention_backend.clone(),
        gpu: exec.gpu().name.clone(),
        rev: env!("FWDBENCH_GIT_REV").to_string(),
    };
    let mut reporter = Reporter::new(meta, &opts.results_dir, opts.save)?;
    let flush = timing::flush_buffer()?;
    let total = shapes.len() * 2;
    let mut done = 0;
    for &(bsz, seq) in shapes {
        for phase in [Phase::Prefill, Phase::Decode] {
            done += 1;
            let shape = Shape { phase, batch: bsz, seq };
            eprintln!("[{done}/{total}] {} bsz {bsz} seq {seq}", phase.name());
            let ids = input_ids(opts, cfg, &shape)?;
            match time_shape(&mut exec, cfg, shape, opts, &flush, &ids) {
                Ok(row) => reporter.row(&row)?,
                Err(e) => reporter.skipped(shape, &format!("{e:#}"))?,
            }
        }
    }
    reporter.finish()
}

/// The new tokens of every sequence of `shape`: the end of the prompt's context, or random.
fn input_ids(opts: &BenchOptions, cfg: &ModelConfig, shape: &Shape) -> anyhow::Result<Vec<Vec<i32>>> {
    let n = shape.new_tokens_per_seq();
    Ok(match &opts.prompt_file {
        Some(p) => crate::inputs::prompt_ids(p, &opts.model_dir, shape.batch, shape.context())?
            .into_iter()
            .map(|r| r[r.len() - n..].to_vec())
            .collect(),
        None => crate::inputs::random_ids(shape.batch, n, cfg.vocab_size, opts.seed),
    })
}

/// Fills every cache with random values: a decode step is timed without running a prefill.
pub(crate) fn fill_caches(gpu: &Gpu, caches: &DeviceCaches, seed: u64) -> anyhow::Result<()> {
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

fn time_shape(
    exec: &mut CudaExecutor,
    cfg: &ModelConfig,
    shape: Shape,
    opts: &BenchOptions,
    flush: &DeviceBuffer,
    ids: &[Vec<i32>],
) -> anyhow::Result<Row> {
    let plan = build_plan(cfg, exec.layouts()[0], shape, PlanOptions::default())?;
    // The previous shape's arena and caches are freed before asking what is free.
    exec.release();
    let need = plan_memory(&plan, Target { sm_count: exec.gpu().sm_count });
    let missing_weights = exec.missing_weight_bytes(&plan);
    let resident_weights = need.weight_bytes.saturating_sub(missing_weights);
    let (free, _) = exec.gpu().ctx.mem_get_info()?;
    fits(&need.footprint(), (resident_weights + need.workspace_bytes) as u64, free as u64)?;
    let cost = PhaseCost::of(&plan, cfg);
    exec.bind(vec![plan])?;
    exec.set_ids(ids)?;
    let gpu = exec.gpu();
    if shape.phase == Phase::Decode {
        fill_caches(gpu, exec.caches()?, opts.seed)?;
    }
    let bound = exec.bound()?;
    for _ in 0..opts.warmup.max(1) {
        bound.forward(gpu)?;
    }
    gpu.sync().context("warm-up forward")?;
    let graph = if shape.phase == Phase::Decode && opts.graph {
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
    let times = timing::time_iterations(gpu, opts.flush.then_some(flush), opts.iters, || match &graph {
        Some(g) => Ok(g.launch()?),
        None => bound.forward(gpu),
    })?;
    if opts.profile == Some(shape.phase) {
        let op_ms = time_ops(gpu, bound)?;
        let path = crate::report::write_profile(&opts.results_dir, &opts.model, &opts.mconf, &bound.plan, cfg, &op_ms)?;
        eprintln!("profile written to {}", path.display());
    }
    Ok(Row::new(&bound.plan, &cost, Stats::of(&times), graph.is_some()))
}

/// Every op's time in one eager forward, each op alone between two events.
fn time_ops(gpu: &Gpu, bound: &BoundPlan) -> anyhow::Result<Vec<f64>> {
    let start = gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    let end = gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    (0..bound.plan.ops.len())
        .map(|i| {
            start.record(&gpu.stream)?;
            bound.run_op(gpu, i)?;
            end.record(&gpu.stream)?;
            Ok(start.elapsed_ms(&end)? as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(prompt_file: Option<PathBuf>) -> BenchOptions {
        BenchOptions {
            model: "qwen".into(),
            mconf: "2l".into(),
            base: "base".into(),
            deploy: "tp1".into(),
            model_dir: PathBuf::from("tests/fixtures/tokenizer"),
            warmup: 1,
            iters: 1,
            flush: true,
            graph: true,
            profile: None,
            seed: 4,
            prompt_file,
            results_dir: PathBuf::from("results"),
            save: false,
        }
    }

    #[test]
    fn inputs_are_the_new_tokens_of_each_sequence() {
        let cfg = crate::config::hf::load_model_config(std::path::Path::new("tests/fixtures/qwen3/config.json"), &[])
            .unwrap();
        let random = input_ids(&opts(None), &cfg, &Shape::prefill(3, 5)).unwrap();
        assert_eq!(random, crate::inputs::random_ids(3, 5, cfg.vocab_size, 4));
        assert_eq!(input_ids(&opts(None), &cfg, &Shape::decode(3, 5)).unwrap().concat().len(), 3);
        // A decode step of the prompt feeds the token after the cached context.
        let prompt = Some(PathBuf::from("tests/fixtures/tokenizer/prompt.txt"));
        let dir = std::path::Path::new("tests/fixtures/tokenizer");
        let full = crate::inputs::prompt_ids(&dir.join("prompt.txt"), dir, 2, 9).unwrap();
        let step = input_ids(&opts(prompt), &cfg, &Shape::decode(2, 8)).unwrap();
        assert_eq!(step, vec![vec![full[0][8]], vec![full[1][8]]]);
    }
}
