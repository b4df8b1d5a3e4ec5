//! Llama 2 / 3.x dense (`LlamaForCausalLM`, `model_type: "llama"`, transformers 5.17
//! `LlamaConfig`), and the attention keys Mixtral shares with it.
//!
//! GQA with `num_key_value_heads` defaulting to the query heads and `head_dim` to `H/nq`
//! (both as HF), `attention_bias` (default false) on all four projections, a SiLU-gated
//! MLP (`mlp_bias` must stay false), RMSNorm (`rms_norm_eps`, default 1e-6), rotate-half
//! RoPE with Llama 3's frequency-dependent `llama3` scaling or YaRN, untied LM head by
//! default.

use super::common::{activation, check_gqa_heads, gqa, head_dim, max_positions, reject_true, rms_norm, Dims, Ffn};
use super::keys::{Keys, Result};
use super::rope::parse_rope;
use crate::config::model::*;

/// The attention of a Llama-layout model (Llama, Mixtral): dims, kv heads, head dim, RoPE,
/// and `attention_bias` where the family has it.
pub(crate) fn llama_attention(keys: &Keys, dims: &Dims, read_bias: bool) -> Result<(GqaConfig, usize)> {
    let num_kv = keys.usize("num_key_value_heads")?.unwrap_or(dims.num_heads);
    check_gqa_heads(keys, "num_attention_heads", dims.num_heads, "num_key_value_heads", num_kv)?;
    let max_pos = max_positions(keys)?;
    let dh = head_dim(keys, dims.hidden, dims.num_heads, None)?;
    let rope = parse_rope(keys, dh, RopeStyle::RotateHalf, max_pos)?.rope;
    let bias = read_bias && keys.bool_or("attention_bias", false)?;
    Ok((GqaConfig { qkv_bias: bias, o_bias: bias, ..gqa(dims.num_heads, num_kv, dh, Some(rope)) }, max_pos))
}

pub(crate) fn parse(keys: &Keys) -> Result<ModelConfig> {
    let dims = Dims::read(keys, "the model width (4096 for Llama-3.1-8B)")?;
    let (attention, max_pos) = llama_attention(keys, &dims, true)?;
    reject_true(keys, "mlp_bias", "biases on the MLP projections are not implemented; set it to false")?;
    let act = activation(keys, "hidden_act", Activation::Silu)?;
    let width = keys.positive("intermediate_size", "the MLP width (14336 for Llama-3.1-8B)")?;
    let mlp = MlpConfig { intermediate_size: width, activation: act, gated: true, bias: false };
    Ok(dims.config(
        Family::Llama,
        max_pos,
        rms_norm(keys, "rms_norm_eps", 1e-6)?,
        AttentionConfig::Gqa(attention),
        Ffn { mlp: Some(mlp), moe: None, layer_ffn: vec![FfnKind::Dense; dims.num_layers] },
        keys.bool_or("tie_word_embeddings", false)?,
    ))
}
