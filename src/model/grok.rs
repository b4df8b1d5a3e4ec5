//! Grok-1 (models.md §2): embedding times sqrt(H), four RMSNorms per layer (sandwich
//! norms around attention and MoE), GQA with RoPE and a tanh logit soft-cap, an 8-expert
//! top-2 MoE with GELU-gated experts (`w2(gelu(w1 x) * w3 x)`) and an fp32 softmax router
//! (optionally soft-capped, as SGLang does), logits times 1/sqrt(3).

use super::blocks::moe::{moe, router_init, MoeNames};
use super::llama::gqa_attention;
use super::{Builder, Hf, LayerGraph, NormSlot, WEIGHT_INIT};
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
        let m = self.0.moe.as_ref().expect("Grok-1 layers are MoE");
        let (h, im) = (self.0.hidden_size, m.expert_intermediate_size);
        let p = format!("model.layers.{layer}.block_sparse_moe");
        let expert_prefix = p.clone();
        let names = MoeNames {
            router: Hf::new(format!("{p}.gate.weight"), m.num_experts, h, router_init()),
            correction_bias: None,
            expert: Box::new(move |e| {
                let w = |n: &str, rows, cols| {
                    Hf::new(format!("{expert_prefix}.experts.{e}.{n}.weight"), rows, cols, WEIGHT_INIT)
                };
                (w("w1", im, h), w("w3", im, h), w("w2", h, im))
            }),
            shared: None,
            shared_gate: None,
        };
        moe(b, x, m, &names)
    }
}
