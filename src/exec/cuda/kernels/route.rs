//! `kernels/route.cu`: MoE routing (scores, correction bias, group-limited top-k, weights).

use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::linear::linear_call;
use super::prepare::{kernel, Call, Prep};
use super::ptr::{ConstF32Ptr, F32Ptr, I32Ptr};
use crate::config::model::{GroupScore, Scoring};
use crate::plan::{ExpertChoice, Op};

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

/// Threads per block of `moe_route_choice` (one token each).
pub const ROUTE_CHOICE_THREADS: u32 = 128;

/// The kernel's `mode` values ([`ExpertChoice`] without its data).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpertChoiceCode {
    Router = 0,
    Balanced = 1,
    Uniform = 2,
}

/// `moe_route_choice`: overwrites `ids` `[tokens, top_k]` (the router's choice, in place)
/// with the balanced or uniform choice; route.cu's head comment gives the rules.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MoeRouteChoiceParams {
    pub ids: I32Ptr,
    pub tokens: i32,
    pub top_k: i32,
    pub num_experts: i32,
    /// An [`ExpertChoiceCode`].
    pub mode: i32,
    /// Balanced: the expert-parallel shards the remainder is spread over.
    pub ep_groups: i32,
    /// Uniform: the draws' seed.
    pub seed: u64,
}
unsafe impl DeviceRepr for MoeRouteChoiceParams {}
pub const MOE_ROUTE_CHOICE: (&str, &str) = ("route", "moe_route_choice");

/// The replacement call for `choice`, or `None` for the router's own choice.
pub fn route_choice_params(
    choice: ExpertChoice,
    ids: I32Ptr,
    tokens: i32,
    top_k: i32,
    num_experts: i32,
) -> Option<MoeRouteChoiceParams> {
    let (mode, ep_groups, seed) = match choice {
        ExpertChoice::Router => return None,
        ExpertChoice::Balanced { ep_groups } => (ExpertChoiceCode::Balanced, ep_groups as i32, 0),
        ExpertChoice::Uniform { seed } => (ExpertChoiceCode::Uniform, 1, seed),
    };
    Some(MoeRouteChoiceParams { ids, tokens, top_k, num_experts, mode: mode as i32, ep_groups, seed })
}

/// One thread per token, 128 per block.
pub fn moe_route_choice_launch(tokens: usize) -> LaunchConfig {
    let blocks = tokens.div_ceil(ROUTE_CHOICE_THREADS as usize).clamp(1, 65535);
    LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (ROUTE_CHOICE_THREADS, 1, 1), shared_mem_bytes: 0 }
}

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

/// `Op::Route`: the fp32 router logits by cuBLASLt, then the top-k kernel, then (under
/// `--routing balanced|uniform`) the choice kernel over the ids it wrote.
pub fn prepare(cx: &mut Prep, op: &Op) -> anyhow::Result<Vec<Call>> {
    let Op::Route { x, weight, correction_bias, logits, ids, weights, router, top_k, choice } = op else {
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
    let tokens = p.tokens;
    let mut calls = vec![gemm, kernel(MOE_ROUTE, moe_route_launch(tokens as usize), p)];
    if let Some(c) = route_choice_params(*choice, p.out_ids, tokens, p.top_k, p.num_experts) {
        anyhow::ensure!(
            c.top_k <= c.num_experts && c.top_k as usize <= MOE_ROUTE_MAX_TOP_K,
            "--routing {}: top_k = {} must be at most the {} experts (and {MOE_ROUTE_MAX_TOP_K})",
            choice.mode().name(),
            c.top_k,
            c.num_experts
        );
        calls.push(kernel(MOE_ROUTE_CHOICE, moe_route_choice_launch(tokens as usize), c));
    }
    Ok(calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warp_per_token() {
        assert_eq!(moe_route_launch(8192).grid_dim.0, 2048);
        assert_eq!(moe_route_launch(1).grid_dim.0, 1);
        assert_eq!(moe_route_choice_launch(8192).grid_dim.0, 64);
        assert_eq!(moe_route_choice_launch(1).grid_dim.0, 1);
    }

    #[test]
    fn choice_params_carry_the_mode_and_its_data() {
        assert!(route_choice_params(ExpertChoice::Router, 8, 4, 2, 16).is_none());
        let b = route_choice_params(ExpertChoice::Balanced { ep_groups: 8 }, 8, 4, 2, 16).unwrap();
        assert_eq!((b.mode, b.ep_groups, b.tokens, b.top_k, b.num_experts), (1, 8, 4, 2, 16));
        let u = route_choice_params(ExpertChoice::Uniform { seed: 77 }, 8, 4, 2, 16).unwrap();
        assert_eq!((u.mode, u.seed), (ExpertChoiceCode::Uniform as i32, 77));
    }
}
