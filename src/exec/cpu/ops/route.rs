//! MoE routing: which `top_k` experts each token goes to, and with what weight.
//!
//! One algorithm covers every router of models.md, switched by `RouterConfig`:
//! * Qwen2/3-MoE: softmax, top-k, renormalise per `norm_topk_prob`;
//! * Grok-1 (SGLang): logit soft-cap 30, softmax, top-2, no renormalisation;
//! * DeepSeek-V3: sigmoid, correction bias for selection, 8 groups scored by their top-2 sum
//!   with 4 kept, renormalise (`+1e-20`), × 2.5;
//! * Sigma V2: as DeepSeek-V3 with one group (the caller turns renormalisation off for k = 1);
//! * DeepSeek-V2: softmax, groups scored by their max.
//!
//! A benchmark can then replace the chosen experts (`ExpertChoice`, `--routing`) while the
//! weights stay the router's: [`replace_choice`].

use super::super::CpuRun;
use super::{matmul_nt, sigmoid, softcap, softmax_f64};
use crate::config::model::{GroupScore, RouterConfig, Scoring};
use crate::plan::{ExpertChoice, Op};
use crate::weights::rng::mix64;

/// Chosen experts per token: `ids[t·top_k + j]` with weight `weights[t·top_k + j]`, ordered
/// by descending selection score (ties: lower expert index first).
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    pub ids: Vec<usize>,
    pub weights: Vec<f32>,
}

/// Indices of `values` sorted by descending value, ties by ascending index.
fn ranked(values: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    // A stable sort keeps equal values in index order.
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    order
}

/// `logits [tokens, num_experts]` (f32 router output) -> the top-k experts of each token.
/// `correction_bias [num_experts]`, when given, shifts the selection scores only.
pub fn route(
    logits: &[f32],
    tokens: usize,
    num_experts: usize,
    top_k: usize,
    cfg: &RouterConfig,
    correction_bias: Option<&[f32]>,
) -> Routing {
    assert_eq!(
        logits.len(),
        tokens * num_experts,
        "route: logits have {} values, expected tokens*num_experts = {tokens}*{num_experts}",
        logits.len()
    );
    if let Some(bias) = correction_bias {
        assert_eq!(bias.len(), num_experts, "route: correction bias has {} values, expected {num_experts}", bias.len());
    }
    assert!(num_experts > 0 && top_k > 0, "route: needs at least one expert and top_k >= 1");
    let n_group = cfg.n_group.max(1);
    assert!(
        num_experts.is_multiple_of(n_group) && cfg.topk_group <= n_group,
        "route: {num_experts} experts cannot form n_group = {n_group} groups keeping topk_group = {}",
        cfg.topk_group
    );
    let group_size = num_experts / n_group;
    let selectable = if n_group > 1 { cfg.topk_group * group_size } else { num_experts };
    assert!(top_k <= selectable, "route: top_k = {top_k} exceeds the {selectable} experts left after group selection");

    let mut ids = Vec::with_capacity(tokens * top_k);
    let mut weights = Vec::with_capacity(tokens * top_k);
    for token_logits in logits.chunks_exact(num_experts) {
        let capped: Vec<f32> = match cfg.logit_softcap {
            Some(cap) => token_logits.iter().map(|&l| softcap(l, cap)).collect(),
            None => token_logits.to_vec(),
        };
        let scores: Vec<f32> = match cfg.scoring {
            Scoring::Softmax => softmax_f64(capped.iter().map(|&l| l as f64)).into_iter().map(|p| p as f32).collect(),
            Scoring::Sigmoid => capped.iter().map(|&l| sigmoid(l)).collect(),
        };
        let mut choice: Vec<f32> = match correction_bias {
            Some(bias) => scores.iter().zip(bias).map(|(s, b)| s + b).collect(),
            None => scores.clone(),
        };

        if n_group > 1 {
            let group_scores: Vec<f32> = choice
                .chunks_exact(group_size)
                .map(|group| {
                    let best = ranked(group);
                    match cfg.group_score {
                        // A one-expert group has no second best; its score is the one value.
                        GroupScore::Top2Sum => best.iter().take(2).map(|&e| group[e]).sum(),
                        GroupScore::Max => group[best[0]],
                    }
                })
                .collect();
            for &dropped in &ranked(&group_scores)[cfg.topk_group..] {
                choice[dropped * group_size..(dropped + 1) * group_size].fill(f32::NEG_INFINITY);
            }
        }

        let chosen = &ranked(&choice)[..top_k];
        let mut w: Vec<f64> = chosen.iter().map(|&e| scores[e] as f64).collect();
        if cfg.norm_topk_prob {
            let sum: f64 = w.iter().sum();
            let denom = match cfg.scoring {
                Scoring::Softmax => sum,
                Scoring::Sigmoid => sum + 1e-20,
            };
            w.iter_mut().for_each(|x| *x /= denom);
        }
        ids.extend_from_slice(chosen);
        weights.extend(w.iter().map(|&x| (x * cfg.routed_scaling_factor as f64) as f32));
    }
    Routing { ids, weights }
}

/// The balanced order's expert at position `i` of `0..experts`: experts dealt round-robin
/// over `ep_groups` contiguous shards (`i mod G` picks the shard, `i / G` the expert in
/// it), so a remainder of slots is spread over the ranks. `G` must divide `experts`;
/// otherwise one shard is assumed.
pub fn balanced_expert(i: usize, experts: usize, ep_groups: usize) -> usize {
    let g = if ep_groups > 0 && experts.is_multiple_of(ep_groups) { ep_groups } else { 1 };
    (i % g) * (experts / g) + i / g
}

/// Draw `draw` of token `token`'s uniform choice: a splitmix64 hash (rng.rs `mix64`)
/// modulo `experts`; route.cu's `moe_route_choice` is the same arithmetic. The seed is
/// mixed before the token index joins it: `seed ^ token` alone would give two seeds the
/// same set of token keys, only permuted, and so the same expert loads.
pub fn uniform_draw(seed: u64, token: usize, draw: u64, experts: usize) -> usize {
    (mix64(mix64(mix64(seed) ^ token as u64) ^ draw) % experts as u64) as usize
}

/// Replaces the experts in `ids` (`[tokens, top_k]`, the router's choice) per `choice`;
/// the weights beside them are untouched.
/// * Balanced: slot `s = t*top_k + j` takes [`balanced_expert`]`(s mod E)`. A token's
///   `top_k <= E` slots are consecutive positions, so its experts are distinct; expert e
///   gets `floor(T*k/E)` slots, plus one when its position is below `T*k mod E` (the
///   remainder goes to the first positions, which the order spreads over the shards).
/// * Uniform: token t draws experts [`uniform_draw`]`(seed, t, 0, 1, ...)`, skipping any
///   it already has, until it has `top_k`.
pub fn replace_choice(ids: &mut [usize], top_k: usize, experts: usize, choice: ExpertChoice) {
    assert!(top_k <= experts, "route: top_k = {top_k} exceeds the {experts} experts");
    match choice {
        ExpertChoice::Router => {}
        ExpertChoice::Balanced { ep_groups } => {
            for (s, id) in ids.iter_mut().enumerate() {
                *id = balanced_expert(s % experts, experts, ep_groups);
            }
        }
        ExpertChoice::Uniform { seed } => {
            for (t, token) in ids.chunks_exact_mut(top_k).enumerate() {
                let (mut picked, mut draw) = (0, 0);
                while picked < top_k {
                    let e = uniform_draw(seed, t, draw, experts);
                    draw += 1;
                    if !token[..picked].contains(&e) {
                        token[picked] = e;
                        picked += 1;
                    }
                }
            }
        }
    }
}

/// `Op::Route`: fp32 logits, then [`route`] into ids and weights, then the benchmark's
/// [`replace_choice`].
pub fn run(r: &mut CpuRun, op: &Op) {
    let Op::Route { x, weight, correction_bias, logits, ids, weights, router, top_k, choice } = op else {
        unreachable!("route::run got {op:?}")
    };
    let e = r.plan.weight(*weight).rows;
    let t_all = r.plan.rows(*x);
    let l = matmul_nt(&r.read(*x), t_all, x.cols, r.w(*weight), e);
    r.write(*logits, &l);
    let mut routing = route(&l, t_all, e, *top_k, router, correction_bias.map(|b| r.w(b)));
    replace_choice(&mut routing.ids, *top_k, e, *choice);
    r.write(*ids, &routing.ids.iter().map(|&i| i as f32).collect::<Vec<_>>());
    r.write(*weights, &routing.weights);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::cpu::ops::test_util::{assert_close, values};
    use proptest::prelude::*;

    fn softmax_cfg(norm: bool) -> RouterConfig {
        RouterConfig {
            scoring: Scoring::Softmax,
            logit_softcap: None,
            norm_topk_prob: norm,
            correction_bias: false,
            n_group: 1,
            topk_group: 1,
            group_score: GroupScore::Top2Sum,
            routed_scaling_factor: 1.0,
        }
    }

    fn deepseek_v3_cfg(n_group: usize, topk_group: usize) -> RouterConfig {
        RouterConfig {
            scoring: Scoring::Sigmoid,
            correction_bias: true,
            norm_topk_prob: true,
            n_group,
            topk_group,
            routed_scaling_factor: 2.5,
            ..softmax_cfg(true)
        }
    }

    #[test]
    fn softmax_top2_hand_computed() {
        // logits (0, ln 2, ln 3, ln 4): probs (1, 2, 3, 4) / 10.
        let logits = [0.0, 2f32.ln(), 3f32.ln(), 4f32.ln()];
        let plain = route(&logits, 1, 4, 2, &softmax_cfg(false), None);
        assert_eq!(plain.ids, vec![3, 2]);
        assert_close(&plain.weights, &[0.4, 0.3], 1e-6);
        let renorm = route(&logits, 1, 4, 2, &softmax_cfg(true), None);
        assert_close(&renorm.weights, &[4.0 / 7.0, 3.0 / 7.0], 1e-6);
    }

    #[test]
    fn softmax_over_all_experts_sums_to_one() {
        let logits = values(3 * 8, 21);
        let r = route(&logits, 3, 8, 8, &softmax_cfg(false), None);
        for t in 0..3 {
            let sum: f32 = r.weights[t * 8..(t + 1) * 8].iter().sum();
            assert!((sum - 1.0).abs() < 1e-6, "token {t}: {sum}");
        }
    }

    #[test]
    fn ties_pick_lower_index_first() {
        let r = route(&[1.0, 2.0, 2.0, 0.0, 2.0], 1, 5, 3, &softmax_cfg(false), None);
        assert_eq!(r.ids, vec![1, 2, 4]);
        let r = route(&[1.0, 3.0, 1.0, 1.0], 1, 4, 3, &softmax_cfg(false), None);
        assert_eq!(r.ids, vec![1, 0, 2]);
    }

    #[test]
    fn grok_softcap_flattens_router_logits() {
        // Soft-cap 1 maps logits (0, 10) to (0, tanh 10 ≈ 1): probs (1, e) / (1 + e).
        let cfg = RouterConfig { logit_softcap: Some(1.0), ..softmax_cfg(false) };
        let r = route(&[0.0, 10.0], 1, 2, 1, &cfg, None);
        let e = std::f32::consts::E;
        assert_eq!(r.ids, vec![1]);
        assert_close(&r.weights, &[e / (1.0 + e)], 1e-5);
    }

    #[test]
    fn correction_bias_moves_selection_but_not_weights() {
        let logits = [2.0, 1.0, 0.0, -1.0];
        let bias = [0.0, 0.0, 0.0, 5.0];
        let cfg = RouterConfig { norm_topk_prob: false, routed_scaling_factor: 1.0, ..deepseek_v3_cfg(1, 1) };
        let r = route(&logits, 1, 4, 2, &cfg, Some(&bias));
        assert_eq!(r.ids, vec![3, 0]);
        assert_close(&r.weights, &[sigmoid(-1.0), sigmoid(2.0)], 1e-7);
    }

    #[test]
    fn sigmoid_renorm_sums_to_scaling_factor() {
        let logits = values(4 * 16, 33);
        let bias = values(16, 34);
        let r = route(&logits, 4, 16, 4, &deepseek_v3_cfg(4, 2), Some(&bias));
        for t in 0..4 {
            let sum: f32 = r.weights[t * 4..(t + 1) * 4].iter().sum();
            assert!((sum - 2.5).abs() < 1e-5, "token {t}: {sum}");
        }
    }

    #[test]
    fn top2sum_groups_hand_computed() {
        // 4 groups of 3. Group 0 holds the single best expert but a weak second one, group 2
        // two good ones.
        let logits = [3.0, -5.0, -5.0, 0.0, 0.0, -1.0, 2.0, 2.0, -5.0, -2.0, -2.0, -2.0];
        let r = route(&logits, 1, 12, 2, &deepseek_v3_cfg(4, 1), None);
        assert_eq!(r.ids, vec![6, 7]);
        // Top-2 sums: g0 = 0.953 + 0.007 = 0.960, g1 = 0.5 + 0.5 = 1.0, g2 = 1.762, g3 = 0.238;
        // keeping two groups keeps g2 and g1, so expert 0 stays out despite the best score.
        let r = route(&logits, 1, 12, 3, &deepseek_v3_cfg(4, 2), None);
        assert_eq!(r.ids, vec![6, 7, 3]);
        // Max scoring ranks group 0 first.
        let cfg = RouterConfig { group_score: GroupScore::Max, ..deepseek_v3_cfg(4, 2) };
        let r = route(&logits, 1, 12, 3, &cfg, None);
        assert_eq!(r.ids, vec![0, 6, 7]);
    }

    #[test]
    #[should_panic(expected = "exceeds the 3 experts")]
    fn top_k_beyond_kept_groups_panics() {
        route(&[0.0; 12], 1, 12, 4, &deepseek_v3_cfg(4, 1), None);
    }

    fn counts(ids: &[usize], experts: usize) -> Vec<usize> {
        let mut c = vec![0; experts];
        ids.iter().for_each(|&e| c[e] += 1);
        c
    }

    #[test]
    fn balanced_hand_computed_with_a_remainder() {
        // 3 tokens x top-3 over 4 experts in 2 shards: order 0, 2, 1, 3 (shards dealt in turn);
        // 9 slots = 2 each + 1 for position 0 (expert 0).
        let mut ids = vec![9; 9];
        replace_choice(&mut ids, 3, 4, ExpertChoice::Balanced { ep_groups: 2 });
        assert_eq!(ids, vec![0, 2, 1, 3, 0, 2, 1, 3, 0]);
        assert_eq!(counts(&ids, 4), vec![3, 2, 2, 2]);
    }

    #[test]
    fn router_choice_is_left_alone() {
        let mut ids = vec![3, 1, 2, 0];
        replace_choice(&mut ids, 2, 4, ExpertChoice::Router);
        assert_eq!(ids, vec![3, 1, 2, 0]);
    }

    #[test]
    fn uniform_is_seeded_deterministic_and_distinct() {
        let draw = |seed| {
            let mut ids = vec![0; 50 * 8];
            replace_choice(&mut ids, 8, 16, ExpertChoice::Uniform { seed });
            ids
        };
        let a = draw(3);
        assert_eq!(a, draw(3), "deterministic");
        assert_ne!(a, draw(4), "seeded");
        assert_ne!(counts(&a, 16), counts(&draw(4), 16), "another seed, other loads (not the same ones permuted)");
        for token in a.chunks(8) {
            let distinct: std::collections::BTreeSet<_> = token.iter().collect();
            assert_eq!(distinct.len(), 8, "{token:?}");
        }
        // 400 draws over 16 experts: every expert is hit, none takes more than twice its share.
        assert!(counts(&a, 16).iter().all(|&c| c > 0 && c <= 50), "{:?}", counts(&a, 16));
        // top_k = E: every token takes every expert.
        let mut all = vec![0; 3 * 4];
        replace_choice(&mut all, 4, 4, ExpertChoice::Uniform { seed: 1 });
        assert!(all.chunks(4).all(|t| counts(t, 4) == vec![1; 4]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// With groups, every chosen expert lies in one of the `topk_group` best groups, the ids
        /// are distinct and ordered by descending biased score, and weights are the unbiased ones.
        #[test]
        fn grouped_selection_invariants(seed in any::<u64>(), k in 1usize..7, group_max in any::<bool>()) {
            let (experts, n_group, topk_group) = (32, 8, 3);
            let logits = values(experts, seed).iter().map(|x| x * 6.0).collect::<Vec<_>>();
            let bias = values(experts, seed ^ 7);
            let group_score = if group_max { GroupScore::Max } else { GroupScore::Top2Sum };
            let cfg = RouterConfig { group_score, norm_topk_prob: false, routed_scaling_factor: 1.0, ..deepseek_v3_cfg(n_group, topk_group) };
            let r = route(&logits, 1, experts, k, &cfg, Some(&bias));
            let choice: Vec<f32> = logits.iter().zip(&bias).map(|(&l, b)| sigmoid(l) + b).collect();
            let mut groups: Vec<(f32, usize)> = choice.chunks(4).enumerate().map(|(g, c)| {
                let mut s = c.to_vec();
                s.sort_by(|a, b| b.total_cmp(a));
                (if group_max { s[0] } else { s[0] + s[1] }, g)
            }).collect();
            groups.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let kept: Vec<usize> = groups[..topk_group].iter().map(|g| g.1).collect();
            for (j, &e) in r.ids.iter().enumerate() {
                prop_assert!(kept.contains(&(e / 4)), "expert {} from dropped group", e);
                prop_assert_eq!(r.weights[j], sigmoid(logits[e]));
                if j > 0 { prop_assert!(choice[r.ids[j - 1]] >= choice[e]); }
            }
            // Nothing better was left out among the kept groups.
            let worst_chosen = choice[r.ids[k - 1]];
            for e in (0..experts).filter(|e| kept.contains(&(e / 4)) && !r.ids.contains(e)) {
                prop_assert!(choice[e] <= worst_chosen);
            }
        }

        /// Balanced: every expert gets exactly `floor(T*k/E)`, plus one for the first
        /// `T*k mod E` positions of the order; each token's experts are distinct; each
        /// expert-parallel shard's total is within one of every other's.
        #[test]
        fn balanced_gives_every_expert_its_share(
            tokens in 1usize..300,
            experts_per_shard in 1usize..40,
            ep in prop_oneof![Just(1usize), Just(2), Just(4), Just(8)],
            k_frac in 0.0f64..1.0,
        ) {
            let experts = experts_per_shard * ep;
            let top_k = 1 + ((experts.min(16) - 1) as f64 * k_frac) as usize;
            let mut ids = vec![usize::MAX; tokens * top_k];
            replace_choice(&mut ids, top_k, experts, ExpertChoice::Balanced { ep_groups: ep });
            let (share, rem) = ((tokens * top_k) / experts, (tokens * top_k) % experts);
            let c = counts(&ids, experts);
            for pos in 0..experts {
                let e = balanced_expert(pos, experts, ep);
                prop_assert_eq!(c[e], share + usize::from(pos < rem), "expert {} (position {})", e, pos);
            }
            for token in ids.chunks(top_k) {
                let distinct: std::collections::BTreeSet<_> = token.iter().collect();
                prop_assert_eq!(distinct.len(), top_k);
            }
            let shard: Vec<usize> = c.chunks(experts_per_shard).map(|s| s.iter().sum()).collect();
            prop_assert!(shard.iter().max().unwrap() - shard.iter().min().unwrap() <= 1, "{:?}", shard);
        }
    }
}
