//! Sigma, both architectures (models.md §5). V2: GQA + per-head q/k RMSNorm + sigmoid-routed
//! MoE with correction bias (DeepSeek's router with one group). V1: DiffQKV attention
//! (separate K and V head counts, augmented Q through a gated MLP) in a dense Llama block.

use super::blocks::attention::{attention, AttnSpec};
use super::llama::{ffn, gqa_attention, gqa_names};
use super::{Builder, Hf, LayerGraph, WEIGHT_INIT};
use crate::config::model::{AttentionConfig, GqaConfig, ModelConfig};
use crate::plan::View;

pub struct Sigma<'a>(pub &'a ModelConfig);

impl LayerGraph for Sigma<'_> {
    fn config(&self) -> &ModelConfig {
        self.0
    }
    fn attention(&self, b: &mut Builder, layer: usize, x: View) -> View {
        let h = self.0.hidden_size;
        let prefix = format!("model.layers.{layer}.self_attn");
        match &self.0.attention {
            AttentionConfig::Gqa(_) => gqa_attention(b, self.0, layer, x, Some(("q_layernorm", "k_layernorm"))),
            AttentionConfig::DiffQkv(d) => {
                // Reuse the GQA names for q/o, then give k and v their own head counts.
                let as_gqa = GqaConfig {
                    num_heads: d.num_heads,
                    num_kv_heads: d.num_heads,
                    head_dim: d.head_dim,
                    qkv_bias: false,
                    o_bias: false,
                    qk_norm: false,
                    logit_softcap: None,
                    rope: Some(d.rope),
                    softmax_scale: d.softmax_scale,
                };
                let mut names = gqa_names(&prefix, h, &as_gqa, None);
                names.k = (Hf::new(format!("{prefix}.k_proj.weight"), d.num_k_heads * d.head_dim, h, WEIGHT_INIT), 0);
                names.v = (Hf::new(format!("{prefix}.v_proj.weight"), d.num_v_heads * d.head_dim, h, WEIGHT_INIT), 0);
                let q_width = d.num_heads * d.head_dim;
                names.aug_q = d.aug_q_intermediate.map(|aug| {
                    (
                        Hf::new(format!("{prefix}.q_gate_proj.weight"), aug, q_width, WEIGHT_INIT),
                        Hf::new(format!("{prefix}.q_up_proj.weight"), aug, q_width, WEIGHT_INIT),
                        Hf::new(format!("{prefix}.q_down_proj.weight"), q_width, aug, WEIGHT_INIT),
                    )
                });
                let spec = AttnSpec {
                    q_heads: d.num_heads,
                    k_heads: d.num_k_heads,
                    v_heads: d.num_v_heads,
                    head_dim: d.head_dim,
                    rope: Some(d.rope),
                    scale: d.softmax_scale,
                    softcap: None,
                    norm_eps: self.0.norm.eps,
                    aug_act: self
                        .0
                        .mlp
                        .as_ref()
                        .map(|m| m.activation)
                        .unwrap_or(crate::config::model::Activation::Silu),
                };
                attention(b, x, &names, &spec)
            }
            AttentionConfig::Mla(_) => unreachable!("Sigma configs never resolve to MLA"),
        }
    }
    fn ffn(&self, b: &mut Builder, layer: usize, x: View) -> View {
        ffn(b, self.0, layer, x, "shared_experts")
    }
}
