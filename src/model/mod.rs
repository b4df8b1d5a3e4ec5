//! Layer graphs of the model families. Each family file says, in its own names, what one
//! decoder layer does; `decoder` below is the skeleton they share (embedding, pre-norm
//! residual stream, the collectives between blocks, final norm, LM head).

pub mod blocks;
pub mod builder;
mod deepseek;
mod gpt3;
mod grok;
mod llama;
mod mixtral;
mod qwen;
mod sigma;

use thiserror::Error;

use crate::config::model::{Family, ModelConfig, NormKind};
use crate::plan::{Collective, CollectiveDim, DType, Group, Init, Op, Plan, RankLayout, Shape, View};
pub use builder::{Builder, Hf, PlanOptions};

/// Init scales: weights like a trained model's (std 0.02), norm weights near one.
pub const WEIGHT_INIT: Init = Init { mean: 0.0, std: 0.02 };
pub const NORM_INIT: Init = Init { mean: 1.0, std: 0.02 };

#[derive(Debug, Error)]
pub enum PlanError {
    #[error("{what} ({value}) is not divisible by {by_what} ({by}); {}", divisibility_hint(.what))]
    NotDivisible { what: &'static str, value: usize, by_what: &'static str, by: usize },
    #[error(
        "sequence length {seq} exceeds the model's max_position_embeddings ({max}) for its learned position table"
    )]
    TooLong { seq: usize, max: usize },
    #[error("shape has zero {0}: batch and sequence length must be at least 1")]
    Empty(&'static str),
    #[error("{what} {value} is above fwdbench's limit of {limit}; use a smaller --bsz / --seq or shapes file")]
    TooLarge { what: &'static str, value: usize, limit: usize },
}

/// Where the norm weights of a slot live in the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormSlot {
    Input,
    /// Grok: RMSNorm on the attention output before the residual add.
    PostAttnBranch,
    PreFfn,
    /// Grok: RMSNorm on the MoE output before the residual add.
    PostFfnBranch,
    Final,
}

/// What a family supplies to the shared decoder skeleton.
/// The embedding, LM head and norm names default to the Llama layout.
pub trait LayerGraph {
    fn config(&self) -> &ModelConfig;
    fn embed_table(&self) -> Hf {
        llama::embed_tokens(self.config())
    }
    /// Learned absolute positions (GPT).
    fn pos_table(&self) -> Option<Hf> {
        None
    }
    /// Separate LM head; None when tied to the embedding.
    fn lm_head(&self) -> Option<Hf> {
        llama::lm_head(self.config())
    }
    /// HF names of a norm's weight and (LayerNorm) bias.
    fn norm(&self, layer: Option<usize>, slot: NormSlot) -> (String, Option<String>) {
        llama::llama_norm(layer, slot)
    }
    fn attention(&self, b: &mut Builder, layer: usize, x: View) -> View;
    fn ffn(&self, b: &mut Builder, layer: usize, x: View) -> View;
}

fn graph_for(cfg: &ModelConfig) -> Box<dyn LayerGraph + '_> {
    match cfg.family {
        Family::Gpt3 => Box::new(gpt3::Gpt3(cfg)),
        Family::Grok1 => Box::new(grok::Grok1(cfg)),
        Family::Qwen2 | Family::Qwen3 | Family::Qwen2Moe | Family::Qwen3Moe => Box::new(qwen::Qwen(cfg)),
        Family::DeepseekV3 => Box::new(deepseek::DeepSeek(cfg)),
        Family::SigmaV2 | Family::SigmaV1 => Box::new(sigma::Sigma(cfg)),
        Family::Llama => Box::new(llama::Llama(cfg)),
        Family::Mixtral => Box::new(mixtral::Mixtral(cfg)),
    }
}

/// Vocab rows each rank of the attention-TP group holds: the vocab padded to a multiple
/// of 64 (as SGLang pads), split evenly.
pub fn vocab_shard(vocab: usize, attn_tp: usize) -> usize {
    vocab.div_ceil(64 * attn_tp) * 64
}

/// What to change when a size does not divide: the batch comes from the grid, head and expert
/// counts from the model config, the widths from the deployment.
fn divisibility_hint(what: &str) -> &'static str {
    if what == "batch size" {
        "under DP attention each rank serves batch / dp_size sequences: use batch sizes that are multiples of dp_size (--bsz, or the --shapes grid)"
    } else {
        "the head and expert counts come from the model config (config_<mconf>.json or --set), the widths from the deployment (--deploy, or --conf tp_size / ep_size / dp_size): choose a deployment whose widths divide the model's counts"
    }
}

/// Tokens all sequences of one forward may hold in their KV caches together (the
/// seed's largest grids reach 256 x 8192 = 2M).
pub const MAX_CACHED_TOKENS: usize = 1 << 28;

/// Checks that the deployment can shard this model; one clear error otherwise.
pub fn check_layout(cfg: &ModelConfig, layout: &RankLayout, shape: &Shape) -> Result<(), PlanError> {
    use crate::config::model::AttentionConfig;
    let div = |what, value: usize, by_what, by: usize| {
        if by == 0 || !value.is_multiple_of(by) {
            Err(PlanError::NotDivisible { what, value, by_what, by })
        } else {
            Ok(())
        }
    };
    if shape.batch == 0 {
        return Err(PlanError::Empty("batch"));
    }
    if shape.seq == 0 && shape.phase == crate::plan::Phase::Prefill {
        return Err(PlanError::Empty("sequence length"));
    }
    // Bounded before anything is sized from the shape (checked products: no wrap-around).
    use crate::config::shapes::{MAX_BATCH, MAX_SEQ, MAX_TOKENS};
    let too_large = |what, value: usize, limit: usize| {
        if value > limit {
            Err(PlanError::TooLarge { what, value, limit })
        } else {
            Ok(())
        }
    };
    too_large("batch size", shape.batch, MAX_BATCH)?;
    too_large("sequence length", shape.seq, MAX_SEQ)?;
    let tokens = shape.batch.saturating_mul(shape.new_tokens_per_seq());
    too_large("tokens per forward (batch x new tokens)", tokens, MAX_TOKENS)?;
    let cached = shape.batch.saturating_mul(shape.context());
    too_large("cached tokens (batch x context)", cached, MAX_CACHED_TOKENS)?;
    div("batch size", shape.batch, "dp_size", layout.dp)?;
    let kv_div = |heads: usize, what| {
        if layout.attn_tp >= heads {
            div("attention TP width", layout.attn_tp, what, heads)
        } else {
            div(what, heads, "attention TP width", layout.attn_tp)
        }
    };
    match &cfg.attention {
        AttentionConfig::Gqa(a) => {
            div("attention heads", a.num_heads, "attention TP width", layout.attn_tp)?;
            kv_div(a.num_kv_heads, "key/value heads")?;
        }
        AttentionConfig::DiffQkv(a) => {
            div("attention heads", a.num_heads, "attention TP width", layout.attn_tp)?;
            kv_div(a.num_k_heads, "key heads")?;
            kv_div(a.num_v_heads, "value heads")?;
        }
        AttentionConfig::Mla(a) => div("attention heads", a.num_heads, "attention TP width", layout.attn_tp)?,
    }
    if let Some(mlp) = &cfg.mlp {
        div("intermediate_size", mlp.intermediate_size, "world size", layout.world)?;
    }
    if let Some(moe) = &cfg.moe {
        div("routed experts", moe.num_experts, "ep_size", layout.ep)?;
        div("moe_intermediate_size", moe.expert_intermediate_size, "tp_size / ep_size", layout.moe_tp)?;
        if let Some(shared) = &moe.shared {
            div("shared expert intermediate size", shared.intermediate_size, "world size", layout.world)?;
        }
    }
    if let Some(max) = cfg.learned_positions {
        if shape.context() > max {
            return Err(PlanError::TooLong { seq: shape.context(), max });
        }
    }
    Ok(())
}

/// The plan of one forward of `cfg` on one rank.
pub fn build_plan(cfg: &ModelConfig, layout: RankLayout, shape: Shape, opts: PlanOptions) -> Result<Plan, PlanError> {
    check_layout(cfg, &layout, &shape)?;
    let graph = graph_for(cfg);
    let mut b = Builder::new(cfg, layout, shape, opts);
    let hidden = cfg.hidden_size;
    let tokens = b.attn_tokens();
    let new_per_seq = shape.new_tokens_per_seq();
    let positions: Vec<usize> = (0..tokens).map(|t| shape.past() + t % new_per_seq).collect();
    let input_ids = b.tensor("input_ids", tokens, 1, DType::I32).id;

    // Embedding: vocab rows split over the attention-TP group, summed by an all-reduce.
    let shard = vocab_shard(cfg.vocab_size, layout.attn_tp);
    let vocab_start = layout.attn_tp_rank() * shard;
    let table_hf = graph.embed_table();
    let real = cfg.vocab_size.saturating_sub(vocab_start).min(shard);
    let table_pieces = if real > 0 { vec![table_hf.rows_at(vocab_start, real, 0, 0)] } else { vec![] };
    let table = b.weight("embed.tokens", [1, shard, hidden], DType::BF16, table_pieces);
    // Positions are added once per group, before the vocab-parallel all-reduce.
    let pos_table = graph
        .pos_table()
        .filter(|_| layout.attn_tp_rank() == 0)
        .map(|hf| b.weight("embed.positions", [1, hf.rows, hidden], DType::BF16, vec![hf.whole()]));
    let resid = b.act("embed", tokens, hidden);
    b.op("embed", Op::Embed { out: resid, table, vocab_start, pos_table, scale: cfg.embedding_scale });
    if layout.attn_tp > 1 {
        b.op(
            "embed.all_reduce",
            Op::Collective { kind: Collective::AllReduce, group: Group::AttnTp, x: resid, out: resid },
        );
    }

    let mut pending: Option<View> = None;
    for layer in 0..cfg.num_layers {
        b.layer = Some(layer);
        let h = norm(&mut b, &*graph, Some(layer), NormSlot::Input, resid, pending, tokens);
        let mut a = graph.attention(&mut b, layer, h);
        if layout.attn_tp > 1 {
            b.op("attn.all_reduce", Op::Collective { kind: Collective::AllReduce, group: Group::AttnTp, x: a, out: a });
        }
        if cfg.post_branch_norms {
            a = norm(&mut b, &*graph, Some(layer), NormSlot::PostAttnBranch, a, None, tokens);
        }
        let h2 = norm(&mut b, &*graph, Some(layer), NormSlot::PreFfn, resid, Some(a), tokens);
        let ffn_in = if layout.dp > 1 {
            let full = b.act("ffn.dp_gather", b.ffn_tokens(), hidden);
            b.op(
                "ffn.dp_gather",
                Op::Collective {
                    kind: Collective::AllGather(CollectiveDim::Rows),
                    group: Group::DpPeers,
                    x: h2,
                    out: full,
                },
            );
            full
        } else {
            h2
        };
        let f = graph.ffn(&mut b, layer, ffn_in);
        let mut f = reduce_ffn(&mut b, f, tokens);
        if cfg.post_branch_norms {
            f = norm(&mut b, &*graph, Some(layer), NormSlot::PostFfnBranch, f, None, tokens);
        }
        pending = Some(f);
    }
    b.layer = None;
    let final_h = norm(&mut b, &*graph, None, NormSlot::Final, resid, pending, tokens);

    // LM head on the last position of each sequence (prefill) or every token (decode).
    let (head_in, logit_rows) = if shape.phase == crate::plan::Phase::Prefill && !opts.all_logits {
        let rows: Vec<usize> = (0..b.local_batch).map(|s| s * new_per_seq + new_per_seq - 1).collect();
        let out = b.act("lm_head.last_tokens", rows.len(), hidden);
        let logit_rows = (0..b.local_batch).map(|s| (s, new_per_seq - 1)).collect();
        b.op("lm_head.last_tokens", Op::GatherRows { x: final_h, rows, out });
        (out, logit_rows)
    } else {
        (final_h, (0..tokens).map(|t| (t / new_per_seq, t % new_per_seq)).collect())
    };
    let head = match graph.lm_head() {
        None => table,
        Some(hf) => {
            let pieces = if real > 0 { vec![hf.rows_at(vocab_start, real, 0, 0)] } else { vec![] };
            b.weight("lm_head", [1, shard, hidden], DType::BF16, pieces)
        }
    };
    let rows = b.rows(head_in);
    let local_logits = b.tensor("lm_head", rows, shard, DType::F32);
    b.op("lm_head", Op::Linear { x: head_in, weight: head, bias: None, alpha: cfg.output_scale, out: local_logits });
    let logits = if layout.attn_tp > 1 {
        let all = b.tensor("lm_head.gather", rows, shard * layout.attn_tp, DType::F32);
        b.op(
            "lm_head.gather",
            Op::Collective {
                kind: Collective::AllGather(CollectiveDim::Cols),
                group: Group::AttnTp,
                x: local_logits,
                out: all,
            },
        );
        all
    } else {
        local_logits
    };

    let local_batch = b.local_batch;
    let mut plan = Plan {
        model: cfg.architecture.clone(),
        shape,
        layout,
        tensors: b.tensors,
        weights: b.weights,
        caches: b.caches,
        ops: b.ops,
        input_ids,
        positions,
        logits: View { id: logits.id, col: 0, cols: cfg.vocab_size },
        logit_rows,
        first_sequence: layout.dp_rank() * local_batch,
        local_batch,
    };
    if cfg.quant == crate::quant::Quant::Fp8 {
        crate::plan::quantize_linear_weights(&mut plan);
    }
    Ok(plan)
}

fn norm(
    b: &mut Builder,
    graph: &dyn LayerGraph,
    layer: Option<usize>,
    slot: NormSlot,
    x: View,
    delta: Option<View>,
    rows: usize,
) -> View {
    let hidden = b.cfg.hidden_size;
    let (w_name, b_name) = graph.norm(layer, slot);
    let tag = match slot {
        NormSlot::Input => "input_norm",
        NormSlot::PostAttnBranch => "post_attn_norm",
        NormSlot::PreFfn => "pre_ffn_norm",
        NormSlot::PostFfnBranch => "post_ffn_norm",
        NormSlot::Final => "final_norm",
    };
    let weight = b.weight(tag, [1, 1, hidden], DType::BF16, vec![Hf::vector(w_name, hidden, NORM_INIT).whole()]);
    let bias = match (b.cfg.norm.kind, b_name) {
        (NormKind::LayerNorm, Some(name)) => Some(b.weight(
            &format!("{tag}_bias"),
            [1, 1, hidden],
            DType::BF16,
            vec![Hf::vector(name, hidden, WEIGHT_INIT).whole()],
        )),
        _ => None,
    };
    let out = b.act(tag, rows, hidden);
    b.op(tag, Op::Norm { x, delta, weight, bias, kind: b.cfg.norm.kind, eps: b.cfg.norm.eps, out });
    out
}

/// Sums the FFN's partial outputs over every rank and hands each rank its own tokens.
fn reduce_ffn(b: &mut Builder, f: View, tokens: usize) -> View {
    let layout = b.layout;
    if layout.world == 1 {
        return f;
    }
    if layout.dp == 1 {
        b.op("ffn.all_reduce", Op::Collective { kind: Collective::AllReduce, group: Group::World, x: f, out: f });
        return f;
    }
    let hidden = b.cfg.hidden_size;
    if layout.attn_tp == 1 {
        let mine = b.act("ffn.reduce_scatter", tokens, hidden);
        b.op(
            "ffn.reduce_scatter",
            Op::Collective { kind: Collective::ReduceScatterRows, group: Group::World, x: f, out: mine },
        );
        return mine;
    }
    b.op("ffn.all_reduce", Op::Collective { kind: Collective::AllReduce, group: Group::World, x: f, out: f });
    let first = layout.dp_rank() * tokens;
    let mine = b.act("ffn.dp_slice", tokens, hidden);
    b.op("ffn.dp_slice", Op::GatherRows { x: f, rows: (first..first + tokens).collect(), out: mine });
    mine
}

#[cfg(test)]
pub mod tests_support;
