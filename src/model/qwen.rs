//! Qwen2/2.5, Qwen3, Qwen2-MoE and Qwen3-MoE (models.md §3): pre-RMSNorm, GQA (biases
//! on q/k/v for Qwen2; per-head QK-norm before RoPE for Qwen3), SiLU-gated MLPs, and
//! softmax-routed experts (Qwen2-MoE adds a shared expert behind a sigmoid gate).

use super::blocks::attention::attention;
use super::blocks::mlp::gated_mlp;
use super::blocks::moe::{moe, router_init, MoeNames};
use super::common_names::{embed_tokens, gated, gqa_names, gqa_spec, llama_norm, lm_head};
use super::{Builder, Hf, LayerGraph, NormSlot};
use crate::config::model::{AttentionConfig, FfnKind, ModelConfig};
use crate::plan::View;

pub struct Qwen<'a>(pub &'a ModelConfig);

impl LayerGraph for Qwen<'_> {
    fn embed_table(&self) -> Hf {
        embed_tokens(self.0)
    }
    fn lm_head(&self) -> Option<Hf> {
        lm_head(self.0)
    }
    fn norm(&self, layer: Option<usize>, slot: NormSlot) -> (String, Option<String>) {
        llama_norm(layer, slot)
    }
    fn attention(&self, b: &mut Builder, layer: usize, x: View) -> View {
        let AttentionConfig::Gqa(a) = &self.0.attention else { unreachable!("Qwen configs resolve to GQA") };
        let names =
            gqa_names(&format!("model.layers.{layer}.self_attn"), self.0.hidden_size, a, Some(("q_norm", "k_norm")));
        attention(b, x, &names, &gqa_spec(self.0, a))
    }
    fn ffn(&self, b: &mut Builder, layer: usize, x: View) -> View {
        let h = self.0.hidden_size;
        let p = format!("model.layers.{layer}.mlp");
        match self.0.layer_ffn[layer] {
            FfnKind::Dense => {
                let mlp = self.0.mlp.as_ref().expect("dense layer has an MLP config");
                gated_mlp(b, x, "mlp", &gated(&p, h, mlp.intermediate_size), mlp.activation)
            }
            FfnKind::Moe => {
                let m = self.0.moe.as_ref().expect("sparse layer has a MoE config");
                let im = m.expert_intermediate_size;
                let expert_prefix = p.clone();
                let names = MoeNames {
                    router: Hf::new(format!("{p}.gate.weight"), m.num_experts, h, router_init()),
                    correction_bias: None,
                    expert: Box::new(move |e| {
                        let g = gated(&format!("{expert_prefix}.experts.{e}"), h, im);
                        (g.gate, g.up, g.down)
                    }),
                    shared: m.shared.as_ref().map(|s| gated(&format!("{p}.shared_expert"), h, s.intermediate_size)),
                    shared_gate: m
                        .shared
                        .as_ref()
                        .filter(|s| s.sigmoid_gate)
                        .map(|_| Hf::new(format!("{p}.shared_expert_gate.weight"), 1, h, super::WEIGHT_INIT)),
                };
                moe(b, x, m, &names)
            }
        }
    }
}
