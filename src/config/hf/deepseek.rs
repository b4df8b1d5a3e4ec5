//! DeepSeek-V3 and V2 (MLA + DeepSeekMoE, models.md §4).
//!
//! Shape keys are required (`q_lora_rank` may be null: a plain q projection as in
//! V2-Lite). Router keys default as HF's config classes do for the model type:
//! V3 `scoring_func` sigmoid / `topk_method` noaux_tc / groups 8 of which 4 kept /
//! `norm_topk_prob` true / `routed_scaling_factor` 2.5 / 1 shared expert / 3 dense layers;
//! V2 softmax / greedy / no groups / false / 1.0 / 2 shared / none.
//! Layer `i` is MoE iff experts are configured, `i >= first_k_dense_replace` and
//! `i % moe_layer_freq == 0` (SGLang's rule; HF ignores `moe_layer_freq`, equal for V3).
//! The softmax scale is `(dn + dr)^-0.5`, times `mscale(factor, mscale_all_dim)^2` under
//! YaRN when `mscale_all_dim` is set (HF `yarn_apply_mscale`; 0.1352338 for V3).

use super::common::{
    activation, check_moe, dense_mlp_if_used, max_positions, reject_true, rms_norm, routed_scaling, scoring,
    shared_experts, Dims, Ffn,
};
use super::keys::{Keys, Result};
use super::rope::parse_rope;
use crate::config::model::*;

struct RouterDefaults {
    scoring: &'static str,
    topk_method: &'static str,
    n_group: usize,
    topk_group: usize,
    norm_topk_prob: bool,
    routed_scaling_factor: f64,
    n_shared_experts: usize,
    first_k_dense_replace: usize,
}

const V3: RouterDefaults = RouterDefaults {
    scoring: "sigmoid",
    topk_method: "noaux_tc",
    n_group: 8,
    topk_group: 4,
    norm_topk_prob: true,
    routed_scaling_factor: 2.5,
    n_shared_experts: 1,
    first_k_dense_replace: 3,
};
const V2: RouterDefaults = RouterDefaults {
    scoring: "softmax",
    topk_method: "greedy",
    n_group: 1,
    topk_group: 1,
    norm_topk_prob: false,
    routed_scaling_factor: 1.0,
    n_shared_experts: 2,
    first_k_dense_replace: 0,
};

pub(crate) fn parse(keys: &Keys, v2: bool) -> Result<ModelConfig> {
    let defaults = if v2 { &V2 } else { &V3 };
    let dims = Dims::read(keys, "the model width (7168 for V3)")?;
    let max_pos = max_positions(keys)?;
    // HF's DeepSeek configs carry a kv-head count that MLA does not use.
    keys.known_unused(&["num_key_value_heads"]);
    if !keys.contains_key("q_lora_rank") {
        return Err(keys.missing("q_lora_rank", "the query low-rank width, or null for a plain q projection"));
    }
    let q_lora_rank = match keys.usize("q_lora_rank")? {
        Some(r) => Some(keys.check_positive("q_lora_rank", r)?),
        None => None,
    };
    let kv_lora_rank = keys.positive("kv_lora_rank", "the latent KV width (512 for V3)")?;
    let dn = keys.positive("qk_nope_head_dim", "the non-rotary query/key head dim (128 for V3)")?;
    let dr = keys.positive("qk_rope_head_dim", "the rotary query/key head dim (64 for V3)")?;
    let dv = keys.positive("v_head_dim", "the value head dim (128 for V3)")?;
    reject_true(keys, "attention_bias", "MLA projections without biases only; set it to false")?;
    reject_true(keys, "mlp_bias", "MLPs without biases only; set it to false")?;
    let act = activation(keys, "hidden_act", Activation::Silu)?;

    let style = if keys.bool_or("rope_interleave", true)? { RopeStyle::Interleaved } else { RopeStyle::RotateHalf };
    let rope = parse_rope(keys, dr, style, max_pos)?;
    let softmax_scale = ((dn + dr) as f64).powf(-0.5) * rope.mla_softmax_mscale();

    let num_experts = keys.aliased_usize("n_routed_experts", "num_local_experts")?;
    let num_experts = match num_experts {
        Some(e) => Some(e),
        None => keys.usize("num_experts")?, // DeepseekV2Config's alias
    };
    let first_dense = keys.usize_or("first_k_dense_replace", defaults.first_k_dense_replace)?;
    let freq = keys.usize_or("moe_layer_freq", 1)?;
    let freq = keys.check_positive("moe_layer_freq", freq)?;
    let layer_ffn: Vec<FfnKind> = (0..dims.num_layers)
        .map(|i| if num_experts.is_some() && i >= first_dense && i % freq == 0 { FfnKind::Moe } else { FfnKind::Dense })
        .collect();

    let moe = match num_experts {
        Some(e) if layer_ffn.contains(&FfnKind::Moe) => Some(moe(keys, defaults, e, act)?),
        _ => None,
    };
    let mlp = dense_mlp_if_used(keys, &layer_ffn, act, "the dense layers' MLP width (18432 for V3)")?;

    let attention = AttentionConfig::Mla(MlaConfig {
        num_heads: dims.num_heads,
        q_lora_rank,
        kv_lora_rank,
        qk_nope_head_dim: dn,
        qk_rope_head_dim: dr,
        v_head_dim: dv,
        rope: rope.rope,
        softmax_scale: softmax_scale as f32,
    });
    Ok(dims.config(
        Family::DeepseekV3,
        max_pos,
        rms_norm(keys, "rms_norm_eps", 1e-6)?,
        attention,
        Ffn { mlp, moe, layer_ffn },
        keys.bool_or("tie_word_embeddings", false)?,
    ))
}
fn moe(keys: &Keys, defaults: &RouterDefaults, num_experts: usize, act: Activation) -> Result<MoeConfig> {
    let scoring = scoring(keys, defaults.scoring)?;
    let (correction_bias, group_score, grouped) = match keys.str("topk_method")?.unwrap_or(defaults.topk_method) {
        "noaux_tc" => (true, GroupScore::Top2Sum, true),
        "group_limited_greedy" => (false, GroupScore::Max, true),
        // Plain top-k: HF's V2 greedy path ignores the group keys.
        "greedy" => (false, GroupScore::Max, false),
        other => {
            return Err(keys.unsupported(
                "topk_method",
                format!("\"{other}\""),
                "use \"noaux_tc\", \"group_limited_greedy\" or \"greedy\"",
            ))
        }
    };
    let (n_group, topk_group) = if grouped {
        (keys.usize_or("n_group", defaults.n_group)?, keys.usize_or("topk_group", defaults.topk_group)?)
    } else {
        (1, 1)
    };
    let expert_width = keys.req_usize("moe_intermediate_size", "the routed experts' width (2048 for V3)")?;
    let moe = MoeConfig {
        num_experts,
        top_k: keys.req_usize("num_experts_per_tok", "experts per token (8 for V3)")?,
        expert_intermediate_size: expert_width,
        activation: act,
        router: RouterConfig {
            scoring,
            logit_softcap: None,
            norm_topk_prob: keys.bool_or("norm_topk_prob", defaults.norm_topk_prob)?,
            correction_bias,
            n_group,
            topk_group,
            group_score,
            routed_scaling_factor: routed_scaling(keys, defaults.routed_scaling_factor)?,
        },
        shared: shared_experts(keys, defaults.n_shared_experts, expert_width)?,
    };
    check_moe(keys, "n_routed_experts", &moe)?;
    if group_score == GroupScore::Top2Sum && num_experts / n_group < 2 {
        return Err(keys.contradiction(format!(
            "`n_group` = {n_group} leaves fewer than 2 experts per group, but topk_method noaux_tc scores a group by its two best experts"
        )));
    }
    Ok(moe)
}
