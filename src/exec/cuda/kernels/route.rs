//! `kernels/route.cu`: MoE routing (scores, correction bias, group-limited top-k, weights).

use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::linear::linear_call;
use super::prepare::{kernel, Call, Prep};
use super::ptr::{ConstF32Ptr, F32Ptr, I32Ptr};
use crate::config::model::{GroupScore, Scoring};
use crate::plan::Op;

/// Most experts the kernel handles (16 per lane of a warp).
pub const MOE_ROUTE_MAX_EXPERTS: usize = 512;
/// Most experts per token (one output slot per lane).
pub const MOE_ROUTE_MAX_TOP_K: usize = 32;
/// Tokens per block: one warp each.
pub const ROUTE_WARPS: usize = 4;

/// The kernel's `scoring` values.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoringCode {
    Softmax = 0,
    Sigmoid = 1,
}

/// The kernel's `group_score` values: how a group of experts is ranked.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupScoreCode {
    /// Sum of the group's two best choice scores (DeepSeek-V3).
    Top2Sum = 0,
    /// The group's best choice score (DeepSeek-V2).
    Max = 1,
}

/// Per token: soft-cap, softmax/sigmoid scores, `+ correction_bias` for selection,
/// group-limited masking when `n_group > 1`, top-k (ties to the lower index), weights =
/// unbiased scores, renormalised when `renormalize != 0`, times `routed_scaling`.
/// See the head comment of route.cu for the exact arithmetic the CPU reference mirrors.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MoeRouteParams {
    /// `[tokens, num_experts]`, row stride `ld`.
    pub logits: ConstF32Ptr,
    pub ld: i32,
    pub tokens: i32,
    pub num_experts: i32,
    pub top_k: i32,
    /// A [`ScoringCode`] ([`scoring_code`]).
    pub scoring: i32,
    /// `cap * tanh(l / cap)` when > 0.
    pub softcap: f32,
    /// `[num_experts]`, nullable (0).
    pub correction_bias: ConstF32Ptr,
    pub n_group: i32,
    pub topk_group: i32,
    /// A [`GroupScoreCode`] ([`group_score_code`]).
    pub group_score: i32,
    pub renormalize: i32,
    pub routed_scaling: f32,
    /// `[tokens, top_k]`.
    pub out_ids: I32Ptr,
    /// `[tokens, top_k]`.
    pub out_weights: F32Ptr,
}
unsafe impl DeviceRepr for MoeRouteParams {}
pub const MOE_ROUTE: (&str, &str) = ("route", "moe_route");

pub fn scoring_code(scoring: Scoring) -> i32 {
    let code = match scoring {
        Scoring::Softmax => ScoringCode::Softmax,
        Scoring::Sigmoid => ScoringCode::Sigmoid,
    };
    code as i32
}

pub fn group_score_code(score: GroupScore) -> i32 {
    let code = match score {
        GroupScore::Top2Sum => GroupScoreCode::Top2Sum,
        GroupScore::Max => GroupScoreCode::Max,
    };
    code as i32
}

/// 128 threads (4 tokens) per block.
pub fn moe_route_launch(tokens: usize) -> LaunchConfig {
    let blocks = tokens.div_ceil(ROUTE_WARPS).clamp(1, 65535);
    LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (32 * ROUTE_WARPS as u32, 1, 1), shared_mem_bytes: 0 }
}

/// `Op::Route`: the fp32 router logits by cuBLASLt, then the top-k kernel.
pub fn prepare(cx: &mut Prep, op: &Op) -> anyhow::Result<Vec<Call>> {
    let Op::Route { x, weight, correction_bias, logits, ids, weights, router, top_k } = op else {
        unreachable!("route::prepare got {op:?}")
    };
    let gemm = linear_call(cx, *x, *weight, None, 1.0, *logits)?;
    let p = MoeRouteParams {
        logits: cx.ptr(*logits),
        ld: cx.ld(*logits),
        tokens: cx.rows(*x),
        num_experts: cx.plan.weight(*weight).rows as i32,
        top_k: *top_k as i32,
        scoring: scoring_code(router.scoring),
        softcap: router.logit_softcap.unwrap_or(0.0),
        correction_bias: cx.w_or_null(*correction_bias),
        n_group: router.n_group as i32,
        topk_group: router.topk_group as i32,
        group_score: group_score_code(router.group_score),
        renormalize: router.norm_topk_prob as i32,
        routed_scaling: router.routed_scaling_factor,
        out_ids: cx.ptr(*ids),
        out_weights: cx.ptr(*weights),
    };
    Ok(vec![gemm, kernel(MOE_ROUTE, moe_route_launch(cx.rows(*x) as usize), p)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warp_per_token() {
        assert_eq!(moe_route_launch(8192).grid_dim.0, 2048);
        assert_eq!(moe_route_launch(1).grid_dim.0, 1);
    }
}
