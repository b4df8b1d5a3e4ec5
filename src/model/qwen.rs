//! Qwen2/2.5, Qwen3, Qwen2-MoE and Qwen3-MoE (models.md §3): pre-RMSNorm, GQA (biases
//! on q/k/v for Qwen2; per-head QK-norm before RoPE for Qwen3), SiLU-gated MLPs, and
//! softmax-routed experts (Qwen2-MoE adds a shared expert behind a sigmoid gate).

use super::blocks::attention::attention;
use super::common_names::{embed_tokens, gqa_names, gqa_spec, llama_ffn, llama_norm, lm_head};
use super::{Builder, Hf, LayerGraph, NormSlot};
use crate::config::model::{AttentionConfig, ModelConfig};
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
        llama_ffn(b, self.0, layer, x, "shared_expert")
    }
}
