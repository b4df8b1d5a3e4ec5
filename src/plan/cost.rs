//! The cost model: FLOPs and minimum bytes of every plan op, parameter counts, and the
//! figures `fwdbench count` prints. Conventions (models.md §8.3):
//! - linear layers count `2 * tokens * params`; the LM head only for the rows whose
//!   logits are computed (the last position of each sequence in a prefill);
//! - attention counts both matmuls, `2 * q_heads * (d_qk + d_v)` per (query, visible key)
//!   pair, with causal halving (`S(S+1)/2` pairs per prefill sequence);
//! - MoE counts the routed experts actually selected (`top_k` per token, the local share on
//!   this rank) plus the router `2 * T * H * E`;
//! - norms, activations, softmax and RoPE count bytes only.
//!
//! "Minimum bytes" reads every input and weight once and writes every output once; for
//! routed experts, the expected number of distinct experts a batch touches under uniform
//! routing, or, once a forward has run, the experts it actually touched ([`ExpertLoad`]):
//! real routers route unevenly, and the uniform guess then counts weights that were never
//! read (MBU above 100%).

use serde::Serialize;

use super::{Collective, Op, Phase, Plan, View};
use crate::config::model::{FfnKind, ModelConfig};

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct OpCost {
    pub flops: f64,
    /// Bytes of activations read and written.
    pub act_bytes: f64,
    /// Bytes of weights read.
    pub weight_bytes: f64,
    /// Bytes of KV cache read or written.
    pub kv_bytes: f64,
    /// Bytes this rank sends into a collective.
    pub comm_bytes: f64,
}

impl OpCost {
    pub fn bytes(&self) -> f64 {
        self.act_bytes + self.weight_bytes + self.kv_bytes
    }
    pub fn add(&mut self, o: &OpCost) {
        self.flops += o.flops;
        self.act_bytes += o.act_bytes;
        self.weight_bytes += o.weight_bytes;
        self.kv_bytes += o.kv_bytes;
        self.comm_bytes += o.comm_bytes;
    }
}

fn view_bytes(plan: &Plan, v: &View) -> f64 {
    let t = plan.tensor(v.id);
    (t.rows * v.cols * t.dtype.bytes()) as f64
}

/// Sum over this plan's sequences of the keys each new query sees.
fn visible_pairs(plan: &Plan) -> f64 {
    let s = plan.shape;
    let past = s.past() as f64;
    let n = s.new_tokens_per_seq() as f64;
    // queries at positions past .. past+n-1 see past+1 .. past+n keys.
    plan.local_batch as f64 * (n * past + n * (n + 1.0) / 2.0)
}

/// Expected distinct experts hit when `tokens` tokens each pick `k` of `e` experts.
fn expected_touched(e: usize, k: usize, tokens: usize) -> f64 {
    let miss = 1.0 - k as f64 / e as f64;
    e as f64 * (1.0 - miss.powf(tokens as f64))
}

/// Tokens each expert received in one forward, one row per `Op::Moe` of the plan in plan
/// order, indexed by global expert id (every rank routes every token, so each rank sees the
/// whole routing). Read back once per shape after the timed region (`bench::load`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ExpertLoad {
    pub layers: Vec<Vec<u32>>,
}

impl ExpertLoad {
    /// One layer's counts from its `[tokens, top_k]` ids (as f32, the executors' read-back);
    /// ids outside `0..num_experts` (none from a router) are not counted.
    pub fn count_layer(ids: &[f32], num_experts: usize) -> Vec<u32> {
        let mut counts = vec![0u32; num_experts];
        for &id in ids {
            if id >= 0.0 && (id as usize) < num_experts {
                counts[id as usize] += 1;
            }
        }
        counts
    }

    /// Experts with at least one token, the mean over layers (all experts, every rank's).
    pub fn experts_touched(&self) -> f64 {
        let touched: usize = self.layers.iter().map(|l| l.iter().filter(|&&c| c > 0).count()).sum();
        touched as f64 / self.layers.len().max(1) as f64
    }

    /// The most tokens any expert of any layer received.
    pub fn max_expert_tokens(&self) -> u32 {
        self.layers.iter().flatten().copied().max().unwrap_or(0)
    }
}

/// An `Op::Moe`'s cost from the tokens its experts actually received (`counts`, global
/// ids): FLOPs for the local (token, expert) pairs, weight bytes for the local experts with
/// at least one token, activations for the rows that ran.
pub fn moe_cost_from_counts(plan: &Plan, op: &Op, counts: &[u32]) -> OpCost {
    let Op::Moe { x, w13, w2, expert_start, local_experts, inter, out, .. } = op else {
        unreachable!("moe_cost_from_counts got {op:?}")
    };
    let local = &counts[(*expert_start).min(counts.len())..(expert_start + local_experts).min(counts.len())];
    let routed_local: f64 = local.iter().map(|&c| c as f64).sum();
    let touched = local.iter().filter(|&&c| c > 0).count() as f64;
    let hidden = plan.weight(*w2).rows;
    let per_expert = (plan.weight(*w13).bytes() + plan.weight(*w2).bytes()) as f64 / *local_experts as f64;
    OpCost {
        flops: routed_local * 6.0 * (hidden * inter) as f64,
        weight_bytes: touched * per_expert,
        act_bytes: view_bytes(plan, x) + view_bytes(plan, out) + routed_local * (3 * inter * 2) as f64,
        ..OpCost::default()
    }
}

pub fn op_cost(plan: &Plan, op: &Op, num_experts: usize) -> OpCost {
    let mut c = OpCost::default();
    let w_bytes = |id| plan.weight(id).read_bytes() as f64;
    match op {
        Op::Linear { x, weight, bias, out, .. } => {
            let w = plan.weight(*weight);
            let m = plan.rows(*x) as f64;
            c.flops = 2.0 * m * (w.rows * w.cols) as f64;
            c.weight_bytes = w_bytes(*weight) + bias.map(w_bytes).unwrap_or(0.0);
            c.act_bytes = view_bytes(plan, x) + view_bytes(plan, out);
        }
        Op::HeadMatmul { x, weight, out, .. } => {
            let w = plan.weight(*weight);
            c.flops = 2.0 * plan.rows(*x) as f64 * w.numel() as f64;
            c.weight_bytes = w_bytes(*weight);
            c.act_bytes = view_bytes(plan, x) + view_bytes(plan, out);
        }
        Op::Attention { q, out, cache, q_heads, d_qk, d_v, .. } => {
            let info = &plan.caches[cache.0];
            c.flops = 2.0 * (*q_heads * (d_qk + d_v)) as f64 * visible_pairs(plan);
            let per_token = ((info.k_elems_per_token() + info.v_elems_per_token()) * 2) as f64;
            // Reads every visible cached key/value once per sequence.
            c.kv_bytes = plan.local_batch as f64 * plan.shape.context() as f64 * per_token;
            c.act_bytes = view_bytes(plan, q) + view_bytes(plan, out);
        }
        Op::KvCacheWrite { k, v, .. } => {
            c.act_bytes = view_bytes(plan, k) + view_bytes(plan, v);
            c.kv_bytes = c.act_bytes;
        }
        Op::MlaPrefillAttention { q, kv, k_pe, out, heads, d_nope, d_rope, d_v, .. } => {
            c.flops = 2.0 * (*heads * (d_nope + d_rope + d_v)) as f64 * visible_pairs(plan);
            c.act_bytes = view_bytes(plan, q) + view_bytes(plan, kv) + view_bytes(plan, k_pe) + view_bytes(plan, out);
        }
        Op::MlaDecodeAttention { q_lat, out, cache, heads, kv_lora_rank, d_rope, .. } => {
            let info = &plan.caches[cache.0];
            c.flops = 2.0 * (*heads * (2 * kv_lora_rank + d_rope)) as f64 * visible_pairs(plan);
            c.kv_bytes = (plan.local_batch * plan.shape.context() * info.k_elems_per_token() * 2) as f64;
            c.act_bytes = 2.0 * view_bytes(plan, q_lat) + view_bytes(plan, out);
        }
        Op::MlaCacheWrite { latent, k_pe, .. } => {
            c.act_bytes = view_bytes(plan, latent) + view_bytes(plan, k_pe);
            c.kv_bytes = c.act_bytes;
        }
        Op::Route { x, weight, ids, weights, logits, .. } => {
            let w = plan.weight(*weight);
            c.flops = 2.0 * plan.rows(*x) as f64 * (w.rows * w.cols) as f64;
            c.weight_bytes = w_bytes(*weight);
            c.act_bytes =
                view_bytes(plan, x) + view_bytes(plan, logits) + view_bytes(plan, ids) + view_bytes(plan, weights);
        }
        Op::Moe { x, w13, w2, local_experts, top_k, inter, out, .. } => {
            let tokens = plan.rows(*x);
            let hidden = plan.weight(*w2).rows;
            let routed_local = tokens as f64 * *top_k as f64 * *local_experts as f64 / num_experts.max(1) as f64;
            c.flops = routed_local * 6.0 * (hidden * inter) as f64;
            let touched = expected_touched(num_experts.max(1), *top_k, tokens) * *local_experts as f64
                / num_experts.max(1) as f64;
            let per_expert = (w_bytes(*w13) + w_bytes(*w2)) / *local_experts as f64;
            c.weight_bytes = touched * per_expert;
            c.act_bytes = view_bytes(plan, x) + view_bytes(plan, out) + routed_local * (3 * inter * 2) as f64;
        }
        Op::Embed { out, pos_table, .. } => {
            let factor = if pos_table.is_some() { 3.0 } else { 2.0 };
            c.act_bytes = factor * view_bytes(plan, out);
        }
        Op::Norm { x, delta, weight, out, .. } => {
            let rw = if delta.is_some() { 3.0 } else { 1.0 };
            c.act_bytes = rw * view_bytes(plan, x) + view_bytes(plan, out);
            c.weight_bytes = w_bytes(*weight);
        }
        Op::ActMul { x, out, .. } => c.act_bytes = view_bytes(plan, x) + view_bytes(plan, out),
        Op::BiasAct { x, .. } | Op::HeadNorm { x, .. } | Op::Rope { x, .. } => c.act_bytes = 2.0 * view_bytes(plan, x),
        Op::Add { acc, x, .. } => c.act_bytes = 2.0 * view_bytes(plan, acc) + view_bytes(plan, x),
        Op::GatherRows { out, .. } => c.act_bytes = 2.0 * view_bytes(plan, out),
        Op::Collective { kind, x, .. } => {
            c.comm_bytes = view_bytes(plan, x);
            if *kind == Collective::AllReduce {
                c.act_bytes = 2.0 * view_bytes(plan, x);
            }
        }
    }
    c
}

/// Costs of a whole plan, per op and in total.
pub fn plan_cost(plan: &Plan, cfg: &ModelConfig) -> (Vec<OpCost>, OpCost) {
    plan_cost_with_load(plan, cfg, &ExpertLoad::default())
}

/// [`plan_cost`] with every `Op::Moe` costed from the routing that ran (`load`, one row per
/// MoE op); a plan whose MoE ops `load` does not cover keeps the uniform estimate for them.
pub fn plan_cost_with_load(plan: &Plan, cfg: &ModelConfig, load: &ExpertLoad) -> (Vec<OpCost>, OpCost) {
    let experts = cfg.moe.as_ref().map(|m| m.num_experts).unwrap_or(0);
    let mut layers = load.layers.iter();
    let per_op: Vec<OpCost> = plan
        .ops
        .iter()
        .map(|p| match (&p.op, matches!(p.op, Op::Moe { .. }).then(|| layers.next()).flatten()) {
            (op, Some(counts)) => moe_cost_from_counts(plan, op, counts),
            (op, None) => op_cost(plan, op, experts),
        })
        .collect();
    let mut total = OpCost::default();
    per_op.iter().for_each(|c| total.add(c));
    (per_op, total)
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ParamCount {
    pub total: f64,
    /// Parameters touched per token: every dense weight plus `top_k` routed experts.
    pub active: f64,
}

/// Parameter totals from a single-rank plan (every weight whole; tied embeddings once).
pub fn count_params(plan: &Plan, cfg: &ModelConfig) -> ParamCount {
    let total: f64 = plan.weights.iter().map(|w| w.real_numel() as f64).sum();
    let idle = match &cfg.moe {
        Some(m) => {
            let per_expert = 3.0 * (cfg.hidden_size * m.expert_intermediate_size) as f64;
            let moe_layers = cfg.layer_ffn.iter().filter(|k| **k == FfnKind::Moe).count() as f64;
            moe_layers * (m.num_experts - m.top_k) as f64 * per_expert
        }
        None => 0.0,
    };
    ParamCount { total, active: total - idle }
}

/// What a phase costs on this rank, and the bytes that bound it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PhaseCost {
    pub phase: Phase,
    pub flops: f64,
    pub weight_bytes: f64,
    pub kv_bytes: f64,
    pub act_bytes: f64,
    pub comm_bytes: f64,
}

impl PhaseCost {
    pub fn of(plan: &Plan, cfg: &ModelConfig) -> Self {
        Self::from_total(plan, plan_cost(plan, cfg).1)
    }

    /// As [`PhaseCost::of`], MoE ops costed from the routing that ran.
    pub fn with_load(plan: &Plan, cfg: &ModelConfig, load: &ExpertLoad) -> Self {
        Self::from_total(plan, plan_cost_with_load(plan, cfg, load).1)
    }

    fn from_total(plan: &Plan, t: OpCost) -> Self {
        PhaseCost {
            phase: plan.shape.phase,
            flops: t.flops,
            weight_bytes: t.weight_bytes,
            kv_bytes: t.kv_bytes,
            act_bytes: t.act_bytes,
            comm_bytes: t.comm_bytes,
        }
    }
    /// Bytes that count towards memory-bandwidth utilisation: weights and KV read.
    pub fn mbu_bytes(&self) -> f64 {
        self.weight_bytes + self.kv_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests_support::tiny_mla_moe;
    use crate::model::{build_plan, PlanOptions};
    use crate::plan::Shape;
    use proptest::prelude::*;

    /// Rank `rank`'s first MoE op of the tiny MLA-MoE model (8 experts, top-2) under ep 2.
    fn moe_op(rank: usize) -> (Plan, Op) {
        let layout = crate::dist::rank_layouts(2, 2, 1).unwrap()[rank];
        let plan = build_plan(&tiny_mla_moe(), layout, Shape::prefill(2, 6), PlanOptions::default()).unwrap();
        let op = plan.ops.iter().find(|p| matches!(p.op, Op::Moe { .. })).unwrap().op.clone();
        (plan, op)
    }

    #[test]
    fn counts_cost_only_this_ranks_experts() {
        // Rank 1 owns experts 4..8: the tokens of experts 0..4 cost it nothing.
        let (plan, op) = moe_op(1);
        let Op::Moe { expert_start, local_experts, w13, w2, .. } = &op else { unreachable!() };
        assert_eq!((*expert_start, *local_experts), (4, 4));
        let per_expert = (plan.weight(*w13).bytes() + plan.weight(*w2).bytes()) as f64 / 4.0;
        let c = moe_cost_from_counts(&plan, &op, &[5, 5, 5, 5, 0, 3, 0, 1]);
        assert_eq!(c.weight_bytes, 2.0 * per_expert);
        let idle = moe_cost_from_counts(&plan, &op, &[6, 6, 6, 6, 0, 0, 0, 0]);
        assert_eq!((idle.weight_bytes, idle.flops), (0.0, 0.0));
    }

    proptest! {
        /// Counted bytes never exceed the rank's experts' bytes, reach them when every local
        /// expert has a token, and count FLOPs for exactly the local (token, expert) pairs.
        #[test]
        fn counted_bytes_are_bounded_by_the_local_experts(
            counts in proptest::collection::vec(0u32..5, 8),
            rank in 0usize..2,
        ) {
            let (plan, op) = moe_op(rank);
            let Op::Moe { w13, w2, expert_start, inter, .. } = &op else { unreachable!() };
            let all_local = (plan.weight(*w13).bytes() + plan.weight(*w2).bytes()) as f64;
            let c = moe_cost_from_counts(&plan, &op, &counts);
            let local = &counts[*expert_start..expert_start + 4];
            prop_assert!(c.weight_bytes <= all_local);
            prop_assert_eq!(c.weight_bytes == all_local, local.iter().all(|&n| n > 0));
            let pairs: u32 = local.iter().sum();
            prop_assert_eq!(c.flops, pairs as f64 * 6.0 * (plan.weight(*w2).rows * inter) as f64);
        }
    }

    #[test]
    fn load_summary_is_the_mean_touched_and_the_max() {
        let load = ExpertLoad { layers: vec![vec![0, 3, 1, 0], vec![2, 2, 2, 2]] };
        assert_eq!(load.experts_touched(), 3.0);
        assert_eq!(load.max_expert_tokens(), 3);
        assert_eq!(ExpertLoad::count_layer(&[1.0, 3.0, 1.0, -1.0, 9.0], 4), vec![0, 2, 0, 1]);
    }
}
