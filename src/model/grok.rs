//! Grok-1 (models.md §2): embedding times sqrt(H), four RMSNorms per layer (sandwich
//! norms around attention and MoE), GQA with RoPE and a tanh logit soft-cap, an 8-expert
//! top-2 MoE with GELU-gated experts (`w2(gelu(w1 x) * w3 x)`) and an fp32 softmax router
//! (optionally soft-capped, as SGLang does), logits times 1/sqrt(3).

use super::llama::gqa_attention;
use super::{Builder, LayerGraph, NormSlot};
use crate::config::model::ModelConfig;
use crate::plan::View;

pub struct Grok1<'a>(pub &'a ModelConfig);

impl LayerGraph for Grok1<'_> {
    fn config(&self) -> &ModelConfig {
        self.0
    }
    fn norm(&self, layer: Option<usize>, slot: NormSlot) -> (String, Option<String>) {
        let name = match (layer, slot) {
            (None, _) => "model.norm.weight".to_string(),
            (Some(l), NormSlot::Input) => format!("model.layers.{l}.pre_attn_norm.weight"),
            (Some(l), NormSlot::PostAttnBranch) => format!("model.layers.{l}.post_attn_norm.weight"),
            (Some(l), NormSlot::PreFfn) => format!("model.layers.{l}.pre_moe_norm.weight"),
            (Some(l), NormSlot::PostFfnBranch | NormSlot::Final) => format!("model.layers.{l}.post_moe_norm.weight"),
        };
        (name, None)
    }
    fn attention(&self, b: &mut Builder, layer: usize, x: View) -> View {
        gqa_attention(b, self.0, layer, x, None)
    }
    fn ffn(&self, b: &mut Builder, layer: usize, x: View) -> View {
        super::mixtral::block_sparse_moe(b, self.0, layer, x)
    }
}
