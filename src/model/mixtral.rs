//! Mixtral (Jiang et al. 2024): Llama attention, and in every layer a sparse MoE under
//! `block_sparse_moe` whose experts name their projections `w1` (gate), `w3` (up) and `w2`
//! (down), as the published checkpoints do. Softmax top-k routing with renormalisation; no
//! shared expert.

use super::blocks::moe::{moe, router_init, MoeNames};
use super::llama::gqa_attention;
use super::{Builder, Hf, LayerGraph, WEIGHT_INIT};
use crate::config::model::ModelConfig;
use crate::plan::View;

pub struct Mixtral<'a>(pub &'a ModelConfig);

impl LayerGraph for Mixtral<'_> {
    fn config(&self) -> &ModelConfig {
        self.0
    }
    fn attention(&self, b: &mut Builder, layer: usize, x: View) -> View {
        gqa_attention(b, self.0, layer, x, None)
    }
    fn ffn(&self, b: &mut Builder, layer: usize, x: View) -> View {
        block_sparse_moe(b, self.0, layer, x)
    }
}

/// The MoE of layer `layer` under `model.layers.N.block_sparse_moe`, experts `w1`/`w3`/`w2`:
/// Mixtral's checkpoint layout, which SGLang's Grok-1 uses too.
pub fn block_sparse_moe(b: &mut Builder, cfg: &ModelConfig, layer: usize, x: View) -> View {
    let m = cfg.moe.as_ref().expect("block_sparse_moe layers are MoE");
    let (h, im) = (cfg.hidden_size, m.expert_intermediate_size);
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
