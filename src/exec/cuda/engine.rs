//! A plan bound to one GPU: every buffer allocated up front (weights, KV caches, one
//! activation arena laid out by the memory planner, one scratch region), every op turned
//! into prepared launches. A bound plan runs eagerly or is captured into a CUDA graph.

use anyhow::Context;

use super::gpu::Gpu;
use super::kernels;
use super::kernels::prepare::{view_ptr, Call, Prep};
use super::memory::DeviceBuffer;
use crate::plan::memory::{fits, plan_memory, MemoryPlan, Target};
use crate::plan::{CacheInfo, DType, Plan, View};

/// KV caches on the device, shared by the plans of a prefill and the decode after it.
#[derive(Default)]
pub struct DeviceCaches {
    pub k: Vec<DeviceBuffer>,
    pub v: Vec<Option<DeviceBuffer>>,
}

impl DeviceCaches {
    pub fn new(caches: &[CacheInfo]) -> anyhow::Result<Self> {
        let mut out = DeviceCaches::default();
        for c in caches {
            out.k.push(DeviceBuffer::zeroed(c.batch * c.max_seq * c.k_elems_per_token() * 2)?);
            let v = c.v_elems_per_token();
            out.v.push(if v > 0 { Some(DeviceBuffer::zeroed(c.batch * c.max_seq * v * 2)?) } else { None });
        }
        Ok(out)
    }
}

pub struct BoundPlan {
    pub plan: Plan,
    pub memory: MemoryPlan,
    arena: DeviceBuffer,
    _scratch: DeviceBuffer,
    _aux: Vec<DeviceBuffer>,
    ids: DeviceBuffer,
    /// Calls of each op, in plan order.
    calls: Vec<Vec<Call>>,
}

impl BoundPlan {
    /// Allocates the plan's arena and scratch and prepares every call. `weights` and
    /// `caches` are already on the GPU; the rest must fit beside them.
    pub fn new(gpu: &Gpu, plan: Plan, weights: &[u64], caches: &DeviceCaches) -> anyhow::Result<Self> {
        let memory = plan_memory(&plan, Target { sm_count: gpu.sm_count });
        let resident = memory.weight_bytes + memory.kv_bytes + memory.workspace_bytes;
        let (free, _) = gpu.ctx.mem_get_info()?;
        fits(&memory.footprint(), resident as u64, free as u64)?;
        let arena = DeviceBuffer::zeroed(memory.arena_bytes).context("allocating the activation arena")?;
        let scratch = DeviceBuffer::zeroed(memory.scratch_bytes).context("allocating the kernel scratch")?;
        let ids = DeviceBuffer::zeroed(plan.tensor(plan.input_ids).rows * 4)?;
        let mut cx = Prep::new(gpu, &plan, &memory, arena.ptr, weights, caches, scratch.ptr, ids.ptr)?;
        let mut calls = Vec::with_capacity(plan.ops.len());
        for planned in &plan.ops {
            let prepared = kernels::prepare(&mut cx, &planned.op)
                .with_context(|| format!("preparing op {} ({})", planned.site.name, planned.op.kind_name()))?;
            calls.push(prepared);
        }
        let aux = cx.into_aux();
        Ok(BoundPlan { plan, memory, arena, _scratch: scratch, _aux: aux, ids, calls })
    }

    pub fn set_ids(&self, ids: &[i32]) -> anyhow::Result<()> {
        assert_eq!(ids.len(), self.plan.tensor(self.plan.input_ids).rows, "one id per token");
        // SAFETY: the buffer holds exactly one i32 per token.
        unsafe { cudarc::driver::result::memcpy_htod_sync(self.ids.ptr, ids) }?;
        Ok(())
    }

    /// Enqueues op `i`'s calls on the stream.
    pub fn run_op(&self, gpu: &Gpu, i: usize) -> anyhow::Result<()> {
        self.calls[i].iter().try_for_each(|call| call.enqueue(gpu))
    }

    /// Op `i`'s prepared calls, in launch order.
    pub fn op_calls(&self, i: usize) -> &[Call] {
        &self.calls[i]
    }

    /// Enqueues the whole forward.
    pub fn forward(&self, gpu: &Gpu) -> anyhow::Result<()> {
        (0..self.calls.len()).try_for_each(|i| self.run_op(gpu, i))
    }

    /// Device address and row stride of an activation, for reading results back.
    pub fn tensor_ptr(&self, v: View) -> u64 {
        view_ptr(&self.plan, &self.memory, self.arena.ptr, v)
    }

    /// The logits `[rows, vocab]` in f32 (after a synchronised forward).
    pub fn read_logits(&self) -> anyhow::Result<Vec<f32>> {
        let t = self.plan.tensor(self.plan.logits.id);
        let all: Vec<f32> = self.arena.download_at(self.memory.offsets[self.plan.logits.id.0], t.rows * t.cols)?;
        Ok(all.chunks(t.cols).flat_map(|r| r[..self.plan.logits.cols].iter().copied()).collect())
    }

    /// A whole activation as f32 (bf16 widened), for per-op checks.
    pub fn read_tensor(&self, id: crate::plan::TensorId) -> anyhow::Result<Vec<f32>> {
        let t = self.plan.tensor(id);
        let off = self.memory.offsets[id.0];
        Ok(match t.dtype {
            DType::F32 => self.arena.download_at(off, t.rows * t.cols)?,
            DType::I32 => self.arena.download_at::<i32>(off, t.rows * t.cols)?.into_iter().map(|v| v as f32).collect(),
            DType::BF16 => {
                self.arena.download_at::<half::bf16>(off, t.rows * t.cols)?.into_iter().map(|v| v.to_f32()).collect()
            }
            DType::F8E4M3 => anyhow::bail!("tensor {}: FP8 is a weight format; no activation is planned in it", t.name),
        })
    }
}
