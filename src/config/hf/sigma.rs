//! Sigma V2 (MoE, models.md §5.1) and Sigma v1 (DiffQKV, §5.2).

use super::common::{
    activation, check_gqa_heads, check_moe, dense_mlp_if_used, gqa, head_dim, max_positions, rms_norm, routed_scaling,
    scoring, shared_experts, Dims, Ffn,
};
use super::keys::{Keys, Result};
use super::rope::parse_rope;
use crate::config::model::*;

// ---------------------------------------------------------------------------------------
// Sigma V2: GQA + QK-norm + sigmoid-routed MoE (ltp-sglang `SigmaV2ForCausalLM`).
//
// `qk_layernorm` (default true), `attention_bias` (default false, all four projections),
// `n_routed_experts` (the expert count; not `num_experts`), `num_experts_per_tok`,
// `moe_intermediate_size`, `n_shared_experts` (default 0), `norm_topk_prob` (default true,
// the published value; only applied when k > 1), `routed_scaling_factor` (default 1.0),
// `scoring_func` ("sigmoid" default, "softmax" for the older checkpoints), `topk_method`
// ("noaux_tc" default: correction bias added for selection), `first_k_dense_replace`
// (default 0) dense layers of width `intermediate_size`. No expert groups.
// ---------------------------------------------------------------------------------------

pub(crate) fn parse_v2(keys: &Keys) -> Result<ModelConfig> {
    let dims = Dims::read(keys, "the model width (5120 for Sigma V2)")?;
    let num_kv = keys.positive("num_key_value_heads", "the number of key/value heads")?;
    check_gqa_heads(keys, "num_attention_heads", dims.num_heads, "num_key_value_heads", num_kv)?;
    let max_pos = max_positions(keys)?;
    let dh = head_dim(keys, dims.hidden, dims.num_heads, None)?;
    let act = activation(keys, "hidden_act", Activation::Silu)?;
    let bias = keys.bool_or("attention_bias", false)?;
    let rope = parse_rope(keys, dh, RopeStyle::RotateHalf, max_pos)?.rope;

    let num_experts = match keys.usize("n_routed_experts")? {
        Some(e) => e,
        None if keys.has("num_experts") => {
            return Err(keys.missing(
                "n_routed_experts",
                "Sigma V2 names its expert count `n_routed_experts`; `num_experts` is the Qwen spelling, rename it",
            ))
        }
        None => return Err(keys.missing("n_routed_experts", "the number of routed experts (96 for Sigma V2)")),
    };
    let first_dense = keys.usize_or("first_k_dense_replace", 0)?;
    let layer_ffn: Vec<FfnKind> =
        (0..dims.num_layers).map(|i| if i >= first_dense { FfnKind::Moe } else { FfnKind::Dense }).collect();

    let top_k = keys.req_usize("num_experts_per_tok", "experts per token (8 for Sigma V2)")?;
    let scoring = scoring(keys, "sigmoid")?;
    let correction_bias = match keys.str("topk_method")?.unwrap_or("noaux_tc") {
        "noaux_tc" => true,
        "greedy" => false,
        other => return Err(keys.unsupported("topk_method", format!("\"{other}\""), "use \"noaux_tc\" or \"greedy\"")),
    };
    let expert_width = keys.req_usize("moe_intermediate_size", "the routed experts' width (2160 for Sigma V2)")?;
    let moe = MoeConfig {
        num_experts,
        top_k,
        expert_intermediate_size: expert_width,
        activation: act,
        router: RouterConfig {
            scoring,
            logit_softcap: None,
            // Renormalising a single weight would force it to 1; the reference skips it.
            norm_topk_prob: keys.bool_or("norm_topk_prob", true)? && top_k > 1,
            correction_bias,
            n_group: 1,
            topk_group: 1,
            group_score: GroupScore::Top2Sum,
            routed_scaling_factor: routed_scaling(keys, 1.0)?,
        },
        shared: shared_experts(keys, 0, expert_width)?,
    };
    let moe = if layer_ffn.contains(&FfnKind::Moe) {
        check_moe(keys, "n_routed_experts", &moe)?;
        Some(moe)
    } else {
        None
    };
    let mlp = dense_mlp_if_used(keys, &layer_ffn, act, "the dense layers' MLP width (first_k_dense_replace > 0)")?;

    let attention = GqaConfig {
        qkv_bias: bias,
        o_bias: bias,
        qk_norm: keys.bool_or("qk_layernorm", true)?,
        ..gqa(dims.num_heads, num_kv, dh, Some(rope))
    };
    Ok(dims.config(
        Family::SigmaV2,
        max_pos,
        rms_norm(keys, "rms_norm_eps", 1e-6)?,
        AttentionConfig::Gqa(attention),
        Ffn { mlp, moe, layer_ffn },
        keys.bool_or("tie_word_embeddings", false)?,
    ))
}

// ---------------------------------------------------------------------------------------
// Sigma v1: DiffQKV attention, dense Llama-style block. No public config exists, so these
// keys are fwdbench's own (also documented in model_conf/sigma_v1/README.md):
//
//   model_type "sigma_v1", architectures ["SigmaV1ForCausalLM"]
//   hidden_size, num_hidden_layers, vocab_size, max_position_embeddings   (required)
//   num_attention_heads   query heads nq                                  (required)
//   num_key_heads         K heads nk; nq % nk == 0                        (required)
//   num_value_heads       V heads nv; nq % nv == 0                        (required)
//   head_dim              shared by Q, K and V                            (default H/nq)
//   aug_q_intermediate_size  width of the augmented-Q gated MLP           (absent or 0: none)
//   intermediate_size     SwiGLU FFN width                                (required)
//   hidden_act            FFN and augmented-Q activation                  (default "silu")
//   rms_norm_eps          (default 1e-6)
//   rope_theta / rope_scaling / rope_parameters  as for Llama             (default 10000)
//   tie_word_embeddings   (default false)
//
// Query head i reads K head floor(i*nk/nq) and V head floor(i*nv/nq) (FlexHeadFA, paper §3.2).
// ---------------------------------------------------------------------------------------

pub(crate) fn parse_v1(keys: &Keys) -> Result<ModelConfig> {
    let dims = Dims::read(keys, "the model width (4096 for Sigma-10B)")?;
    let num_heads = dims.num_heads;
    let num_k = keys.positive("num_key_heads", "the number of K heads (4 for Sigma-10B)")?;
    let num_v = keys.positive("num_value_heads", "the number of V heads (16 for Sigma-10B)")?;
    check_gqa_heads(keys, "num_attention_heads", num_heads, "num_key_heads", num_k)?;
    check_gqa_heads(keys, "num_attention_heads", num_heads, "num_value_heads", num_v)?;
    let max_pos = max_positions(keys)?;
    let dh = head_dim(keys, dims.hidden, num_heads, None)?;
    let act = activation(keys, "hidden_act", Activation::Silu)?;
    let aug_q = keys.usize_or("aug_q_intermediate_size", 0)?;
    let intermediate = keys.positive("intermediate_size", "the FFN width (14336 for Sigma-10B)")?;
    let rope = parse_rope(keys, dh, RopeStyle::RotateHalf, max_pos)?.rope;
    let attention = AttentionConfig::DiffQkv(DiffQkvConfig {
        num_heads,
        num_k_heads: num_k,
        num_v_heads: num_v,
        head_dim: dh,
        aug_q_intermediate: (aug_q > 0).then_some(aug_q),
        rope,
        softmax_scale: (dh as f64).powf(-0.5) as f32,
    });
    let ffn = Ffn {
        mlp: Some(MlpConfig { intermediate_size: intermediate, activation: act, gated: true, bias: false }),
        moe: None,
        layer_ffn: vec![FfnKind::Dense; dims.num_layers],
    };
    Ok(dims.config(
        Family::SigmaV1,
        max_pos,
        rms_norm(keys, "rms_norm_eps", 1e-6)?,
        attention,
        ffn,
        keys.bool_or("tie_word_embeddings", false)?,
    ))
}
