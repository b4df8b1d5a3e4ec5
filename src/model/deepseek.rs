//! DeepSeek-V3 (and V2-style MLA without q_lora), models.md §4: MLA attention, dense
//! SiLU MLP in the first `first_k_dense_replace` layers, DeepSeekMoE (sigmoid router with
//! correction bias, group-limited top-k, scaling, one shared expert) after.

use super::blocks::mla::mla;
use super::blocks::mlp::gated_mlp;
use super::blocks::moe::{moe, router_init, MoeNames};
use super::common_names::{embed_tokens, gated, llama_norm, lm_head};
use super::{Builder, Hf, LayerGraph, NormSlot, NORM_INIT, WEIGHT_INIT};
use crate::config::model::{AttentionConfig, FfnKind, ModelConfig};
use crate::plan::{Init, View};

pub struct DeepSeek<'a>(pub &'a ModelConfig);

impl LayerGraph for DeepSeek<'_> {
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
        let AttentionConfig::Mla(a) = &self.0.attention else { unreachable!("DeepSeek configs resolve to MLA") };
        mla(b, x, &format!("model.layers.{layer}.self_attn"), a, WEIGHT_INIT, NORM_INIT, self.0.norm.eps)
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
                    correction_bias: m.router.correction_bias.then(|| {
                        Hf::vector(format!("{p}.gate.e_score_correction_bias"), m.num_experts, Init::normal(0.02))
                    }),
                    expert: Box::new(move |e| {
                        let g = gated(&format!("{expert_prefix}.experts.{e}"), h, im);
                        (g.gate, g.up, g.down)
                    }),
                    shared: m.shared.as_ref().map(|s| gated(&format!("{p}.shared_experts"), h, s.intermediate_size)),
                    shared_gate: None,
                };
                moe(b, x, m, &names)
            }
        }
    }
}
