//! The memory planner: weights, KV caches and one activation arena whose buffers are
//! reused once their last reader has run, so a whole forward has fixed addresses (and
//! can be captured into a CUDA graph) and "does it fit?" is known before any allocation.

use serde::Serialize;

use super::{Plan, TensorId};

/// Usable memory of one H200 (143771 MiB as the driver reports it).
pub const H200_BYTES: u64 = 143_771 * 1024 * 1024;
/// Kept free for the CUDA context, cuBLASLt and NCCL workspaces and kernel scratch.
pub const RESERVED_BYTES: u64 = 3 * 1024 * 1024 * 1024;
const ALIGN: usize = 256;

#[derive(Debug, Clone, Serialize)]
pub struct MemoryPlan {
    /// Byte offset of every activation in the arena.
    pub offsets: Vec<usize>,
    pub arena_bytes: usize,
    pub weight_bytes: usize,
    pub kv_bytes: usize,
}

impl MemoryPlan {
    pub fn total_bytes(&self) -> u64 {
        (self.arena_bytes + self.weight_bytes + self.kv_bytes) as u64
    }
    pub fn fits(&self, capacity: u64) -> bool {
        self.total_bytes() + RESERVED_BYTES <= capacity
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

pub fn plan_memory(plan: &Plan) -> MemoryPlan {
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
        let mem = plan_memory(&plan);
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
}
