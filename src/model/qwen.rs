//! Qwen2/2.5, Qwen3, Qwen2-MoE and Qwen3-MoE (models.md §3): pre-RMSNorm, GQA (biases
//! on q/k/v for Qwen2; per-head QK-norm before RoPE for Qwen3), SiLU-gated MLPs, and
//! softmax-routed experts (Qwen2-MoE adds a shared expert behind a sigmoid gate).

use super::llama::{ffn, gqa_attention};
use super::{Builder, LayerGraph};
use crate::config::model::ModelConfig;
use crate::plan::View;

pub struct Qwen<'a>(pub &'a ModelConfig);

impl LayerGraph for Qwen<'_> {
    fn config(&self) -> &ModelConfig {
        self.0
    }
    fn attention(&self, b: &mut Builder, layer: usize, x: View) -> View {
        gqa_attention(b, self.0, layer, x, Some(("q_norm", "k_norm")))
    }
    fn ffn(&self, b: &mut Builder, layer: usize, x: View) -> View {
        ffn(b, self.0, layer, x, "shared_expert")
    }
}
