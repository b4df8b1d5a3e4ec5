//! Checks and readers shared by several families.

use super::keys::{Keys, Result};
use crate::config::model::{Activation, FfnKind, MlpConfig, MoeConfig, NormConfig, NormKind};

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
        return Ok(None);
    }
    let width = keys.positive("intermediate_size", what)?;
    Ok(Some(MlpConfig { intermediate_size: width, activation: act, gated: true, bias: false }))
}
