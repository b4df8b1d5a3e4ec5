//! The routing that actually ran: after a shape's timed region, one more forward op by op,
//! reading each MoE layer's expert ids back right after its `Op::Moe` ran (the ids
//! `moe_align` groups; the arena reuses their buffer later in the forward). Counts turn
//! into the experts touched, the most-loaded expert, and the MoE bytes of the row
//! (`plan::cost::ExpertLoad`). Any executor: the CPU reference reports the same counts.

use crate::exec::Executor;
use crate::plan::cost::ExpertLoad;
use crate::plan::Op;

/// Runs the bound plan of `exec` once, op by op, and counts every MoE layer's routing.
/// Every rank of a multi-rank run must call it together (the forward has collectives).
/// `None` for a plan without MoE (nothing runs).
pub fn measure_expert_load(exec: &mut dyn Executor, num_experts: usize) -> anyhow::Result<Option<ExpertLoad>> {
    let moe_ids: Vec<(usize, crate::plan::TensorId)> = exec
        .plan()
        .ops
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match &p.op {
            Op::Moe { ids, .. } => Some((i, ids.id)),
            _ => None,
        })
        .collect();
    if moe_ids.is_empty() {
        return Ok(None);
    }
    let mut load = ExpertLoad::default();
    let mut next = moe_ids.iter().peekable();
    for i in 0..exec.plan().ops.len() {
        exec.run_op(i)?;
        if let Some(&(_, ids)) = next.next_if(|(at, _)| *at == i) {
            load.layers.push(ExpertLoad::count_layer(&exec.read_tensor(ids)?, num_experts));
        }
    }
    Ok(Some(load))
}
