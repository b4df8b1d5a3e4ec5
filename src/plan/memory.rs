//! The memory planner: weights, KV caches, one activation arena whose buffers are reused
//! once their last reader has run, the kernels' scratch and the cuBLASLt workspace, so a
//! whole forward has fixed addresses (and can be captured into a CUDA graph) and "does it
//! fit?" is known before any allocation.

use serde::Serialize;

use super::{Plan, TensorId};

/// Usable memory of one H200 (143771 MiB as the driver reports it).
pub const H200_BYTES: u64 = 143_771 * 1024 * 1024;
/// Kept free beyond what the plan allocates: the CUDA context, NCCL's buffers and the
/// allocator's rounding.
pub const RESERVED_BYTES: u64 = 3 * 1024 * 1024 * 1024;
/// The cuBLASLt workspace every GPU holds (one per handle, shared by all GEMMs).
pub const CUBLASLT_WORKSPACE_BYTES: usize = 32 << 20;
const ALIGN: usize = 256;

/// What the planner needs to know of the device: kernel scratch depends on how many CTAs
/// run at once (the split-KV decode kernels size their partial sums by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Target {
    pub sm_count: i32,
}

impl Target {
    /// An H200 (SXM): 132 SMs.
    pub const H200: Target = Target { sm_count: 132 };
}

/// Device bytes of one plan by kind (or the peak of several, see [`Footprint::max`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Footprint {
    pub weight_bytes: usize,
    pub kv_bytes: usize,
    pub arena_bytes: usize,
    /// The largest scratch any one op's kernels need (ops run one after another).
    pub scratch_bytes: usize,
    pub workspace_bytes: usize,
}

impl Footprint {
    pub fn total_bytes(&self) -> u64 {
        (self.weight_bytes + self.kv_bytes + self.arena_bytes + self.scratch_bytes + self.workspace_bytes) as u64
    }
    /// Plans that run one after another on one GPU (prefill, then decode) share weights,
    /// caches and workspace and reuse arena and scratch: each part's peak.
    pub fn max(self, o: Footprint) -> Footprint {
        Footprint {
            weight_bytes: self.weight_bytes.max(o.weight_bytes),
            kv_bytes: self.kv_bytes.max(o.kv_bytes),
            arena_bytes: self.arena_bytes.max(o.arena_bytes),
            scratch_bytes: self.scratch_bytes.max(o.scratch_bytes),
            workspace_bytes: self.workspace_bytes.max(o.workspace_bytes),
        }
    }
}

/// A footprint that does not fit, with the parts that make it up.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "does not fit: needs {:.1} GB more (KV {:.1} GB, activations {:.1} GB, kernel scratch {:.2} GB, weights not yet on the GPU {:.1} GB, {:.1} GB kept free), {:.1} GB free; use a smaller batch or sequence, or a deployment over more GPUs",
    gb(*need), gb(footprint.kv_bytes as u64), gb(footprint.arena_bytes as u64),
    gb(footprint.scratch_bytes as u64), gb(*new_weights), gb(RESERVED_BYTES), gb(*free)
)]
pub struct DoesNotFit {
    pub footprint: Footprint,
    pub need: u64,
    pub new_weights: u64,
    pub free: u64,
}

fn gb(b: u64) -> f64 {
    b as f64 / 1e9
}

/// The one answer to "does it fit?" for `count` (nothing allocated, `free` = the whole
/// device), `run` and `check` (`resident_bytes` of the footprint already allocated, `free`
/// as the driver reports it): what is still to allocate plus [`RESERVED_BYTES`] must fit.
pub fn fits(footprint: &Footprint, resident_bytes: u64, free_bytes: u64) -> Result<(), DoesNotFit> {
    let need = footprint.total_bytes().saturating_sub(resident_bytes) + RESERVED_BYTES;
    if need <= free_bytes {
        return Ok(());
    }
    let new_weights = (footprint.weight_bytes as u64).saturating_sub(resident_bytes);
    Err(DoesNotFit { footprint: *footprint, need, new_weights, free: free_bytes })
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryPlan {
    /// Byte offset of every activation in the arena.
    pub offsets: Vec<usize>,
    pub arena_bytes: usize,
    pub weight_bytes: usize,
    pub kv_bytes: usize,
    /// One scratch region, carved by each op that needs one (see `exec::cuda::kernels`).
    pub scratch_bytes: usize,
    pub workspace_bytes: usize,
    /// The device the scratch was sized for; launches must use the same SM count.
    pub target: Target,
}

impl MemoryPlan {
    pub fn footprint(&self) -> Footprint {
        Footprint {
            weight_bytes: self.weight_bytes,
            kv_bytes: self.kv_bytes,
            arena_bytes: self.arena_bytes,
            scratch_bytes: self.scratch_bytes,
            workspace_bytes: self.workspace_bytes,
        }
    }
}

/// First and last op index touching each tensor (inputs live from the start, logits to
/// the end).
pub fn lifetimes(plan: &Plan) -> Vec<(usize, usize)> {
    let n = plan.ops.len();
    let mut life = vec![(usize::MAX, 0usize); plan.tensors.len()];
    let mut touch = |id: TensorId, i: usize| {
        let l = &mut life[id.0];
        l.0 = l.0.min(i);
        l.1 = l.1.max(i);
    };
    touch(plan.input_ids, 0);
    touch(plan.logits.id, n);
    for (i, p) in plan.ops.iter().enumerate() {
        for id in p.op.inputs().into_iter().chain(p.op.outputs()) {
            touch(id, i);
        }
    }
    life
}

pub fn plan_memory(plan: &Plan, target: Target) -> MemoryPlan {
    let life = lifetimes(plan);
    let mut order: Vec<usize> = (0..plan.tensors.len()).filter(|&i| life[i].0 != usize::MAX).collect();
    // Big buffers first packs tighter.
    order.sort_by_key(|&i| (std::cmp::Reverse(plan.tensors[i].bytes()), life[i].0));
    let mut placed: Vec<(usize, usize, usize, usize)> = Vec::new(); // (offset, size, first, last)
    let mut offsets = vec![0usize; plan.tensors.len()];
    let mut arena = 0usize;
    for i in order {
        let size = plan.tensors[i].bytes().div_ceil(ALIGN) * ALIGN;
        let (first, last) = life[i];
        let mut busy: Vec<(usize, usize)> =
            placed.iter().filter(|(_, _, f, l)| !(*l < first || last < *f)).map(|(o, s, _, _)| (*o, *s)).collect();
        busy.sort();
        let mut offset = 0;
        for (o, s) in busy {
            if offset + size <= o {
                break;
            }
            offset = offset.max(o + s);
        }
        placed.push((offset, size, first, last));
        offsets[i] = offset;
        arena = arena.max(offset + size);
    }
    MemoryPlan {
        offsets,
        arena_bytes: arena,
        weight_bytes: plan.weights.iter().map(|w| w.bytes()).sum(),
        kv_bytes: plan.caches.iter().map(|c| c.bytes()).sum(),
        // Scratch is a property of the kernels that run the ops, so the planner asks them.
        scratch_bytes: plan
            .ops
            .iter()
            .map(|p| crate::exec::cuda::kernels::scratch_bytes(plan, &p.op, target))
            .max()
            .unwrap_or(0),
        workspace_bytes: CUBLASLT_WORKSPACE_BYTES,
        target,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_tensors_never_overlap() {
        use crate::config::model::*;
        let cfg = crate::model::tests_support::tiny_dense();
        let plan = crate::model::build_plan(
            &cfg,
            crate::plan::RankLayout::single(),
            crate::plan::Shape::prefill(2, 5),
            Default::default(),
        )
        .unwrap();
        let mem = plan_memory(&plan, Target::H200);
        let life = lifetimes(&plan);
        for a in 0..plan.tensors.len() {
            for b in a + 1..plan.tensors.len() {
                let (la, lb) = (life[a], life[b]);
                if la.0 == usize::MAX || lb.0 == usize::MAX || la.1 < lb.0 || lb.1 < la.0 {
                    continue;
                }
                let (oa, ob) = (mem.offsets[a], mem.offsets[b]);
                let (sa, sb) = (plan.tensors[a].bytes(), plan.tensors[b].bytes());
                assert!(oa + sa <= ob || ob + sb <= oa, "tensors {a} and {b} overlap while both live");
            }
        }
        let naive: usize = plan.tensors.iter().map(|t| t.bytes()).sum();
        assert!(mem.arena_bytes < naive, "reuse should beat one buffer per tensor");
        let _ = Family::Qwen3;
    }

    #[test]
    fn fits_counts_only_what_is_still_to_allocate() {
        let f = Footprint { weight_bytes: 100 << 30, kv_bytes: 20 << 30, arena_bytes: 10 << 30, ..Default::default() };
        let total = f.total_bytes();
        assert!(fits(&f, 0, total + RESERVED_BYTES).is_ok());
        let err = fits(&f, 0, total + RESERVED_BYTES - 1).unwrap_err();
        assert_eq!(err.need, total + RESERVED_BYTES);
        assert_eq!(err.new_weights, 100 << 30);
        // The weights already on the GPU are not asked for again.
        assert!(fits(&f, 100 << 30, total - (100 << 30) + RESERVED_BYTES).is_ok());
        let msg = err.to_string();
        assert!(msg.starts_with("does not fit: needs 142.8 GB more") && msg.contains("GB free;"), "{msg}");
    }

    #[test]
    fn peak_of_plans_is_each_part_max() {
        let a = Footprint { weight_bytes: 5, kv_bytes: 1, arena_bytes: 9, scratch_bytes: 0, workspace_bytes: 2 };
        let b = Footprint { weight_bytes: 5, kv_bytes: 3, arena_bytes: 4, scratch_bytes: 7, workspace_bytes: 2 };
        let p = a.max(b);
        assert_eq!((p.kv_bytes, p.arena_bytes, p.scratch_bytes), (3, 9, 7));
        assert_eq!(p.total_bytes(), 5 + 3 + 9 + 7 + 2);
    }

    #[test]
    fn scratch_covers_the_largest_op() {
        let cfg = crate::model::tests_support::tiny_mla_moe();
        let layout = crate::plan::RankLayout::single();
        let plan =
            crate::model::build_plan(&cfg, layout, crate::plan::Shape::prefill(2, 5), Default::default()).unwrap();
        let mem = plan_memory(&plan, Target::H200);
        let moe = plan.ops.iter().find(|p| matches!(p.op, crate::plan::Op::Moe { .. })).expect("a MoE op");
        let (_, moe_bytes) = crate::exec::cuda::kernels::moe::MoeScratch::of(&plan, &moe.op);
        assert!(moe_bytes > 0 && mem.scratch_bytes >= moe_bytes);
        assert_eq!(mem.scratch_bytes % ALIGN, 0);
        assert_eq!(mem.workspace_bytes, CUBLASLT_WORKSPACE_BYTES);
        let parts = mem.weight_bytes + mem.kv_bytes + mem.arena_bytes + mem.scratch_bytes + mem.workspace_bytes;
        assert_eq!(mem.footprint().total_bytes(), parts as u64);
    }
}
