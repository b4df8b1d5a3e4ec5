//! The CPU reference agrees with itself: sharded plans (tp2, tp2ep2, tp2ep2dp2) give the
//! logits of tp1, and a prefill followed by one decode step gives the last row of a full
//! prefill. Every family runs, from its real model_conf shrunk through overrides.

mod support;
use support::{flat, rel_l2};

use std::path::Path;

use fwdbench::config::hf::load_model_config;
use fwdbench::config::model::ModelConfig;
use fwdbench::dist::rank_layouts;
use fwdbench::exec::cpu::run::CpuModel;
use fwdbench::model::PlanOptions;
use fwdbench::plan::Shape;
use fwdbench::weights::RandomWeights;

const VOCAB: usize = 96;

fn tiny(model: &str) -> ModelConfig {
    tiny_with(model, &[])
}

/// `tiny` with 8 query heads (and 8 experts), so tp4 and tp8 shard the heads, replicate the
/// kv heads and give every EP rank its own experts.
fn wide(model: &str) -> ModelConfig {
    tiny_with(
        model,
        &[
            ("hidden_size", "64"),
            ("n_embd", "64"),
            ("num_attention_heads", "8"),
            ("n_head", "8"),
            ("num_local_experts", "8"),
        ],
    )
}

fn tiny_with(model: &str, extra: &[(&str, &str)]) -> ModelConfig {
    let common: &[(&str, &str)] = &[("vocab_size", "96")];
    let specific: &[(&str, &str)] = match model {
        "gpt3" => &[("n_embd", "32"), ("n_head", "4"), ("n_inner", "64"), ("n_positions", "32")],
        // Mixtral reads the same keys as Grok (its config lacks the soft-caps and scales).
        "grok" | "mixtral" => &[
            ("hidden_size", "32"),
            ("num_attention_heads", "4"),
            ("num_key_value_heads", "2"),
            ("head_dim", "8"),
            ("num_local_experts", "4"),
            ("intermediate_size", "16"),
            ("moe_intermediate_size", "16"),
            ("embedding_multiplier_scale", "5.6"),
            ("attn_logit_softcapping", "0.05"),
            ("router_logit_softcapping", "0.05"),
        ],
        "qwen" | "sigma" => &[
            ("hidden_size", "32"),
            ("num_attention_heads", "4"),
            ("num_key_value_heads", "2"),
            ("head_dim", "8"),
            ("num_experts", "8"),
            ("n_routed_experts", "8"),
            ("num_experts_per_tok", "2"),
            ("moe_intermediate_size", "16"),
            ("intermediate_size", "32"),
        ],
        // Llama 3 keeps its llama3 RoPE scaling, over 8 rotary dims.
        "qwen_dense" | "llama3_8b" => &[
            ("hidden_size", "32"),
            ("num_attention_heads", "4"),
            ("num_key_value_heads", "2"),
            ("intermediate_size", "48"),
        ],
        "deepseek" => &[
            ("hidden_size", "32"),
            ("num_attention_heads", "4"),
            ("num_key_value_heads", "4"),
            ("q_lora_rank", "16"),
            ("kv_lora_rank", "16"),
            ("qk_nope_head_dim", "8"),
            ("qk_rope_head_dim", "4"),
            ("v_head_dim", "8"),
            ("intermediate_size", "48"),
            ("moe_intermediate_size", "16"),
            ("n_routed_experts", "8"),
            ("num_experts_per_tok", "2"),
            ("n_group", "4"),
            ("topk_group", "2"),
        ],
        "sigma_v1" => &[
            ("hidden_size", "32"),
            ("num_attention_heads", "4"),
            ("num_key_heads", "2"),
            ("num_value_heads", "4"),
            ("head_dim", "8"),
            ("aug_q_intermediate_size", "24"),
            ("intermediate_size", "48"),
        ],
        other => panic!("no tiny overrides for {other}"),
    };
    let mut overrides: Vec<(String, String)> = common.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let keep: Vec<(String, String)> = specific.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    overrides.extend(keep);
    overrides.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let path = format!("model_conf/{model}/config_2l.json");
    // Keys a family does not use are rejected by nothing; apply only those present or needed.
    let text = std::fs::read_to_string(&path).unwrap();
    overrides.retain(|(k, _)| text.contains(&format!("\"{k}\"")) || matches!(k.as_str(), "head_dim" | "n_inner"));
    load_model_config(Path::new(&path), &overrides).unwrap_or_else(|e| panic!("{e}"))
}

fn tokens(batch: usize, len: usize, seed: u64) -> Vec<Vec<i32>> {
    let mut s = seed;
    (0..batch)
        .map(|_| {
            (0..len)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((s >> 33) % VOCAB as u64) as i32
                })
                .collect()
        })
        .collect()
}

const MODELS: [&str; 9] =
    ["grok", "qwen", "qwen_dense", "deepseek", "sigma", "sigma_v1", "gpt3", "llama3_8b", "mixtral"];

#[test]
fn sharded_plans_match_tp1() {
    let src = RandomWeights { seed: 3 };
    let ids = tokens(2, 5, 11);
    let opts = PlanOptions { all_logits: true, cache_len: None };
    for model in MODELS {
        let cfg = tiny(model);
        let reference = CpuModel::new(&cfg, rank_layouts(1, 1, 1).unwrap(), true)
            .forward(Shape::prefill(2, 5), opts, &src, &ids)
            .unwrap();
        for (tp, ep, dp) in [(2, 1, 1), (2, 2, 1), (2, 2, 2)] {
            let got = CpuModel::new(&cfg, rank_layouts(tp, ep, dp).unwrap(), true)
                .forward(Shape::prefill(2, 5), opts, &src, &ids)
                .unwrap();
            let err = rel_l2(&flat(&got), &flat(&reference));
            assert!(err < 1e-5, "{model} tp{tp} ep{ep} dp{dp}: rel-L2 {err:e} against tp1");
        }
    }
}

#[test]
fn prefill_then_decode_equals_full_prefill() {
    let src = RandomWeights { seed: 5 };
    let ids = tokens(2, 6, 23);
    for model in MODELS {
        let cfg = tiny(model);
        for (tp, ep, dp) in [(1, 1, 1), (2, 2, 2)] {
            let layouts = rank_layouts(tp, ep, dp).unwrap();
            let full = CpuModel::new(&cfg, layouts.clone(), true)
                .forward(Shape::prefill(2, 6), PlanOptions { all_logits: true, cache_len: None }, &src, &ids)
                .unwrap();
            let mut stepped = CpuModel::new(&cfg, layouts, true);
            let opts = PlanOptions { all_logits: false, cache_len: Some(6) };
            let head: Vec<Vec<i32>> = ids.iter().map(|s| s[..5].to_vec()).collect();
            let last: Vec<Vec<i32>> = ids.iter().map(|s| s[5..].to_vec()).collect();
            stepped.forward(Shape::prefill(2, 5), opts, &src, &head).unwrap();
            let decoded = stepped.forward(Shape::decode(2, 5), opts, &src, &last).unwrap();
            for s in 0..2 {
                let err = rel_l2(&decoded[s][0], &full[s][5]);
                assert!(
                    err < 1e-5,
                    "{model} tp{tp}: decode step differs from the full prefill's last row (rel-L2 {err:e})"
                );
            }
        }
    }
}

/// The seed's deployment shapes at 4 and 8 ranks: every rank's shard (heads split, kv heads
/// replicated, experts split, DP attention over 8 ranks) gives tp1's logits, prefill and a
/// decode step after it.
#[test]
fn wide_deployments_match_tp1() {
    let src = RandomWeights { seed: 7 };
    let ids = tokens(8, 4, 29);
    let head: Vec<Vec<i32>> = ids.iter().map(|s| s[..3].to_vec()).collect();
    let last: Vec<Vec<i32>> = ids.iter().map(|s| s[3..].to_vec()).collect();
    let all = PlanOptions { all_logits: true, cache_len: None };
    let cached = PlanOptions { all_logits: false, cache_len: Some(4) };
    for model in MODELS {
        let cfg = wide(model);
        assert_eq!(cfg.hidden_size, 64, "{model}: the wide overrides did not apply");
        let reference = CpuModel::new(&cfg, rank_layouts(1, 1, 1).unwrap(), true)
            .forward(Shape::prefill(8, 4), all, &src, &ids)
            .unwrap();
        for (tp, ep, dp) in [(4, 1, 1), (8, 1, 1), (4, 4, 1), (8, 8, 1), (8, 8, 8)] {
            let layouts = rank_layouts(tp, ep, dp).unwrap();
            let got =
                CpuModel::new(&cfg, layouts.clone(), true).forward(Shape::prefill(8, 4), all, &src, &ids).unwrap();
            let err = rel_l2(&flat(&got), &flat(&reference));
            assert!(err < 1e-5, "{model} tp{tp} ep{ep} dp{dp} prefill: rel-L2 {err:e} against tp1");
            let mut stepped = CpuModel::new(&cfg, layouts, true);
            stepped.forward(Shape::prefill(8, 3), cached, &src, &head).unwrap();
            let decoded = stepped.forward(Shape::decode(8, 3), cached, &src, &last).unwrap();
            for s in 0..8 {
                let err = rel_l2(&decoded[s][0], &reference[s][3]);
                assert!(err < 1e-5, "{model} tp{tp} ep{ep} dp{dp} decode: sequence {s} rel-L2 {err:e} against tp1");
            }
        }
    }
}
