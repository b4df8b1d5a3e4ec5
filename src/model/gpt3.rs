//! GPT-3 (the GPT-2 graph at GPT-3 sizes), models.md §1: learned absolute positions,
//! pre-LayerNorm, MHA with fused biased `c_attn`, GELU (tanh) MLP, tied LM head. All
//! layers use dense causal attention (no public spec of GPT-3's banded sparse layers).

use super::blocks::attention::{attention, AttnNames};
use super::blocks::mlp::plain_mlp;
use super::llama::gqa_spec;
use super::{Builder, Hf, LayerGraph, NormSlot, WEIGHT_INIT};
use crate::config::model::{AttentionConfig, ModelConfig};
use crate::plan::View;

pub struct Gpt3<'a>(pub &'a ModelConfig);

impl LayerGraph for Gpt3<'_> {
    fn config(&self) -> &ModelConfig {
        self.0
    }
    fn embed_table(&self) -> Hf {
        Hf::new("transformer.wte.weight", self.0.vocab_size, self.0.hidden_size, WEIGHT_INIT)
    }
    fn pos_table(&self) -> Option<Hf> {
        self.0.learned_positions.map(|rows| Hf::new("transformer.wpe.weight", rows, self.0.hidden_size, WEIGHT_INIT))
    }
    fn norm(&self, layer: Option<usize>, slot: NormSlot) -> (String, Option<String>) {
        let base = match (layer, slot) {
            (Some(l), NormSlot::Input) => format!("transformer.h.{l}.ln_1"),
            (Some(l), _) => format!("transformer.h.{l}.ln_2"),
            (None, _) => "transformer.ln_f".to_string(),
        };
        (format!("{base}.weight"), Some(format!("{base}.bias")))
    }
    fn attention(&self, b: &mut Builder, layer: usize, x: View) -> View {
        let AttentionConfig::Gqa(a) = &self.0.attention else { unreachable!("GPT-3 configs resolve to MHA") };
        let h = self.0.hidden_size;
        let p = format!("transformer.h.{layer}.attn");
        let c_attn = Hf::new(format!("{p}.c_attn.weight"), 3 * h, h, WEIGHT_INIT).conv1d();
        let c_attn_bias = Hf::vector(format!("{p}.c_attn.bias"), 3 * h, WEIGHT_INIT);
        let names = AttnNames {
            q: (c_attn.clone(), 0),
            k: (c_attn.clone(), h),
            v: (c_attn, 2 * h),
            o: Hf::new(format!("{p}.c_proj.weight"), h, h, WEIGHT_INIT).conv1d(),
            qkv_bias: Some([(c_attn_bias.clone(), 0), (c_attn_bias.clone(), h), (c_attn_bias, 2 * h)]),
            o_bias: Some(Hf::vector(format!("{p}.c_proj.bias"), h, WEIGHT_INIT)),
            qk_norm: None,
            aug_q: None,
        };
        attention(b, x, &names, &gqa_spec(self.0, a))
    }
    fn ffn(&self, b: &mut Builder, layer: usize, x: View) -> View {
        let mlp = self.0.mlp.as_ref().expect("GPT-3 has a dense MLP");
        let (h, i) = (self.0.hidden_size, mlp.intermediate_size);
        let p = format!("transformer.h.{layer}.mlp");
        let fc = Hf::new(format!("{p}.c_fc.weight"), i, h, WEIGHT_INIT).conv1d();
        let fc_b = Hf::vector(format!("{p}.c_fc.bias"), i, WEIGHT_INIT);
        let proj = Hf::new(format!("{p}.c_proj.weight"), h, i, WEIGHT_INIT).conv1d();
        let proj_b = Hf::vector(format!("{p}.c_proj.bias"), h, WEIGHT_INIT);
        plain_mlp(b, x, (&fc, &fc_b), (&proj, &proj_b), mlp.activation)
    }
}
