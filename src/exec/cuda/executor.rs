//! The CUDA side of `exec::Executor`: plans bound to one GPU, weights kept resident
//! across binds (by plan weight name), KV caches kept while the plans share their layout.
//! This is the one place that turns a plan into a `BoundPlan`; the timing loop reaches
//! the bound plan through `bound()`. Without a GPU, `new` fails with one sentence.

use anyhow::{ensure, Context};

use super::engine::{BoundPlan, DeviceCaches};
use super::gpu::Gpu;
use super::weights::{DeviceWeights, Values};
use crate::exec::cpu::KvCaches;
use crate::exec::{Executor, Logits};
use crate::plan::{CacheInfo, DType, Plan, RankLayout, TensorId};

pub struct CudaExecutor<'a> {
    // Field order is drop order: the bound plan goes before the caches it points into.
    bound: Option<BoundPlan>,
    caches: Option<(Vec<CacheInfo>, DeviceCaches)>,
    weights: DeviceWeights,
    values: Values<'a>,
    layout: [RankLayout; 1],
    gpu: Gpu,
}

fn bf16s(values: &[f32]) -> Vec<half::bf16> {
    values.iter().map(|v| half::bf16::from_f32(*v)).collect()
}

impl<'a> CudaExecutor<'a> {
    /// Opens GPU 0; weights come from `values` when a plan first needs them.
    pub fn new(layout: RankLayout, values: Values<'a>) -> anyhow::Result<Self> {
        Ok(Self::with_gpu(layout, values, Gpu::new(0)?))
    }

    /// On a GPU opened (and given its communicators) by the caller: one rank of a
    /// multi-process run (`dist::worker::setup_rank`).
    pub fn with_gpu(layout: RankLayout, values: Values<'a>, gpu: Gpu) -> Self {
        CudaExecutor { bound: None, caches: None, weights: DeviceWeights::default(), values, layout: [layout], gpu }
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    pub fn bound(&self) -> anyhow::Result<&BoundPlan> {
        self.bound.as_ref().context("no plan is bound to the GPU yet")
    }

    pub fn caches(&self) -> anyhow::Result<&DeviceCaches> {
        self.caches.as_ref().map(|(_, c)| c).context("no plan is bound to the GPU yet")
    }

    /// Bytes of `plan`'s weights that are not on the GPU yet.
    pub fn missing_weight_bytes(&self, plan: &Plan) -> usize {
        plan.weights.iter().filter(|w| !self.weights.map.contains_key(&w.name)).map(|w| w.bytes()).sum()
    }

    /// Frees the bound plan and the KV caches (the weights stay), so the next shape sees
    /// all the memory it can have.
    pub fn release(&mut self) {
        self.bound = None;
        self.caches = None;
    }
}

impl Executor for CudaExecutor<'_> {
    fn layouts(&self) -> &[RankLayout] {
        &self.layout
    }

    fn bind(&mut self, plans: Vec<Plan>) -> anyhow::Result<()> {
        ensure!(plans.len() == 1, "the CUDA executor runs one GPU: got {} plans", plans.len());
        let plan = plans.into_iter().next().expect("one plan");
        // The previous arena goes first: two shapes' activations need not fit together.
        self.bound = None;
        if self.caches.as_ref().is_none_or(|(infos, _)| *infos != plan.caches) {
            self.caches = None;
            self.caches = Some((plan.caches.clone(), DeviceCaches::new(&plan.caches)?));
        }
        let ptrs = self.weights.bind(&self.gpu, &plan, &self.values)?;
        let caches = &self.caches.as_ref().expect("caches allocated above").1;
        self.bound = Some(BoundPlan::new(&self.gpu, plan, &ptrs, caches)?);
        Ok(())
    }

    fn plan(&self) -> &Plan {
        &self.bound.as_ref().expect("bind a plan first").plan
    }

    fn set_ids(&mut self, ids: &[Vec<i32>]) -> anyhow::Result<()> {
        self.bound()?.set_ids(&ids.concat())
    }

    fn forward(&mut self) -> anyhow::Result<()> {
        self.bound()?.forward(&self.gpu)?;
        self.gpu.sync()
    }

    fn logits(&self) -> anyhow::Result<Logits> {
        let bound = self.bound()?;
        let flat = bound.read_logits()?;
        let mut logits: Logits = vec![Vec::new(); bound.plan.shape.batch];
        // The logits view is the vocabulary wide (padding columns are not read back).
        for (row, (s, _)) in flat.chunks(bound.plan.logits.cols).zip(&bound.plan.logit_rows) {
            logits[*s].push(row.to_vec());
        }
        Ok(logits)
    }

    fn read_tensor(&self, id: TensorId) -> anyhow::Result<Vec<f32>> {
        self.bound()?.read_tensor(id)
    }

    fn write_tensor(&mut self, id: TensorId, values: &[f32]) -> anyhow::Result<()> {
        let bound = self.bound()?;
        let t = bound.plan.tensor(id);
        ensure!(
            t.rows * t.cols == values.len(),
            "tensor {} holds {} values, not {}",
            id.0,
            t.rows * t.cols,
            values.len()
        );
        let ptr = bound.tensor_ptr(bound.plan.full(id));
        // SAFETY: the arena holds the whole tensor at this address (length checked above).
        unsafe {
            match t.dtype {
                DType::F32 => cudarc::driver::result::memcpy_htod_sync(ptr, values)?,
                DType::I32 => cudarc::driver::result::memcpy_htod_sync(
                    ptr,
                    &values.iter().map(|v| *v as i32).collect::<Vec<_>>(),
                )?,
                DType::BF16 => cudarc::driver::result::memcpy_htod_sync(ptr, &bf16s(values))?,
                DType::F8E4M3 => anyhow::bail!("tensor {}: FP8 is a weight format, not an activation's", t.name),
            }
        }
        Ok(())
    }

    fn poison(&mut self, id: TensorId) -> anyhow::Result<()> {
        let bound = self.bound()?;
        // 0xFF bytes are NaN in bf16 and f32 (and -1 in i32).
        // SAFETY: inside the arena.
        unsafe {
            cudarc::driver::result::memset_d8_sync(
                bound.tensor_ptr(bound.plan.full(id)),
                0xFF,
                bound.plan.tensor(id).bytes(),
            )?
        };
        Ok(())
    }

    fn run_op(&mut self, i: usize) -> anyhow::Result<()> {
        let bound = self.bound()?;
        let name = &bound.plan.ops[i].site.name;
        bound.run_op(&self.gpu, i)?;
        self.gpu.sync().with_context(|| format!("op {i} ({name}) failed on the GPU"))
    }

    fn write_caches(&mut self, host: &KvCaches) -> anyhow::Result<()> {
        let dev = self.caches()?;
        for (i, k) in host.k.iter().enumerate() {
            // SAFETY: same element count as allocated from the same CacheInfo.
            unsafe { cudarc::driver::result::memcpy_htod_sync(dev.k[i].ptr, &bf16s(k))? };
            if let Some(v) = &dev.v[i] {
                unsafe { cudarc::driver::result::memcpy_htod_sync(v.ptr, &bf16s(&host.v[i]))? };
            }
        }
        Ok(())
    }

    fn read_cache(&self, cache: usize) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
        let (infos, dev) = self.caches.as_ref().context("no plan is bound to the GPU yet")?;
        let tokens = infos[cache].batch * infos[cache].max_seq;
        // Allocations are rounded up, so the element count comes from the cache's layout.
        let widen = |b: &super::memory::DeviceBuffer, per_token: usize| -> anyhow::Result<Vec<f32>> {
            Ok(b.download::<half::bf16>(tokens * per_token)?.into_iter().map(|v| v.to_f32()).collect())
        };
        let v = match &dev.v[cache] {
            Some(b) => widen(b, infos[cache].v_elems_per_token())?,
            None => Vec::new(),
        };
        Ok((widen(&dev.k[cache], infos[cache].k_elems_per_token())?, v))
    }
}
