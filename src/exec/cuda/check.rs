//! GPU forwards for `fwdbench check --device cuda`: the same prefill / prefill+decode
//! sequence as the CPU check, on one GPU, from the checkpoint's weights in bf16.

use anyhow::bail;

use super::engine::{BoundPlan, DeviceCaches};
use super::gpu::Gpu;
use super::weights::{DeviceWeights, Values};
use crate::check::CheckMode;
use crate::config::model::ModelConfig;
use crate::exec::cpu::run::Logits;
use crate::model::{build_plan, PlanOptions};
use crate::plan::{RankLayout, Shape};
use crate::weights::WeightSource;

pub fn cuda_logits(
    cfg: &ModelConfig,
    layouts: &[RankLayout],
    src: &dyn WeightSource,
    ids: &[Vec<i32>],
    mode: CheckMode,
) -> anyhow::Result<Logits> {
    if layouts.len() != 1 {
        bail!("check --device cuda runs one GPU for now: use --deploy tp1 (sharded plans are checked on the CPU)");
    }
    let gpu = Gpu::new(0)?;
    let (batch, seq) = (ids.len(), ids[0].len());
    let mut weights = DeviceWeights::default();
    let values = Values::Source(src);
    let steps: Vec<(Shape, PlanOptions, Vec<i32>)> = match mode {
        CheckMode::Prefill => {
            vec![(Shape::prefill(batch, seq), PlanOptions { all_logits: true, cache_len: None }, ids.concat())]
        }
        CheckMode::Decode => {
            let opts = PlanOptions { all_logits: false, cache_len: Some(seq) };
            let mut s = Vec::new();
            if seq > 1 {
                s.push((
                    Shape::prefill(batch, seq - 1),
                    opts,
                    ids.iter().flat_map(|r| r[..seq - 1].iter().copied()).collect(),
                ));
            }
            s.push((Shape::decode(batch, seq - 1), opts, ids.iter().map(|r| r[seq - 1]).collect()));
            s
        }
    };
    let mut caches: Option<DeviceCaches> = None;
    let mut out = Vec::new();
    for (shape, opts, step_ids) in steps {
        let plan = build_plan(cfg, layouts[0], shape, opts)?;
        if caches.is_none() {
            caches = Some(DeviceCaches::new(&plan.caches)?);
        }
        let ptrs = weights.bind(&gpu, &plan, &values)?;
        let bound = BoundPlan::new(&gpu, plan, &ptrs, caches.as_ref().expect("caches"))?;
        bound.set_ids(&step_ids)?;
        bound.forward(&gpu)?;
        gpu.sync()?;
        let flat = bound.read_logits()?;
        let vocab = cfg.vocab_size;
        let mut logits: Logits = vec![Vec::new(); batch];
        for (row, (s, _)) in flat.chunks(vocab).zip(&bound.plan.logit_rows) {
            logits[*s].push(row.to_vec());
        }
        out = logits;
    }
    Ok(out)
}
