//! Qwen2 / Qwen3 dense and Qwen2-MoE / Qwen3-MoE (models.md §3, transformers 5.17).
//!
//! * Qwen2: q/k/v biases always, o_proj none (hard-coded in HF `Qwen2Attention`).
//! * Qwen3: `attention_bias` (default false) on all four projections, QK-norm; an absent
//!   `head_dim` means HF's class default 128, not H/nq.
//! * Qwen2-MoE: `qkv_bias` (default true); a shared expert with a sigmoid gate when
//!   `shared_expert_intermediate_size` > 0; `norm_topk_prob` default false.
//! * Qwen3-MoE: as Qwen3 attention, no shared expert; `head_dim` absent means H/nq.
//!
//! Layer `i` of a MoE model is sparse iff `i` is not in `mlp_only_layers`, the expert count
//! (`num_experts`, alias `num_local_experts`) is positive and `(i+1) % decoder_sparse_step
//! == 0`, as HF decides; dense layers use `intermediate_size`.

use super::common::{
    activation, check_gqa_heads, check_moe, dense_mlp_if_used, gqa, head_dim, max_positions, reject_true, rms_norm,
    softmax_router, Dims, Ffn,
};
use super::keys::{Keys, Result};
use super::rope::parse_rope;
use crate::config::model::*;

pub(crate) fn parse(keys: &Keys, family: Family) -> Result<ModelConfig> {
    let is_moe = matches!(family, Family::Qwen2Moe | Family::Qwen3Moe);
    let qwen3 = matches!(family, Family::Qwen3 | Family::Qwen3Moe);

    let dims = Dims::read(keys, "the model width")?;
    // HF's class defaults for kv heads are fixed numbers (32 or 4), not nq; an absent key
    // is more likely a mistake than a request for those, so ask for it.
    let num_kv = keys.positive("num_key_value_heads", "the number of key/value heads (GQA)")?;
    check_gqa_heads(keys, "num_attention_heads", dims.num_heads, "num_key_value_heads", num_kv)?;
    let max_pos = max_positions(keys)?;
    let dh = head_dim(keys, dims.hidden, dims.num_heads, (family == Family::Qwen3).then_some(128))?;
    reject_true(keys, "use_sliding_window", "sliding-window attention is not implemented; set it to false")?;
    let act = activation(keys, "hidden_act", Activation::Silu)?;

    let (qkv_bias, o_bias) = match family {
        Family::Qwen2 => (true, false),
        Family::Qwen2Moe => (keys.bool_or("qkv_bias", true)?, false),
        _ => {
            let bias = keys.bool_or("attention_bias", false)?;
            (bias, bias)
        }
    };
    let rope = parse_rope(keys, dh, RopeStyle::RotateHalf, max_pos)?.rope;

    let (moe, layer_ffn) = if is_moe {
        moe_layers(keys, family, dims.num_layers, act)?
    } else {
        (None, vec![FfnKind::Dense; dims.num_layers])
    };
    let hint = if is_moe {
        "the dense-layer MLP width; some layers are dense (mlp_only_layers / decoder_sparse_step)"
    } else {
        "the MLP width"
    };
    let mlp = dense_mlp_if_used(keys, &layer_ffn, act, hint)?;
    let attention = GqaConfig { qkv_bias, o_bias, qk_norm: qwen3, ..gqa(dims.num_heads, num_kv, dh, Some(rope)) };
    Ok(dims.config(
        family,
        max_pos,
        rms_norm(keys, "rms_norm_eps", 1e-6)?,
        AttentionConfig::Gqa(attention),
        Ffn { mlp, moe, layer_ffn },
        keys.bool_or("tie_word_embeddings", false)?,
    ))
}

fn moe_layers(
    keys: &Keys,
    family: Family,
    num_layers: usize,
    act: Activation,
) -> Result<(Option<MoeConfig>, Vec<FfnKind>)> {
    let num_experts = keys.req_aliased_usize(
        "num_experts",
        "num_local_experts",
        "the number of routed experts (0 = all layers dense)",
    )?;
    let step = keys.usize_or("decoder_sparse_step", 1)?;
    let step = keys.check_positive("decoder_sparse_step", step)?;
    let mlp_only = keys.usize_list("mlp_only_layers")?;
    if let Some(bad) = mlp_only.iter().find(|&&i| i >= num_layers) {
        return Err(keys.bad_value(
            "mlp_only_layers",
            bad,
            format!("layer indices below num_hidden_layers = {num_layers}"),
        ));
    }
    let layer_ffn: Vec<FfnKind> = (0..num_layers)
        .map(|i| {
            let sparse = !mlp_only.contains(&i) && num_experts > 0 && (i + 1) % step == 0;
            if sparse {
                FfnKind::Moe
            } else {
                FfnKind::Dense
            }
        })
        .collect();
    if !layer_ffn.contains(&FfnKind::Moe) {
        return Ok((None, layer_ffn));
    }
    let shared = if family == Family::Qwen2Moe {
        let width =
            keys.req_usize("shared_expert_intermediate_size", "the shared expert's width (0 = no shared expert)")?;
        (width > 0).then_some(SharedExpertConfig { intermediate_size: width, sigmoid_gate: true })
    } else {
        None
    };
    let moe = MoeConfig {
        num_experts,
        top_k: keys.req_usize("num_experts_per_tok", "experts per token")?,
        expert_intermediate_size: keys.req_usize("moe_intermediate_size", "the routed experts' width")?,
        activation: act,
        router: RouterConfig { norm_topk_prob: keys.bool_or("norm_topk_prob", false)?, ..softmax_router() },
        shared,
    };
    check_moe(keys, "num_experts", &moe)?;
    Ok((Some(moe), layer_ffn))
}
