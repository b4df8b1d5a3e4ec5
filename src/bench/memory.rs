//! The memory plan against the device: per shape, the bytes the planner says are resident
//! (weights, KV caches, activation arena, kernel scratch, cuBLASLt workspace) beside the
//! bytes the driver reports in use beyond the baseline taken before fwdbench allocated
//! anything, and a warning when they differ by more than [`margin_bytes`].
//!
//! Weights stay on the GPU by name across binds, so what is resident is every weight of
//! every plan bound so far (an MLA model's prefill and decode plans read different
//! matrices), plus the current plan's caches, arena and scratch.

use std::collections::HashMap;

use serde::Serialize;

use crate::config::model::ModelConfig;
use crate::exec::cpu::KvCaches;
use crate::exec::cuda::executor::CudaExecutor;
use crate::exec::cuda::gpu::Gpu;
use crate::exec::cuda::weights::Values;
use crate::exec::{Executor, Logits};
use crate::plan::memory::{plan_memory, Footprint, Target, CUBLASLT_WORKSPACE_BYTES};
use crate::plan::{Plan, RankLayout, TensorId};
use crate::weights::WeightSource;

/// Allowed difference as a fraction of the plan: allocator rounding (2 MiB pages for
/// large buffers) and the small buffers the planner does not count (ids, launch tables).
pub const MARGIN_FRACTION: f64 = 0.05;
/// Allowed difference beyond the fraction: lazily loaded kernel modules, cuBLAS(Lt) and
/// CUDA-graph state, which grow after the baseline is taken.
pub const MARGIN_BYTES: u64 = 256 << 20;

const MIB: f64 = (1u64 << 20) as f64;

/// One shape's planned and measured device memory.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MemoryRecord {
    pub planned: Footprint,
    /// Device bytes in use beyond the baseline.
    pub used_bytes: u64,
}

/// The difference [`MemoryRecord::warning`] accepts for a plan of `planned` bytes.
pub fn margin_bytes(planned: u64) -> u64 {
    (planned as f64 * MARGIN_FRACTION) as u64 + MARGIN_BYTES
}

impl MemoryRecord {
    pub fn planned_mib(&self) -> f64 {
        self.planned.total_bytes() as f64 / MIB
    }
    pub fn used_mib(&self) -> f64 {
        self.used_bytes as f64 / MIB
    }

    /// One line when the device's use and the plan differ beyond the margin.
    pub fn warning(&self) -> Option<String> {
        let planned = self.planned.total_bytes();
        if planned.abs_diff(self.used_bytes) <= margin_bytes(planned) {
            return None;
        }
        let p = &self.planned;
        let mib = |b: usize| b as f64 / MIB;
        Some(format!(
            "warning: the device uses {:.0} MiB, the memory plan {:.0} MiB (weights {:.0}, KV {:.0}, activations {:.0}, scratch {:.0}, workspace {:.0}): {} than planned beyond the {:.0}% + {} MiB margin",
            self.used_mib(),
            self.planned_mib(),
            mib(p.weight_bytes),
            mib(p.kv_bytes),
            mib(p.arena_bytes),
            mib(p.scratch_bytes),
            mib(p.workspace_bytes),
            if self.used_bytes > planned { "more" } else { "less" },
            MARGIN_FRACTION * 100.0,
            MARGIN_BYTES >> 20,
        ))
    }
}

/// The planner's view of what is resident on one GPU.
#[derive(Debug, Default)]
pub struct Resident {
    weight_bytes: HashMap<String, usize>,
}

impl Resident {
    /// Notes `plan`'s weights (kept from now on) and returns what is resident while it is bound.
    pub fn bind(&mut self, plan: &Plan, target: Target) -> Footprint {
        for w in &plan.weights {
            self.weight_bytes.entry(w.name.clone()).or_insert(w.bytes());
        }
        Footprint { weight_bytes: self.weight_bytes.values().sum(), ..plan_memory(plan, target).footprint() }
    }
}

/// Device bytes in use before fwdbench allocated anything for its plans.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    used_bytes: u64,
}

fn device_used(gpu: &Gpu) -> anyhow::Result<u64> {
    let (free, total) = gpu.ctx.mem_get_info()?;
    Ok(total.saturating_sub(free) as u64)
}

impl Baseline {
    /// Taken on a GPU that holds no plan yet. Opening it already allocated the cuBLASLt
    /// workspace, which the plan counts, so that is not part of the baseline.
    pub fn take(gpu: &Gpu) -> anyhow::Result<Self> {
        Ok(Baseline { used_bytes: device_used(gpu)?.saturating_sub(CUBLASLT_WORKSPACE_BYTES as u64) })
    }

    /// `planned` (what is resident now) beside what the device uses beyond the baseline.
    pub fn record(&self, gpu: &Gpu, planned: Footprint) -> anyhow::Result<MemoryRecord> {
        Ok(MemoryRecord { planned, used_bytes: device_used(gpu)?.saturating_sub(self.used_bytes) })
    }
}

/// A CUDA executor that notes the plans bound to it, so a protocol written against
/// `Executor` (`check::logits`) can be followed by a memory record.
struct Noting<'e, 'a> {
    exec: &'e mut CudaExecutor<'a>,
    resident: Resident,
    last: Footprint,
}

impl Executor for Noting<'_, '_> {
    fn layouts(&self) -> &[RankLayout] {
        self.exec.layouts()
    }
    fn bind(&mut self, plans: Vec<Plan>) -> anyhow::Result<()> {
        let target = Target { sm_count: self.exec.gpu().sm_count };
        for p in &plans {
            self.last = self.resident.bind(p, target);
        }
        self.exec.bind(plans)
    }
    fn plan(&self) -> &Plan {
        self.exec.plan()
    }
    fn set_ids(&mut self, ids: &[Vec<i32>]) -> anyhow::Result<()> {
        self.exec.set_ids(ids)
    }
    fn forward(&mut self) -> anyhow::Result<()> {
        self.exec.forward()
    }
    fn logits(&self) -> anyhow::Result<Logits> {
        self.exec.logits()
    }
    fn read_tensor(&self, id: TensorId) -> anyhow::Result<Vec<f32>> {
        self.exec.read_tensor(id)
    }
    fn write_tensor(&mut self, id: TensorId, values: &[f32]) -> anyhow::Result<()> {
        self.exec.write_tensor(id, values)
    }
    fn poison(&mut self, id: TensorId) -> anyhow::Result<()> {
        self.exec.poison(id)
    }
    fn run_op(&mut self, i: usize) -> anyhow::Result<()> {
        self.exec.run_op(i)
    }
    fn write_caches(&mut self, caches: &KvCaches) -> anyhow::Result<()> {
        self.exec.write_caches(caches)
    }
    fn read_cache(&self, cache: usize) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
        self.exec.read_cache(cache)
    }
}

/// `check`'s logits protocol on GPU 0 with `src`'s weights in bf16, and the memory record
/// of the last plan it ran.
pub fn cuda_check(
    cfg: &ModelConfig,
    layouts: &[RankLayout],
    src: &dyn WeightSource,
    ids: &[Vec<i32>],
    mode: crate::check::CheckMode,
) -> anyhow::Result<(Logits, MemoryRecord)> {
    anyhow::ensure!(
        layouts.len() == 1,
        "check --device cuda runs one GPU for now: use --deploy tp1 (sharded plans are checked on the CPU)"
    );
    let mut exec = CudaExecutor::new(layouts[0], Values::Source(src))?;
    let baseline = Baseline::take(exec.gpu())?;
    let mut noting = Noting { exec: &mut exec, resident: Resident::default(), last: Footprint::default() };
    let logits = crate::check::logits(&mut noting, cfg, ids, mode)?;
    let planned = noting.last;
    Ok((logits, baseline.record(exec.gpu(), planned)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{build_plan, tests_support, PlanOptions};
    use crate::plan::Shape;

    #[test]
    fn resident_weights_are_the_union_of_the_bound_plans() {
        let cfg = tests_support::tiny_mla_moe();
        let plan = |shape| build_plan(&cfg, RankLayout::single(), shape, PlanOptions::default()).unwrap();
        let (prefill, decode) = (plan(Shape::prefill(2, 4)), plan(Shape::decode(2, 4)));
        let mut resident = Resident::default();
        let first = resident.bind(&prefill, Target::H200);
        assert_eq!(first, plan_memory(&prefill, Target::H200).footprint());
        let second = resident.bind(&decode, Target::H200);
        let alone = plan_memory(&decode, Target::H200).footprint();
        // The decode plan's absorbed MLA matrices join the prefill's kv_b on the GPU.
        assert!(second.weight_bytes > alone.weight_bytes && second.weight_bytes > first.weight_bytes);
        assert_eq!((second.kv_bytes, second.arena_bytes), (alone.kv_bytes, alone.arena_bytes));
        assert_eq!(resident.bind(&decode, Target::H200), second, "binding again adds nothing");
    }

    #[test]
    fn differences_beyond_the_margin_warn() {
        let planned = Footprint { weight_bytes: 10 << 30, kv_bytes: 2 << 30, ..Default::default() };
        let total = planned.total_bytes();
        let at = |used: u64| MemoryRecord { planned, used_bytes: used };
        assert_eq!(at(total).warning(), None);
        assert_eq!(at(total + margin_bytes(total)).warning(), None);
        let over = at(total + margin_bytes(total) + 1).warning().expect("beyond the margin");
        assert!(over.contains("more than planned") && over.contains("weights 10240") && over.contains("5%"), "{over}");
        let under = at(total - margin_bytes(total) - 1).warning().expect("beyond the margin");
        assert!(under.contains("less than planned"), "{under}");
        assert_eq!(at(3 << 20).used_mib(), 3.0);
        assert_eq!(margin_bytes(0), MARGIN_BYTES);
    }
}
