//! Checks and readers shared by several families.

use super::keys::{Keys, Result};
use crate::config::model::*;

/// `hidden_act` / `activation_function` names -> the activations fwdbench implements.
pub(crate) fn activation(keys: &Keys, key: &str, default: Activation) -> Result<Activation> {
    match keys.str(key)? {
        None => Ok(default),
        Some("silu" | "swish") => Ok(Activation::Silu),
        Some("gelu") => Ok(Activation::GeluErf),
        Some("gelu_new" | "gelu_pytorch_tanh" | "gelu_tanh") => Ok(Activation::GeluTanh),
        Some(other) => Err(keys.unsupported(
            key,
            format!("\"{other}\""),
            "use \"silu\", \"gelu\" (erf) or \"gelu_new\"/\"gelu_pytorch_tanh\" (tanh approximation)",
        )),
    }
}

pub(crate) fn rms_norm(keys: &Keys, key: &str, default_eps: f64) -> Result<NormConfig> {
    let eps = keys.f64_or(key, default_eps)?;
    let eps = keys.positive_f64(key, eps)?;
    Ok(NormConfig { kind: NormKind::RmsNorm, eps: eps as f32 })
}

/// Grouped-query head counts: both positive, query heads a multiple of kv heads.
pub(crate) fn check_gqa_heads(
    keys: &Keys,
    heads_key: &str,
    num_heads: usize,
    kv_key: &str,
    num_kv: usize,
) -> Result<()> {
    keys.check_positive(heads_key, num_heads)?;
    keys.check_positive(kv_key, num_kv)?;
    if !num_heads.is_multiple_of(num_kv) {
        return Err(keys.contradiction(format!(
            "`{heads_key}` = {num_heads} is not a multiple of `{kv_key}` = {num_kv}; every kv head must serve the same number of query heads"
        )));
    }
    Ok(())
}

/// `head_dim` when the file gives it (never re-derived: Qwen3 uses 128 where H/nq is 64),
/// else `derived` (usually H/nq, which then must divide evenly).
pub(crate) fn head_dim(keys: &Keys, hidden: usize, num_heads: usize, default: Option<usize>) -> Result<usize> {
    if let Some(dh) = keys.usize("head_dim")? {
        return keys.check_positive("head_dim", dh);
    }
    if let Some(dh) = default {
        return Ok(dh);
    }
    if !hidden.is_multiple_of(num_heads) {
        return Err(keys.missing(
            "head_dim",
            format!("hidden_size {hidden} is not a multiple of num_attention_heads {num_heads}, so head_dim cannot be derived"),
        ));
    }
    Ok(hidden / num_heads)
}

/// Router sanity shared by every MoE family; `experts_key` names the expert-count key.
pub(crate) fn check_moe(keys: &Keys, experts_key: &str, moe: &MoeConfig) -> Result<()> {
    let e = moe.num_experts;
    keys.check_positive(experts_key, e)?;
    keys.check_positive("num_experts_per_tok", moe.top_k)?;
    keys.check_positive("moe_intermediate_size", moe.expert_intermediate_size)?;
    if moe.top_k > e {
        return Err(keys.contradiction(format!(
            "`num_experts_per_tok` = {} exceeds `{experts_key}` = {e}; a token cannot pick more experts than exist",
            moe.top_k
        )));
    }
    let r = &moe.router;
    keys.check_positive("n_group", r.n_group)?;
    keys.check_positive("topk_group", r.topk_group)?;
    if !e.is_multiple_of(r.n_group) {
        return Err(keys.contradiction(format!(
            "`n_group` = {} does not divide `{experts_key}` = {e}; expert groups must be equal in size",
            r.n_group
        )));
    }
    if r.topk_group > r.n_group {
        return Err(keys.contradiction(format!(
            "`topk_group` = {} exceeds `n_group` = {}; cannot keep more groups than exist",
            r.topk_group, r.n_group
        )));
    }
    let selectable = r.topk_group * (e / r.n_group);
    if moe.top_k > selectable {
        return Err(keys.contradiction(format!(
            "`num_experts_per_tok` = {} exceeds the {selectable} experts in the `topk_group` = {} kept groups",
            moe.top_k, r.topk_group
        )));
    }
    Ok(())
}

/// Fails when a key that switches on something fwdbench does not implement is set.
pub(crate) fn reject_true(keys: &Keys, key: &str, detail: &str) -> Result<()> {
    if keys.bool_or(key, false)? {
        return Err(keys.unsupported(key, true, detail));
    }
    Ok(())
}

/// The SiLU-gated dense MLP of a model whose dense layers are only some of its layers:
/// `intermediate_size` is required (and read) only when some layer is dense.
pub(crate) fn dense_mlp_if_used(
    keys: &Keys,
    layer_ffn: &[FfnKind],
    act: Activation,
    what: &str,
) -> Result<Option<MlpConfig>> {
    if !layer_ffn.contains(&FfnKind::Dense) {
        keys.known_unused(&["intermediate_size"]);
        return Ok(None);
    }
    let width = keys.positive("intermediate_size", what)?;
    Ok(Some(MlpConfig { intermediate_size: width, activation: act, gated: true, bias: false }))
}

/// The sizes every Llama-style config gives under the same keys (GPT-2 and Grok differ in
/// how they name or default some of them and read those themselves).
pub(crate) struct Dims {
    pub hidden: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub vocab_size: usize,
}

impl Dims {
    /// `hidden_hint` says what `hidden_size` is, with the family's value where it helps.
    pub(crate) fn read(keys: &Keys, hidden_hint: &str) -> Result<Self> {
        Ok(Dims {
            hidden: keys.positive("hidden_size", hidden_hint)?,
            num_layers: keys.positive("num_hidden_layers", "the number of decoder layers")?,
            num_heads: keys.positive("num_attention_heads", "the number of query heads")?,
            vocab_size: keys.positive("vocab_size", "the vocabulary size")?,
        })
    }

    /// The resolved config with the defaults all rotary families share (no learned
    /// positions, unscaled embeddings and logits, pre-norm only); Grok overrides some of
    /// them with struct-update syntax.
    pub(crate) fn config(
        &self,
        family: Family,
        max_pos: usize,
        norm: NormConfig,
        attention: AttentionConfig,
        ffn: Ffn,
        tie_word_embeddings: bool,
    ) -> ModelConfig {
        ModelConfig {
            family,
            architecture: String::new(),
            vocab_size: self.vocab_size,
            hidden_size: self.hidden,
            num_layers: self.num_layers,
            max_position_embeddings: max_pos,
            learned_positions: None,
            embedding_scale: 1.0,
            norm,
            attention,
            post_branch_norms: false,
            mlp: ffn.mlp,
            moe: ffn.moe,
            layer_ffn: ffn.layer_ffn,
            tie_word_embeddings,
            output_scale: 1.0,
            quant: Default::default(),
        }
    }
}

/// The feed-forward side of a config: which kind each layer uses and the two kinds' shapes.
pub(crate) struct Ffn {
    pub mlp: Option<MlpConfig>,
    pub moe: Option<MoeConfig>,
    pub layer_ffn: Vec<FfnKind>,
}

/// `max_position_embeddings`, required.
pub(crate) fn max_positions(keys: &Keys) -> Result<usize> {
    keys.positive("max_position_embeddings", "the context length")
}

/// GQA attention with the common defaults: no biases, no QK-norm, no soft-cap, and the
/// softmax scale `head_dim^-0.5`.
pub(crate) fn gqa(num_heads: usize, num_kv_heads: usize, head_dim: usize, rope: Option<RopeConfig>) -> GqaConfig {
    GqaConfig {
        num_heads,
        num_kv_heads,
        head_dim,
        qkv_bias: false,
        o_bias: false,
        qk_norm: false,
        logit_softcap: None,
        rope,
        softmax_scale: (head_dim as f64).powf(-0.5) as f32,
    }
}

/// A softmax top-k router with nothing else switched on (Qwen, Grok); others update fields.
pub(crate) fn softmax_router() -> RouterConfig {
    RouterConfig {
        scoring: Scoring::Softmax,
        logit_softcap: None,
        norm_topk_prob: false,
        correction_bias: false,
        n_group: 1,
        topk_group: 1,
        group_score: GroupScore::Max,
        routed_scaling_factor: 1.0,
    }
}

/// `scoring_func`: "sigmoid" or "softmax".
pub(crate) fn scoring(keys: &Keys, default: &str) -> Result<Scoring> {
    match keys.str("scoring_func")?.unwrap_or(default) {
        "sigmoid" => Ok(Scoring::Sigmoid),
        "softmax" => Ok(Scoring::Softmax),
        other => Err(keys.unsupported("scoring_func", format!("\"{other}\""), "use \"sigmoid\" or \"softmax\"")),
    }
}

/// `n_shared_experts` experts of the routed width, fused into one MLP (DeepSeek, Sigma V2).
pub(crate) fn shared_experts(keys: &Keys, default: usize, expert_width: usize) -> Result<Option<SharedExpertConfig>> {
    let n = keys.usize_or("n_shared_experts", default)?;
    Ok((n > 0).then_some(SharedExpertConfig { intermediate_size: n * expert_width, sigmoid_gate: false }))
}

/// `routed_scaling_factor`, positive.
pub(crate) fn routed_scaling(keys: &Keys, default: f64) -> Result<f32> {
    let scaling = keys.f64_or("routed_scaling_factor", default)?;
    Ok(keys.positive_f64("routed_scaling_factor", scaling)? as f32)
}
