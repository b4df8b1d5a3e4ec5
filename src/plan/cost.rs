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
//! routed experts, the expected number of distinct experts a batch touches.

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
            // Reads every visible cached key/value once per sequence, writes the new ones.
            let context = plan.shape.context() as f64;
            c.kv_bytes = plan.local_batch as f64 * (context + plan.shape.new_tokens_per_seq() as f64) * per_token;
            c.act_bytes = view_bytes(plan, q) + view_bytes(plan, out);
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
    let experts = cfg.moe.as_ref().map(|m| m.num_experts).unwrap_or(0);
    let per_op: Vec<OpCost> = plan.ops.iter().map(|p| op_cost(plan, &p.op, experts)).collect();
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
        let (_, t) = plan_cost(plan, cfg);
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
