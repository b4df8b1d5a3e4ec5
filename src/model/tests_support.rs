//! Small hand-built configs for unit tests that must not depend on the JSON parser.

use crate::config::model::*;

pub fn rope(dim: usize) -> RopeConfig {
    RopeConfig { theta: 10000.0, style: RopeStyle::RotateHalf, rotary_dim: dim, scaling: RopeScaling::None }
}

/// A Qwen3-like dense model: GQA 4/2 heads of 8, QK-norm, SiLU MLP.
pub fn tiny_dense() -> ModelConfig {
    ModelConfig {
        family: Family::Qwen3,
        architecture: "Qwen3ForCausalLM".into(),
        vocab_size: 100,
        hidden_size: 32,
        num_layers: 2,
        max_position_embeddings: 64,
        learned_positions: None,
        embedding_scale: 1.0,
        norm: NormConfig { kind: NormKind::RmsNorm, eps: 1e-6 },
        attention: AttentionConfig::Gqa(GqaConfig {
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 8,
            qkv_bias: false,
            o_bias: false,
            qk_norm: true,
            logit_softcap: None,
            rope: Some(rope(8)),
            softmax_scale: 8f32.powf(-0.5),
        }),
        post_branch_norms: false,
        mlp: Some(MlpConfig { intermediate_size: 48, activation: Activation::Silu, gated: true, bias: false }),
        moe: None,
        layer_ffn: vec![FfnKind::Dense; 2],
        tie_word_embeddings: false,
        output_scale: 1.0,
        quant: Default::default(),
    }
}

/// A DeepSeek-like model: MLA with q_lora, layer 0 dense, layer 1 MoE (8 experts, 4 groups).
pub fn tiny_mla_moe() -> ModelConfig {
    ModelConfig {
        family: Family::DeepseekV3,
        architecture: "DeepseekV3ForCausalLM".into(),
        vocab_size: 90,
        hidden_size: 32,
        num_layers: 2,
        max_position_embeddings: 64,
        learned_positions: None,
        embedding_scale: 1.0,
        norm: NormConfig { kind: NormKind::RmsNorm, eps: 1e-6 },
        attention: AttentionConfig::Mla(MlaConfig {
            num_heads: 4,
            q_lora_rank: Some(16),
            kv_lora_rank: 16,
            qk_nope_head_dim: 8,
            qk_rope_head_dim: 4,
            v_head_dim: 8,
            rope: RopeConfig {
                theta: 10000.0,
                style: RopeStyle::Interleaved,
                rotary_dim: 4,
                scaling: RopeScaling::None,
            },
            softmax_scale: 12f32.powf(-0.5),
        }),
        post_branch_norms: false,
        mlp: Some(MlpConfig { intermediate_size: 40, activation: Activation::Silu, gated: true, bias: false }),
        moe: Some(MoeConfig {
            num_experts: 8,
            top_k: 2,
            expert_intermediate_size: 16,
            activation: Activation::Silu,
            router: RouterConfig {
                scoring: Scoring::Sigmoid,
                logit_softcap: None,
                norm_topk_prob: true,
                correction_bias: true,
                n_group: 4,
                topk_group: 2,
                group_score: GroupScore::Top2Sum,
                routed_scaling_factor: 2.5,
            },
            shared: Some(SharedExpertConfig { intermediate_size: 16, sigmoid_gate: false }),
        }),
        layer_ffn: vec![FfnKind::Dense, FfnKind::Moe],
        tie_word_embeddings: false,
        output_scale: 1.0,
        quant: Default::default(),
    }
}
