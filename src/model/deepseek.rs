//! DeepSeek-V3 (and V2-style MLA without q_lora), models.md §4: MLA attention, dense
//! SiLU MLP in the first `first_k_dense_replace` layers, DeepSeekMoE (sigmoid router with
//! correction bias, group-limited top-k, scaling, one shared expert) after.

use super::blocks::mla::mla;
use super::llama::ffn;
use super::{Builder, LayerGraph, NORM_INIT, WEIGHT_INIT};
use crate::config::model::{AttentionConfig, ModelConfig};
use crate::plan::View;

pub struct DeepSeek<'a>(pub &'a ModelConfig);

impl LayerGraph for DeepSeek<'_> {
    fn config(&self) -> &ModelConfig {
        self.0
    }
    fn attention(&self, b: &mut Builder, layer: usize, x: View) -> View {
        let AttentionConfig::Mla(a) = &self.0.attention else { unreachable!("DeepSeek configs resolve to MLA") };
        mla(b, x, &format!("model.layers.{layer}.self_attn"), a, WEIGHT_INIT, NORM_INIT, self.0.norm.eps)
    }
    fn ffn(&self, b: &mut Builder, layer: usize, x: View) -> View {
        ffn(b, self.0, layer, x, "shared_experts")
    }
}
