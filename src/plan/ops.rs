//! Plan ops. Each variant is one kernel family (or one collective); the CPU reference,
//! the CUDA executor and the cost model implement every variant, under the same name.

use serde::Serialize;

use super::{CacheId, Plan, TensorId, View, WeightId};
use crate::config::model::{Activation, NormKind, RopeConfig, RouterConfig};

/// The ranks a collective spans (see `RankLayout::group_ranks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    World,
    /// The ranks sharing one attention tensor-parallel group (all ranks when dp = 1).
    AttnTp,
    /// One rank per data-parallel group, with the same attention-TP rank.
    DpPeers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectiveDim {
    /// Concatenate/split along rows (tokens).
    Rows,
    /// Concatenate/split along columns (vocab shards of the logits).
    Cols,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Collective {
    /// Sum in place over the group.
    AllReduce,
    /// `out` = the group's inputs concatenated in rank order.
    AllGather(CollectiveDim),
    /// Sum over the group, then each rank keeps its row block of the sum.
    ReduceScatterRows,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `out[t] = scale * table[ids[t] - vocab_start]` (0 outside this rank's vocab rows),
    /// plus `pos_table[position[t]]` for learned positions.
    Embed { out: View, table: WeightId, vocab_start: usize, pos_table: Option<WeightId>, scale: f32 },
    /// `x += delta` in place when `delta` is set (the residual add), then `out = norm(x)`.
    Norm { x: View, delta: Option<View>, weight: WeightId, bias: Option<WeightId>, kind: NormKind, eps: f32, out: View },
    /// `out = alpha * x . W^T + bias`, W `[n, k]`; out may be bf16 or f32.
    Linear { x: View, weight: WeightId, bias: Option<WeightId>, alpha: f32, out: View },
    /// In place: `x += bias` then the activation (GPT's fc1 when not fused into the GEMM).
    BiasAct { x: View, bias: Option<WeightId>, act: Activation },
    /// `out = act(x[:, :n]) * x[:, n:2n]` with `n = out.cols`.
    ActMul { x: View, out: View, act: Activation },
    /// `acc += (gate ? sigmoid(gate) : 1) * x` (row-wise gate, one column).
    Add { acc: View, x: View, gate: Option<View> },
    /// Per-head RMSNorm in place (QK-norm): `heads` blocks of `head_dim` columns.
    HeadNorm { x: View, heads: usize, head_dim: usize, weight: WeightId, eps: f32 },
    /// Rotary embedding in place on `heads` heads spaced `head_stride` apart; each head's
    /// rotary part starts `rope_offset` columns into the head. Positions: `Plan::positions`.
    Rope { x: View, heads: usize, head_stride: usize, rope_offset: usize, rope: RopeConfig },
    /// Writes this forward's K `[tokens, k_heads * d_k]` and V `[tokens, v_heads * d_v]`
    /// into `cache` at the positions after `past` (its own op, as a serving engine's cache
    /// store is its own kernel, so the attention row times attention alone).
    KvCacheWrite { k: View, v: View, cache: CacheId },
    /// Causal attention over the cache (this forward's K/V already written by the
    /// `KvCacheWrite` before it): each query attends to every cached key up to its own
    /// position. Query head h uses K head `h*k_heads/q_heads`, V head `h*v_heads/q_heads`.
    Attention {
        q: View,
        cache: CacheId,
        out: View,
        q_heads: usize,
        k_heads: usize,
        v_heads: usize,
        d_qk: usize,
        d_v: usize,
        scale: f32,
        softcap: Option<f32>,
    },
    /// MLA: write `[latent ; k_pe]` (576 wide for V3) into the latent cache.
    MlaCacheWrite { latent: View, k_pe: View, cache: CacheId },
    /// MLA in MHA form (prefill): keys `[k_nope_h ; k_pe]` and values from the expanded
    /// `kv` `[tokens, heads * (d_nope + d_v)]`; q `[tokens, heads * (d_nope + d_rope)]`.
    MlaPrefillAttention {
        q: View,
        kv: View,
        k_pe: View,
        out: View,
        heads: usize,
        d_nope: usize,
        d_rope: usize,
        d_v: usize,
        scale: f32,
    },
    /// MLA absorbed form (decode): query `[q_lat_h ; q_pe_h]` against the cached
    /// `[c_kv ; k_pe]`, value = cached `c_kv`; out `[tokens, heads * kv_lora_rank]`.
    MlaDecodeAttention {
        q_lat: View,
        q_pe: View,
        q_pe_stride: usize,
        cache: CacheId,
        out: View,
        heads: usize,
        kv_lora_rank: usize,
        d_rope: usize,
        scale: f32,
    },
    /// Per-head matmul with a `[heads, a, b]` weight: `out_h = x_h . W_h` (`x_h` has `a`
    /// values, `out_h` has `b`), or `x_h . W_h^T` when `transpose` (`x_h` has `b`, `out_h` `a`).
    /// `x_stride`: columns between consecutive heads of x (>= the head's width).
    HeadMatmul { x: View, x_stride: usize, weight: WeightId, heads: usize, transpose: bool, out: View },
    /// Router: fp32 logits `x . W^T` (W `[experts, hidden]`, fp32), then top-k selection
    /// and weights per `router` into `ids` (i32 `[T, k]`) and `weights` (f32 `[T, k]`).
    Route {
        x: View,
        weight: WeightId,
        correction_bias: Option<WeightId>,
        logits: View,
        ids: View,
        weights: View,
        router: RouterConfig,
        top_k: usize,
        /// Which experts the ids name: the router's top-k, or a replacement (the weights
        /// stay the router's, so the work is the same).
        choice: ExpertChoice,
    },
    /// Routed experts on this rank: `out[t] = sum_j w[t,j] * expert_{ids[t,j]}(x[t])` over
    /// the selected experts in `[expert_start, expert_start + local_experts)`.
    /// `w13` `[local, 2*inter, hidden]` (gate rows then up rows), `w2` `[local, hidden, inter]`.
    Moe {
        x: View,
        ids: View,
        weights: View,
        w13: WeightId,
        w2: WeightId,
        expert_start: usize,
        local_experts: usize,
        top_k: usize,
        inter: usize,
        act: Activation,
        out: View,
        /// The model's routed expert count (all ranks), which sets the expected rows per
        /// expert and so the kernels' tile size.
        experts_total: usize,
    },
    /// `out[i] = x[rows[i]]`.
    GatherRows { x: View, rows: Vec<usize>, out: View },
    /// A collective over `group`. AllReduce works in place on `x` (`out == x`).
    Collective { kind: Collective, group: Group, x: View, out: View },
}

impl Op {
    /// Short kernel-family name, the same in profiles, the cost model and `fwdbench kernel`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Op::Embed { .. } => "embed",
            Op::Norm { .. } => "norm",
            Op::Linear { .. } => "linear",
            Op::BiasAct { .. } => "bias_act",
            Op::ActMul { .. } => "act_mul",
            Op::Add { .. } => "add",
            Op::HeadNorm { .. } => "head_norm",
            Op::Rope { .. } => "rope",
            Op::KvCacheWrite { .. } => "kv_cache_write",
            Op::Attention { .. } => "attention",
            Op::MlaCacheWrite { .. } => "mla_cache_write",
            Op::MlaPrefillAttention { .. } => "mla_prefill_attention",
            Op::MlaDecodeAttention { .. } => "mla_decode_attention",
            Op::HeadMatmul { .. } => "head_matmul",
            Op::Route { .. } => "route",
            Op::Moe { .. } => "moe",
            Op::GatherRows { .. } => "gather_rows",
            Op::Collective { kind: Collective::AllReduce, .. } => "all_reduce",
            Op::Collective { kind: Collective::AllGather(_), .. } => "all_gather",
            Op::Collective { kind: Collective::ReduceScatterRows, .. } => "reduce_scatter",
        }
    }

    /// The op family: one stem names it in the plan, `exec/cpu/ops/<stem>.rs`,
    /// `exec/cuda/kernels/<stem>.rs` and `kernels/<stem>.cu` (cuBLASLt ops have no .cu,
    /// attention splits its kernels into `attention_prefill` and `attention_decode`).
    pub fn family(&self) -> &'static str {
        match self {
            Op::Embed { .. } => "embed",
            Op::Norm { .. } | Op::HeadNorm { .. } => "norm",
            Op::Linear { .. } | Op::HeadMatmul { .. } => "linear",
            Op::BiasAct { .. } | Op::ActMul { .. } | Op::Add { .. } => "act",
            Op::Rope { .. } => "rope",
            Op::KvCacheWrite { .. } | Op::Attention { .. } => "attention",
            Op::MlaCacheWrite { .. } | Op::MlaPrefillAttention { .. } | Op::MlaDecodeAttention { .. } => "mla",
            Op::Route { .. } => "route",
            Op::Moe { .. } => "moe",
            Op::GatherRows { .. } => "misc",
            Op::Collective { .. } => "collective",
        }
    }

    /// Tensors this op reads.
    pub fn inputs(&self) -> Vec<TensorId> {
        let v = |x: &View| x.id;
        match self {
            Op::Embed { .. } => vec![],
            Op::Norm { x, delta, .. } => std::iter::once(x.id).chain(delta.map(|d| d.id)).collect(),
            Op::Linear { x, .. } | Op::BiasAct { x, .. } | Op::ActMul { x, .. } => vec![v(x)],
            Op::Add { acc, x, gate } => [acc.id, x.id].into_iter().chain(gate.map(|g| g.id)).collect(),
            Op::HeadNorm { x, .. } | Op::Rope { x, .. } => vec![v(x)],
            Op::KvCacheWrite { k, v: vv, .. } => vec![k.id, vv.id],
            Op::Attention { q, .. } => vec![q.id],
            Op::MlaCacheWrite { latent, k_pe, .. } => vec![latent.id, k_pe.id],
            Op::MlaPrefillAttention { q, kv, k_pe, .. } => vec![q.id, kv.id, k_pe.id],
            Op::MlaDecodeAttention { q_lat, q_pe, .. } => vec![q_lat.id, q_pe.id],
            Op::HeadMatmul { x, .. } => vec![v(x)],
            Op::Route { x, .. } => vec![v(x)],
            Op::Moe { x, ids, weights, .. } => vec![x.id, ids.id, weights.id],
            Op::GatherRows { x, .. } => vec![v(x)],
            Op::Collective { x, .. } => vec![v(x)],
        }
    }

    /// Tensors this op writes (in-place ops write their input).
    pub fn outputs(&self) -> Vec<TensorId> {
        match self {
            Op::Embed { out, .. }
            | Op::Linear { out, .. }
            | Op::ActMul { out, .. }
            | Op::Attention { out, .. }
            | Op::MlaPrefillAttention { out, .. }
            | Op::MlaDecodeAttention { out, .. }
            | Op::HeadMatmul { out, .. }
            | Op::Moe { out, .. }
            | Op::GatherRows { out, .. }
            | Op::Collective { out, .. } => vec![out.id],
            Op::Norm { x, delta, out, .. } => {
                if delta.is_some() {
                    vec![x.id, out.id]
                } else {
                    vec![out.id]
                }
            }
            Op::BiasAct { x, .. } | Op::HeadNorm { x, .. } | Op::Rope { x, .. } => vec![x.id],
            Op::Add { acc, .. } => vec![acc.id],
            Op::KvCacheWrite { .. } | Op::MlaCacheWrite { .. } => vec![],
            Op::Route { logits, ids, weights, .. } => vec![logits.id, ids.id, weights.id],
        }
    }

    /// Weights this op reads.
    pub fn weights(&self) -> Vec<WeightId> {
        match self {
            Op::Embed { table, pos_table, .. } => std::iter::once(*table).chain(*pos_table).collect(),
            Op::Norm { weight, bias, .. } | Op::Linear { weight, bias, .. } => {
                std::iter::once(*weight).chain(*bias).collect()
            }
            Op::BiasAct { bias, .. } => bias.iter().copied().collect(),
            Op::HeadNorm { weight, .. } | Op::HeadMatmul { weight, .. } => vec![*weight],
            Op::Route { weight, correction_bias, .. } => std::iter::once(*weight).chain(*correction_bias).collect(),
            Op::Moe { w13, w2, .. } => vec![*w13, *w2],
            _ => vec![],
        }
    }
}

/// One id an op refers to, handed out mutably by [`Op::visit_ids_mut`].
pub enum IdRef<'a> {
    Tensor(&'a mut TensorId),
    Weight(&'a mut WeightId),
    Cache(&'a mut CacheId),
}

impl Op {
    /// Calls `f` on every tensor (each view's), weight and cache id of the op, in field
    /// order; `Plan::extract_op` collects and remaps ids with it. Every variant and field is
    /// named (no `..`), so a new variant or id field does not compile until it is visited.
    pub fn visit_ids_mut(&mut self, f: &mut dyn FnMut(IdRef<'_>)) {
        let t = |v: &mut View, f: &mut dyn FnMut(IdRef<'_>)| f(IdRef::Tensor(&mut v.id));
        let w = |id: &mut WeightId, f: &mut dyn FnMut(IdRef<'_>)| f(IdRef::Weight(id));
        match self {
            Op::Embed { out, table, vocab_start: _, pos_table, scale: _ } => {
                t(out, f);
                w(table, f);
                pos_table.iter_mut().for_each(|p| w(p, f));
            }
            Op::Norm { x, delta, weight, bias, kind: _, eps: _, out } => {
                t(x, f);
                delta.iter_mut().for_each(|d| t(d, f));
                w(weight, f);
                bias.iter_mut().for_each(|b| w(b, f));
                t(out, f);
            }
            Op::Linear { x, weight, bias, alpha: _, out } => {
                t(x, f);
                w(weight, f);
                bias.iter_mut().for_each(|b| w(b, f));
                t(out, f);
            }
            Op::BiasAct { x, bias, act: _ } => {
                t(x, f);
                bias.iter_mut().for_each(|b| w(b, f));
            }
            Op::ActMul { x, out, act: _ } => {
                t(x, f);
                t(out, f);
            }
            Op::Add { acc, x, gate } => {
                t(acc, f);
                t(x, f);
                gate.iter_mut().for_each(|g| t(g, f));
            }
            Op::HeadNorm { x, heads: _, head_dim: _, weight, eps: _ } => {
                t(x, f);
                w(weight, f);
            }
            Op::Rope { x, heads: _, head_stride: _, rope_offset: _, rope: _ } => t(x, f),
            Op::KvCacheWrite { k, v, cache } => {
                t(k, f);
                t(v, f);
                f(IdRef::Cache(cache));
            }
            Op::Attention {
                q,
                cache,
                out,
                q_heads: _,
                k_heads: _,
                v_heads: _,
                d_qk: _,
                d_v: _,
                scale: _,
                softcap: _,
            } => {
                t(q, f);
                f(IdRef::Cache(cache));
                t(out, f);
            }
            Op::MlaCacheWrite { latent, k_pe, cache } => {
                t(latent, f);
                t(k_pe, f);
                f(IdRef::Cache(cache));
            }
            Op::MlaPrefillAttention { q, kv, k_pe, out, heads: _, d_nope: _, d_rope: _, d_v: _, scale: _ } => {
                [q, kv, k_pe, out].into_iter().for_each(|x| t(x, f));
            }
            Op::MlaDecodeAttention {
                q_lat,
                q_pe,
                q_pe_stride: _,
                cache,
                out,
                heads: _,
                kv_lora_rank: _,
                d_rope: _,
                scale: _,
            } => {
                t(q_lat, f);
                t(q_pe, f);
                f(IdRef::Cache(cache));
                t(out, f);
            }
            Op::HeadMatmul { x, x_stride: _, weight, heads: _, transpose: _, out } => {
                t(x, f);
                w(weight, f);
                t(out, f);
            }
            Op::Route { x, weight, correction_bias, logits, ids, weights, router: _, top_k: _, choice: _ } => {
                t(x, f);
                w(weight, f);
                correction_bias.iter_mut().for_each(|b| w(b, f));
                [logits, ids, weights].into_iter().for_each(|x| t(x, f));
            }
            Op::Moe {
                x,
                ids,
                weights,
                w13,
                w2,
                expert_start: _,
                local_experts: _,
                top_k: _,
                inter: _,
                act: _,
                out,
                experts_total: _,
            } => {
                [x, ids, weights].into_iter().for_each(|v| t(v, f));
                w(w13, f);
                w(w2, f);
                t(out, f);
            }
            Op::GatherRows { x, rows: _, out } => {
                t(x, f);
                t(out, f);
            }
            Op::Collective { kind: _, group: _, x, out } => {
                t(x, f);
                t(out, f);
            }
        }
    }
}

/// `--routing` (conf key `routing`): where a benchmark's tokens go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutingMode {
    /// The router as computed.
    #[default]
    Model,
    /// Every expert gets exactly its share of the `tokens * top_k` choices (what a
    /// well-trained router with load balancing gives).
    Balanced,
    /// Seeded uniform random top-k, distinct per token.
    Uniform,
}

impl RoutingMode {
    pub const NAMES: [&'static str; 3] = ["model", "balanced", "uniform"];

    /// The name the flag, the conf key and the CSV's `routing` column use.
    pub fn name(self) -> &'static str {
        match self {
            RoutingMode::Model => "model",
            RoutingMode::Balanced => "balanced",
            RoutingMode::Uniform => "uniform",
        }
    }

    /// Parses a flag or conf value; `None` for anything but the three names.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "model" => Some(RoutingMode::Model),
            "balanced" => Some(RoutingMode::Balanced),
            "uniform" => Some(RoutingMode::Uniform),
            _ => None,
        }
    }

    /// The choice one plan's route ops make: `seed` draws the uniform choice, `ep` (expert
    /// parallel groups) spreads the balanced remainder over the ranks.
    pub fn choice(self, seed: u64, ep: usize) -> ExpertChoice {
        match self {
            RoutingMode::Model => ExpertChoice::Router,
            RoutingMode::Balanced => ExpertChoice::Balanced { ep_groups: ep.max(1) },
            RoutingMode::Uniform => ExpertChoice::Uniform { seed },
        }
    }
}

/// What `Op::Route` writes into its ids after the router's top-k (exec/cpu/ops/route.rs
/// `replace_choice` states the rules; kernels/route.cu `moe_route_choice` does the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpertChoice {
    /// The router's top-k.
    #[default]
    Router,
    /// Slot `s = t*top_k + j` goes to the expert at position `s mod E` of an order that
    /// deals experts round-robin over `ep_groups` contiguous shards.
    Balanced { ep_groups: usize },
    /// Seeded uniform random top-k, distinct per token.
    Uniform { seed: u64 },
}

impl ExpertChoice {
    pub fn mode(self) -> RoutingMode {
        match self {
            ExpertChoice::Router => RoutingMode::Model,
            ExpertChoice::Balanced { .. } => RoutingMode::Balanced,
            ExpertChoice::Uniform { .. } => RoutingMode::Uniform,
        }
    }
}

impl Plan {
    /// Sets every route op of the plan to `mode` (seeded by `seed`, balanced over this
    /// plan's expert-parallel groups).
    pub fn set_routing(&mut self, mode: RoutingMode, seed: u64) {
        let choice = mode.choice(seed, self.layout.ep);
        for planned in &mut self.ops {
            if let Op::Route { choice: c, .. } = &mut planned.op {
                *c = choice;
            }
        }
    }

    /// The routing the plan's route ops make (`Model` for a plan without one).
    pub fn routing(&self) -> RoutingMode {
        self.ops
            .iter()
            .find_map(|p| match &p.op {
                Op::Route { choice, .. } => Some(choice.mode()),
                _ => None,
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::model::tests_support::{tiny_dense, tiny_mla_moe};
    use crate::model::{build_plan, PlanOptions};
    use crate::plan::{RankLayout, Shape};

    /// The files a family's stem names; cuBLASLt ops have no .cu, attention's kernels are
    /// split by phase, collectives are NCCL calls (no .cu).
    fn family_files(stem: &str) -> Vec<String> {
        let mut files = vec![format!("src/exec/cpu/ops/{stem}.rs")];
        match stem {
            "linear" | "collective" => files.push(format!("src/exec/cuda/kernels/{stem}.rs")),
            "attention" => files.extend(
                [
                    "src/exec/cuda/kernels/attention.rs",
                    "kernels/attention_fa3.cu",
                    "kernels/attention_prefill.cu",
                    "kernels/attention_decode.cu",
                ]
                .map(String::from),
            ),
            _ => files.extend([format!("src/exec/cuda/kernels/{stem}.rs"), format!("kernels/{stem}.cu")]),
        }
        files
    }

    #[test]
    fn every_family_stem_names_its_files() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut seen = std::collections::BTreeSet::new();
        let tp2 = crate::dist::rank_layouts(2, 1, 1).unwrap()[0];
        for cfg in [tiny_dense(), tiny_mla_moe()] {
            for shape in [Shape::prefill(2, 5), Shape::decode(2, 5)] {
                for layout in [RankLayout::single(), tp2] {
                    let plan = build_plan(&cfg, layout, shape, PlanOptions::default()).unwrap();
                    seen.extend(plan.ops.iter().map(|p| p.op.family()));
                }
            }
        }
        for stem in ["embed", "norm", "linear", "act", "rope", "attention", "mla", "route", "moe", "misc"] {
            assert!(seen.contains(stem), "no tiny plan has a {stem} op");
        }
        for stem in seen.iter().copied() {
            for f in family_files(stem) {
                assert!(root.join(&f).is_file(), "family {stem}: {f} is missing");
            }
        }
    }
}
