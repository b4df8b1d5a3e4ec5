//! The Llama-style pieces Qwen, DeepSeek and Sigma share (and Grok borrows): embedding,
//! LM head and norm names (the `LayerGraph` defaults), the GQA attention block under
//! `self_attn`, and the dense-or-routed feed-forward under `mlp`.

use super::blocks::attention::{AttnNames, AttnSpec};
use super::blocks::mlp::GatedNames;
use super::{Hf, WEIGHT_INIT};
use crate::config::model::{Activation, AttentionConfig, GqaConfig, ModelConfig};

pub fn embed_tokens(cfg: &ModelConfig) -> Hf {
    Hf::new("model.embed_tokens.weight", cfg.vocab_size, cfg.hidden_size, WEIGHT_INIT)
}

pub fn lm_head(cfg: &ModelConfig) -> Option<Hf> {
    (!cfg.tie_word_embeddings).then(|| Hf::new("lm_head.weight", cfg.vocab_size, cfg.hidden_size, WEIGHT_INIT))
}

/// `prefix.{gate,up,down}_proj.weight` of a SiLU-gated MLP of width `inter`.
pub fn gated(prefix: &str, hidden: usize, inter: usize) -> GatedNames {
    GatedNames {
        gate: Hf::new(format!("{prefix}.gate_proj.weight"), inter, hidden, WEIGHT_INIT),
        up: Hf::new(format!("{prefix}.up_proj.weight"), inter, hidden, WEIGHT_INIT),
        down: Hf::new(format!("{prefix}.down_proj.weight"), hidden, inter, WEIGHT_INIT),
    }
}

/// Separate `q/k/v/o_proj` tensors under `prefix` (e.g. `model.layers.3.self_attn`).
pub fn gqa_names(prefix: &str, hidden: usize, a: &GqaConfig, qk_norm_names: Option<(&str, &str)>) -> AttnNames {
    let (nq, nkv, dh) = (a.num_heads, a.num_kv_heads, a.head_dim);
    let proj = |n: &str, rows: usize| (Hf::new(format!("{prefix}.{n}_proj.weight"), rows, hidden, WEIGHT_INIT), 0);
    let bias = |n: &str, len: usize| (Hf::vector(format!("{prefix}.{n}_proj.bias"), len, WEIGHT_INIT), 0);
    AttnNames {
        q: proj("q", nq * dh),
        k: proj("k", nkv * dh),
        v: proj("v", nkv * dh),
        o: Hf::new(format!("{prefix}.o_proj.weight"), hidden, nq * dh, WEIGHT_INIT),
        qkv_bias: a.qkv_bias.then(|| [bias("q", nq * dh), bias("k", nkv * dh), bias("v", nkv * dh)]),
        o_bias: a.o_bias.then(|| Hf::vector(format!("{prefix}.o_proj.bias"), hidden, WEIGHT_INIT)),
        qk_norm: qk_norm_names.filter(|_| a.qk_norm).map(|(q, k)| {
            (
                Hf::vector(format!("{prefix}.{q}.weight"), dh, super::NORM_INIT),
                Hf::vector(format!("{prefix}.{k}.weight"), dh, super::NORM_INIT),
            )
        }),
        aug_q: None,
    }
}

/// The GQA attention block of layer `layer` under `model.layers.N.self_attn`, with QK-norm
/// weights named `qk_norm_names` when the config has QK-norm.
pub fn gqa_attention(
    b: &mut super::Builder,
    cfg: &ModelConfig,
    layer: usize,
    x: crate::plan::View,
    qk_norm_names: Option<(&str, &str)>,
) -> crate::plan::View {
    let AttentionConfig::Gqa(a) = &cfg.attention else { unreachable!("{:?} configs resolve to GQA", cfg.family) };
    let names = gqa_names(&format!("model.layers.{layer}.self_attn"), cfg.hidden_size, a, qk_norm_names);
    super::blocks::attention::attention(b, x, &names, &gqa_spec(cfg, a))
}

pub fn gqa_spec(cfg: &ModelConfig, a: &GqaConfig) -> AttnSpec {
    AttnSpec {
        q_heads: a.num_heads,
        k_heads: a.num_kv_heads,
        v_heads: a.num_kv_heads,
        head_dim: a.head_dim,
        rope: a.rope,
        scale: a.softmax_scale,
        softcap: a.logit_softcap,
        norm_eps: cfg.norm.eps,
        aug_act: Activation::Silu,
    }
}

/// `model.layers.N.{input,post_attention}_layernorm` / `model.norm`.
pub fn llama_norm(layer: Option<usize>, slot: super::NormSlot) -> (String, Option<String>) {
    let name = match (layer, slot) {
        (Some(l), super::NormSlot::Input) => format!("model.layers.{l}.input_layernorm.weight"),
        (Some(l), _) => format!("model.layers.{l}.post_attention_layernorm.weight"),
        (None, _) => "model.norm.weight".to_string(),
    };
    (name, None)
}

/// The feed-forward of a Llama-style layer (Qwen, DeepSeek, Sigma): a SiLU-gated MLP in
/// dense layers, a routed MoE in sparse ones, under `model.layers.N.mlp`. `shared` names
/// the shared-expert module (`shared_expert` in Qwen2-MoE, `shared_experts` in DeepSeek
/// and Sigma); Qwen2-MoE's sigmoid gate sits at `shared_expert_gate`.
pub fn ffn(
    b: &mut super::Builder,
    cfg: &ModelConfig,
    layer: usize,
    x: crate::plan::View,
    shared: &str,
) -> crate::plan::View {
    use super::blocks::mlp::gated_mlp;
    use super::blocks::moe::{moe, router_init, MoeNames};
    use crate::config::model::FfnKind;
    let h = cfg.hidden_size;
    let p = format!("model.layers.{layer}.mlp");
    match cfg.layer_ffn[layer] {
        FfnKind::Dense => {
            let mlp = cfg.mlp.as_ref().expect("dense layer has an MLP config");
            gated_mlp(b, x, "mlp", &gated(&p, h, mlp.intermediate_size), mlp.activation)
        }
        FfnKind::Moe => {
            let m = cfg.moe.as_ref().expect("sparse layer has a MoE config");
            let im = m.expert_intermediate_size;
            let expert_prefix = p.clone();
            let names = MoeNames {
                router: Hf::new(format!("{p}.gate.weight"), m.num_experts, h, router_init()),
                correction_bias: m.router.correction_bias.then(|| {
                    Hf::vector(
                        format!("{p}.gate.e_score_correction_bias"),
                        m.num_experts,
                        crate::plan::Init::normal(0.02),
                    )
                }),
                expert: Box::new(move |e| {
                    let g = gated(&format!("{expert_prefix}.experts.{e}"), h, im);
                    (g.gate, g.up, g.down)
                }),
                shared: m.shared.as_ref().map(|s| gated(&format!("{p}.{shared}"), h, s.intermediate_size)),
                shared_gate: m
                    .shared
                    .as_ref()
                    .filter(|s| s.sigmoid_gate)
                    .map(|_| Hf::new(format!("{p}.{shared}_gate.weight"), 1, h, WEIGHT_INIT)),
            };
            moe(b, x, m, &names)
        }
    }
}

/// Llama 2 / 3.x itself: the pieces above with nothing added (no QK-norm, dense MLP).
pub struct Llama<'a>(pub &'a ModelConfig);

impl super::LayerGraph for Llama<'_> {
    fn config(&self) -> &ModelConfig {
        self.0
    }
    fn attention(&self, b: &mut super::Builder, layer: usize, x: crate::plan::View) -> crate::plan::View {
        gqa_attention(b, self.0, layer, x, None)
    }
    fn ffn(&self, b: &mut super::Builder, layer: usize, x: crate::plan::View) -> crate::plan::View {
        ffn(b, self.0, layer, x, "shared_experts")
    }
}
