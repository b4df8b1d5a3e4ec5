//! Grok-1 (models.md §2), in both config dialects.
//!
//! *SGLang* (`grok.py`; `model_type` often "mixtral" with a Grok architecture):
//! `num_local_experts` (required), `head_dim` (default 128), `moe_intermediate_size` else
//! `intermediate_size`, `attn_logit_softcapping` (default 30), `router_logit_softcapping`
//! (default 30, 0 = off), `embedding_multiplier_scale`, `output_multiplier_scale`
//! (required: SGLang reads them unconditionally), tied LM head only if
//! `tie_word_embeddings` (default false). `max_position_embeddings` or `context_len`.
//!
//! *hpcai-tech* (HF remote code, `model_type: "grok-1"`): `num_experts`,
//! `attn_output_multiplier` (the softmax scale), `max_attn_value` (the attention soft-cap,
//! default 30), head_dim `H/nq`, RoPE base 10000, tied embeddings by default, no router
//! soft-cap; the multipliers default to Grok-1's sqrt(6144) and 1/sqrt(3).
//!
//! Both: four RMSNorms per layer (`post_branch_norms`), every layer MoE, softmax router in
//! fp32 with no renormalisation, GELU-gated experts (`hidden_act`, default erf GELU as
//! SGLang and the hpcai port run it).

use super::common::{activation, check_gqa_heads, check_moe, gqa, head_dim, rms_norm, softmax_router, Dims, Ffn};
use super::keys::{Keys, Result};
use super::rope::parse_rope;
use crate::config::model::*;

/// A soft-cap value where 0 (or a negative) switches it off.
fn softcap(keys: &Keys, key: &str, default: Option<f64>) -> Result<Option<f32>> {
    let cap = keys.f64(key)?.or(default);
    match cap {
        Some(c) if !c.is_finite() => Err(keys.bad_value(key, c, "a finite soft-cap (0 = off)")),
        Some(c) if c > 0.0 => Ok(Some(c as f32)),
        _ => Ok(None),
    }
}

pub(crate) fn parse(keys: &Keys, hpcai: bool) -> Result<ModelConfig> {
    let dims = Dims::read(keys, "the model width (6144 for Grok-1)")?;
    let (hidden, num_heads) = (dims.hidden, dims.num_heads);
    let num_kv = keys.positive("num_key_value_heads", "the number of key/value heads")?;
    check_gqa_heads(keys, "num_attention_heads", num_heads, "num_key_value_heads", num_kv)?;
    let max_pos = match keys.aliased_usize("max_position_embeddings", "context_len")? {
        Some(n) => keys.check_positive("max_position_embeddings", n)?,
        None => {
            return Err(keys.missing(
                "max_position_embeddings",
                "the context length (8192 for Grok-1); `context_len` is accepted too",
            ))
        }
    };

    let (experts_key, dh) = if hpcai {
        ("num_experts", head_dim(keys, hidden, num_heads, None)?)
    } else {
        ("num_local_experts", head_dim(keys, hidden, num_heads, Some(128))?)
    };
    let num_experts = if hpcai {
        keys.req_aliased_usize("num_experts", "num_local_experts", "the number of experts (8 for Grok-1)")?
    } else {
        match keys.usize("num_local_experts")? {
            Some(n) => n,
            None if keys.has("num_experts") => {
                return Err(keys.missing(
                    "num_local_experts",
                    "SGLang's Grok reads only `num_local_experts`; `num_experts` is the hpcai spelling, so rename it or set model_type \"grok-1\"",
                ))
            }
            None => return Err(keys.missing("num_local_experts", "the number of experts (8 for Grok-1)")),
        }
    };
    let top_k = keys.req_usize("num_experts_per_tok", "experts per token (2 for Grok-1)")?;
    let expert_intermediate = match keys.usize("moe_intermediate_size")? {
        Some(n) => {
            keys.known_unused(&["intermediate_size"]);
            n
        }
        None => keys.req_usize("intermediate_size", "the expert width (32768 for Grok-1)")?,
    };

    for (key, detail) in [
        ("residual_moe", "Grok-2's residual MoE is not implemented; set it to false"),
        ("rope_rotate_half_dims", "partial-dim rotary (Grok-2) is not implemented; set it to false"),
    ] {
        super::common::reject_true(keys, key, detail)?;
    }
    if let Some(method) = keys.str("attn_logit_softcapping_method")? {
        if method != "tanh" {
            return Err(keys.unsupported(
                "attn_logit_softcapping_method",
                format!("\"{method}\""),
                "only \"tanh\" is implemented",
            ));
        }
    }

    let rope = parse_rope(keys, dh, RopeStyle::RotateHalf, max_pos)?.rope;
    let (softmax_scale, attn_cap, router_cap, embedding_scale, output_scale, tie) = if hpcai {
        let scale = keys.f64_or("attn_output_multiplier", (dh as f64).powf(-0.5))?;
        (
            keys.positive_f64("attn_output_multiplier", scale)?,
            softcap(keys, "max_attn_value", Some(30.0))?,
            softcap(keys, "router_logit_softcapping", None)?,
            keys.f64_or("embedding_multiplier_scale", 78.383_671_769_061_69)?,
            keys.f64_or("output_multiplier_scale", 0.577_350_269_189_625_7)?,
            keys.bool_or("tie_word_embeddings", true)?,
        )
    } else {
        (
            (dh as f64).powf(-0.5),
            softcap(keys, "attn_logit_softcapping", Some(30.0))?,
            softcap(keys, "router_logit_softcapping", Some(30.0))?,
            keys.req_f64("embedding_multiplier_scale", "78.38367176906169 = sqrt(6144) for Grok-1")?,
            keys.req_f64("output_multiplier_scale", "0.5773502691896257 = 1/sqrt(3) for Grok-1")?,
            keys.bool_or("tie_word_embeddings", false)?,
        )
    };
    let embedding_scale = keys.positive_f64("embedding_multiplier_scale", embedding_scale)?;
    let output_scale = keys.positive_f64("output_multiplier_scale", output_scale)?;

    let moe = MoeConfig {
        num_experts,
        top_k,
        expert_intermediate_size: expert_intermediate,
        activation: activation(keys, "hidden_act", Activation::GeluErf)?,
        router: RouterConfig { logit_softcap: router_cap, ..softmax_router() },
        shared: None,
    };
    check_moe(keys, experts_key, &moe)?;
    let attention = GqaConfig {
        logit_softcap: attn_cap,
        softmax_scale: softmax_scale as f32,
        ..gqa(num_heads, num_kv, dh, Some(rope))
    };
    let ffn = Ffn { mlp: None, moe: Some(moe), layer_ffn: vec![FfnKind::Moe; dims.num_layers] };
    let norm = rms_norm(keys, "rms_norm_eps", 1e-5)?;
    Ok(ModelConfig {
        embedding_scale: embedding_scale as f32,
        post_branch_norms: true,
        output_scale: output_scale as f32,
        ..dims.config(Family::Grok1, max_pos, norm, AttentionConfig::Gqa(attention), ffn, tie)
    })
}
