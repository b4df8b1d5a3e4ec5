//! GPT-3 as a GPT-2-style config (`GPT2LMHeadModel`, models.md §1).
//!
//! Keys use GPT-2 names with HF's `attribute_map` aliases (`n_embd`/`hidden_size`,
//! `n_head`/`num_attention_heads`, `n_layer`/`num_hidden_layers`,
//! `n_positions`/`max_position_embeddings`). All layers are dense: the banded sparse
//! layers of the GPT-3 paper have no public specification.

use super::common::{activation, gqa};
use super::keys::{Keys, Result};
use crate::config::model::*;

pub(crate) fn parse(keys: &Keys) -> Result<ModelConfig> {
    let hidden = keys.req_aliased_usize("n_embd", "hidden_size", "the model width")?;
    let hidden = keys.check_positive("n_embd", hidden)?;
    let num_heads = keys.req_aliased_usize("n_head", "num_attention_heads", "the number of attention heads")?;
    let num_heads = keys.check_positive("n_head", num_heads)?;
    let num_layers = keys.req_aliased_usize("n_layer", "num_hidden_layers", "the number of decoder layers")?;
    let num_layers = keys.check_positive("n_layer", num_layers)?;
    let positions =
        keys.req_aliased_usize("n_positions", "max_position_embeddings", "rows of the learned position table")?;
    let positions = keys.check_positive("n_positions", positions)?;
    // GPT-2's `n_ctx` duplicates `n_positions` in older files.
    keys.known_unused(&["n_ctx"]);
    let vocab_size = keys.positive("vocab_size", "the vocabulary size (50257 for the GPT-2 BPE)")?;
    if hidden % num_heads != 0 {
        return Err(keys.contradiction(format!(
            "`n_embd` = {hidden} is not a multiple of `n_head` = {num_heads}; GPT-2 attention needs head_dim = n_embd / n_head"
        )));
    }
    // SGLang's gpt2.py asserts these; they change the attention math.
    super::common::reject_true(keys, "scale_attn_by_inverse_layer_idx", "set it to false (SGLang asserts this too)")?;
    super::common::reject_true(keys, "reorder_and_upcast_attn", "set it to false (SGLang asserts this too)")?;
    super::common::reject_true(keys, "add_cross_attention", "fwdbench runs decoder-only models; set it to false")?;
    if !keys.bool_or("scale_attn_weights", true)? {
        return Err(keys.unsupported(
            "scale_attn_weights",
            false,
            "unscaled attention is not implemented; set it to true",
        ));
    }
    let act = match keys.str("activation_function")? {
        None => Activation::GeluTanh,
        Some("gelu_new" | "gelu_pytorch_tanh" | "gelu" | "gelu_tanh") => {
            activation(keys, "activation_function", Activation::GeluTanh)?
        }
        Some(other) => {
            return Err(keys.unsupported(
                "activation_function",
                format!("\"{other}\""),
                "GPT-3 is implemented with \"gelu_new\"/\"gelu_pytorch_tanh\" (tanh GELU) or \"gelu\" (erf GELU)",
            ))
        }
    };
    let eps = keys.f64_or("layer_norm_epsilon", 1e-5)?;
    let eps = keys.positive_f64("layer_norm_epsilon", eps)?;
    let intermediate = match keys.usize("n_inner")? {
        Some(n) => keys.check_positive("n_inner", n)?,
        None => 4 * hidden,
    };
    let head_dim = hidden / num_heads;
    Ok(ModelConfig {
        family: Family::Gpt3,
        architecture: String::new(),
        vocab_size,
        hidden_size: hidden,
        num_layers,
        max_position_embeddings: positions,
        learned_positions: Some(positions),
        embedding_scale: 1.0,
        norm: NormConfig { kind: NormKind::LayerNorm, eps: eps as f32 },
        attention: AttentionConfig::Gqa(GqaConfig {
            qkv_bias: true,
            o_bias: true,
            ..gqa(num_heads, num_heads, head_dim, None)
        }),
        post_branch_norms: false,
        mlp: Some(MlpConfig { intermediate_size: intermediate, activation: act, gated: false, bias: true }),
        moe: None,
        layer_ffn: vec![FfnKind::Dense; num_layers],
        tie_word_embeddings: keys.bool_or("tie_word_embeddings", true)?,
        output_scale: 1.0,
        quant: Default::default(),
    })
}
