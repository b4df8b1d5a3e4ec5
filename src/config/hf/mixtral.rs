//! Mixtral (`MixtralForCausalLM`, `model_type: "mixtral"`, transformers 5.17
//! `MixtralConfig`): Llama attention (no biases), and in every layer a sparse MoE of
//! `num_local_experts` SiLU-gated experts of width `intermediate_size`. The router is a
//! softmax over all experts, top `num_experts_per_tok`, the chosen weights renormalised
//! to one (HF and SGLang always renormalise); no shared expert. `rms_norm_eps` defaults
//! to 1e-5. Sliding-window attention (Mistral-7B's `sliding_window`) is refused.

use super::common::{activation, check_moe, rms_norm, softmax_router, Dims, Ffn};
use super::keys::{Keys, Result};
use super::llama::llama_attention;
use crate::config::model::*;

pub(crate) fn parse(keys: &Keys) -> Result<ModelConfig> {
    let dims = Dims::read(keys, "the model width (4096 for Mixtral-8x7B)")?;
    let (attention, max_pos) = llama_attention(keys, &dims, false)?;
    if let Some(window) = keys.usize("sliding_window")? {
        return Err(keys.unsupported(
            "sliding_window",
            window,
            "sliding-window attention is not implemented; set it to null (Mixtral-8x7B has none)",
        ));
    }
    let moe = MoeConfig {
        num_experts: keys.positive("num_local_experts", "the number of experts per layer (8 for Mixtral-8x7B)")?,
        top_k: keys.positive("num_experts_per_tok", "experts per token (2 for Mixtral-8x7B)")?,
        expert_intermediate_size: keys.positive("intermediate_size", "each expert's width (14336 for Mixtral-8x7B)")?,
        activation: activation(keys, "hidden_act", Activation::Silu)?,
        router: RouterConfig { norm_topk_prob: true, ..softmax_router() },
        shared: None,
    };
    check_moe(keys, "num_local_experts", &moe)?;
    Ok(dims.config(
        Family::Mixtral,
        max_pos,
        rms_norm(keys, "rms_norm_eps", 1e-5)?,
        AttentionConfig::Gqa(attention),
        Ffn { mlp: None, moe: Some(moe), layer_ffn: vec![FfnKind::Moe; dims.num_layers] },
        keys.bool_or("tie_word_embeddings", false)?,
    ))
}
