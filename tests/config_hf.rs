//! HF config.json -> ModelConfig: every shipped config, every dialect, every error.

use std::path::{Path, PathBuf};

use fwdbench::config::hf::{apply_overrides, load_model_config, parse_model_config};
use fwdbench::config::model::*;
use serde_json::{json, Value};

fn conf_path(model: &str, variant: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("model_conf").join(model).join(format!("config_{variant}.json"))
}

fn raw(model: &str, variant: &str) -> Value {
    let text = std::fs::read_to_string(conf_path(model, variant)).expect("shipped config");
    serde_json::from_str(&text).expect("shipped config is JSON")
}

fn load(model: &str, variant: &str) -> ModelConfig {
    load_model_config(&conf_path(model, variant), &[]).unwrap_or_else(|e| panic!("{e}"))
}

/// Parses `base` with `edits` applied as `--set` overrides.
fn with(base: Value, edits: &[(&str, &str)]) -> Result<ModelConfig, String> {
    let mut j = base;
    let edits: Vec<(String, String)> = edits.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    apply_overrides(&mut j, &edits, "test.json").map_err(|e| e.to_string())?;
    parse_model_config(&j, "test.json").map_err(|e| e.to_string())
}

fn without(mut base: Value, key: &str) -> Value {
    base.as_object_mut().unwrap().remove(key);
    base
}

fn err(result: Result<ModelConfig, String>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

fn gqa(c: &ModelConfig) -> &GqaConfig {
    match &c.attention {
        AttentionConfig::Gqa(a) => a,
        other => panic!("not GQA: {other:?}"),
    }
}

fn mla(c: &ModelConfig) -> &MlaConfig {
    match &c.attention {
        AttentionConfig::Mla(a) => a,
        other => panic!("not MLA: {other:?}"),
    }
}

#[test]
fn every_shipped_config_parses_and_two_layer_variants_keep_every_layer_type() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("model_conf");
    let mut seen = 0;
    for model in std::fs::read_dir(&dir).unwrap() {
        let model = model.unwrap().path();
        let mut variants = Vec::new();
        for file in std::fs::read_dir(&model).unwrap() {
            let path = file.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("config_") && name.ends_with(".json") {
                let config = load_model_config(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(config.layer_ffn.len(), config.num_layers, "{name}");
                variants.push((name, config));
                seen += 1;
            }
        }
        let full = variants.iter().find(|(n, _)| n == "config_full.json").map(|(_, c)| c).expect("config_full.json");
        let two = variants.iter().find(|(n, _)| n == "config_2l.json").map(|(_, c)| c).expect("config_2l.json");
        assert_eq!(two.num_layers, 2, "{}", model.display());
        for kind in [FfnKind::Dense, FfnKind::Moe] {
            assert_eq!(full.layer_ffn.contains(&kind), two.layer_ffn.contains(&kind), "{}", model.display());
        }
    }
    assert!(seen >= 14, "expected 7 models x 2 configs, found {seen}");
}

#[test]
fn gpt3_175b() {
    let c = load("gpt3", "full");
    assert_eq!((c.family, c.hidden_size, c.num_layers, c.vocab_size), (Family::Gpt3, 12288, 96, 50257));
    assert_eq!(c.learned_positions, Some(2048));
    assert_eq!(c.norm, NormConfig { kind: NormKind::LayerNorm, eps: 1e-5 });
    let a = gqa(&c);
    assert_eq!((a.num_heads, a.num_kv_heads, a.head_dim, a.qkv_bias, a.o_bias), (96, 96, 128, true, true));
    assert!(a.rope.is_none());
    assert_eq!(a.softmax_scale, (128f32).sqrt().recip());
    let mlp = c.mlp.as_ref().unwrap();
    assert_eq!(
        (mlp.intermediate_size, mlp.activation, mlp.gated, mlp.bias),
        (49152, Activation::GeluTanh, false, true)
    );
    assert!(c.tie_word_embeddings);
    // HF attribute_map aliases and n_inner null.
    let c = with(
        json!({"model_type": "gpt2", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 1,
        "max_position_embeddings": 32, "vocab_size": 10, "n_inner": null, "activation_function": "gelu"}),
        &[],
    )
    .unwrap();
    assert_eq!(
        (c.mlp.as_ref().unwrap().intermediate_size, c.mlp.as_ref().unwrap().activation),
        (256, Activation::GeluErf)
    );
}

#[test]
fn gpt3_rejects_what_sglang_rejects() {
    let base = raw("gpt3", "2l");
    for (key, value) in [
        ("scale_attn_by_inverse_layer_idx", "true"),
        ("reorder_and_upcast_attn", "true"),
        ("scale_attn_weights", "false"),
        ("activation_function", "relu"),
    ] {
        let e = err(with(base.clone(), &[(key, value)]));
        assert!(e.contains(key) && e.contains("test.json"), "{e}");
    }
    let e = err(with(base, &[("hidden_size", "4096")]));
    assert!(e.contains("n_embd") && e.contains("hidden_size") && e.contains("contradictory"), "{e}");
}

#[test]
fn grok_sglang_dialect() {
    let c = load("grok", "full");
    assert_eq!((c.family, c.hidden_size, c.num_layers, c.vocab_size), (Family::Grok1, 6144, 64, 131072));
    let a = gqa(&c);
    assert_eq!((a.num_heads, a.num_kv_heads, a.head_dim), (48, 8, 128));
    assert_eq!(a.logit_softcap, Some(30.0));
    assert_eq!(a.rope.unwrap().theta, 10000.0);
    assert!((a.softmax_scale - 0.088_388_35).abs() < 1e-7);
    let moe = c.moe.as_ref().unwrap();
    assert_eq!((moe.num_experts, moe.top_k, moe.expert_intermediate_size), (8, 2, 32768));
    assert_eq!(moe.activation, Activation::GeluErf);
    assert_eq!(moe.router.scoring, Scoring::Softmax);
    assert_eq!(moe.router.logit_softcap, Some(30.0));
    assert!(!moe.router.norm_topk_prob);
    assert!(c.post_branch_norms && !c.tie_word_embeddings && c.mlp.is_none());
    assert!(c.layer_ffn.iter().all(|f| *f == FfnKind::Moe));
    assert!((c.embedding_scale - 78.383_67).abs() < 1e-4 && (c.output_scale - 0.577_350_3).abs() < 1e-6);
    // router soft-cap 0 switches it off; tanh GELU spelling.
    let c = with(raw("grok", "2l"), &[("router_logit_softcapping", "0"), ("hidden_act", "gelu_pytorch_tanh")]).unwrap();
    assert_eq!(c.moe.as_ref().unwrap().router.logit_softcap, None);
    assert_eq!(c.moe.as_ref().unwrap().activation, Activation::GeluTanh);
    // SGLang reads num_local_experts only.
    let e = err(with(without(raw("grok", "2l"), "num_local_experts"), &[("num_experts", "8")]));
    assert!(e.contains("num_local_experts") && e.contains("grok-1"), "{e}");
}

#[test]
fn grok_hpcai_dialect() {
    let j = json!({"architectures": ["Grok1ModelForCausalLM"], "model_type": "grok-1", "vocab_size": 131072,
        "hidden_size": 6144, "intermediate_size": 32768, "num_hidden_layers": 2, "num_attention_heads": 48,
        "num_key_value_heads": 8, "attn_output_multiplier": 0.08838834764831845, "max_attn_value": 30.0,
        "max_position_embeddings": 8192, "embedding_multiplier_scale": 78.38367176906169,
        "output_multiplier_scale": 0.5773502691896257, "rms_norm_eps": 1e-5, "num_experts_per_tok": 2,
        "num_experts": 8});
    let c = with(j, &[]).unwrap();
    let a = gqa(&c);
    assert_eq!((a.head_dim, a.logit_softcap), (128, Some(30.0)));
    assert!((a.softmax_scale - 0.088_388_35).abs() < 1e-7);
    assert_eq!(a.rope.unwrap().theta, 10000.0);
    assert!(c.tie_word_embeddings);
    assert_eq!(c.moe.as_ref().unwrap().router.logit_softcap, None);
    assert_eq!(c.moe.as_ref().unwrap().num_experts, 8);
}

#[test]
fn qwen3_moe_keeps_head_dim_128_not_hidden_over_heads() {
    let c = load("qwen", "full");
    assert_eq!(c.hidden_size / c.attention.num_heads(), 64);
    let a = gqa(&c);
    assert_eq!(
        (a.num_heads, a.num_kv_heads, a.head_dim, a.qk_norm, a.qkv_bias, a.o_bias),
        (64, 4, 128, true, false, false)
    );
    let rope = a.rope.unwrap();
    assert_eq!(
        (rope.theta, rope.rotary_dim, rope.style, rope.scaling),
        (1e6, 128, RopeStyle::RotateHalf, RopeScaling::None)
    );
    let moe = c.moe.as_ref().unwrap();
    assert_eq!((moe.num_experts, moe.top_k, moe.expert_intermediate_size), (128, 8, 1536));
    assert!(moe.router.norm_topk_prob && moe.shared.is_none());
    assert!(c.mlp.is_none(), "no dense layer, so no dense MLP");
    assert_eq!(c.layer_ffn, vec![FfnKind::Moe; 94]);
}

#[test]
fn qwen_sparse_layer_rules() {
    let c = with(
        raw("qwen", "2l"),
        &[("num_hidden_layers", "6"), ("mlp_only_layers", "[0, 5]"), ("decoder_sparse_step", "2")],
    )
    .unwrap();
    use FfnKind::*;
    assert_eq!(c.layer_ffn, vec![Dense, Moe, Dense, Moe, Dense, Dense]);
    assert_eq!(c.mlp.as_ref().unwrap().intermediate_size, 12288);
    let c = with(raw("qwen", "2l"), &[("num_experts", "0")]).unwrap();
    assert!(c.moe.is_none() && c.layer_ffn == vec![Dense, Dense]);
    // The HF alias, consistent and contradictory.
    assert!(with(raw("qwen", "2l"), &[("num_local_experts", "128")]).is_ok());
    let e = err(with(raw("qwen", "2l"), &[("num_local_experts", "64")]));
    assert!(e.contains("num_experts") && e.contains("num_local_experts"), "{e}");
    let e = err(with(raw("qwen", "2l"), &[("mlp_only_layers", "[7]")]));
    assert!(e.contains("mlp_only_layers"), "{e}");
    let e = err(with(raw("qwen", "2l"), &[("decoder_sparse_step", "0")]));
    assert!(e.contains("decoder_sparse_step"), "{e}");
}

#[test]
fn qwen2_dense_and_qwen3_dense() {
    let c = load("qwen_dense", "full");
    let a = gqa(&c);
    assert_eq!((c.family, a.head_dim, a.qkv_bias, a.o_bias, a.qk_norm), (Family::Qwen2, 128, true, false, false));
    assert_eq!(c.mlp.as_ref().unwrap().intermediate_size, 29568);
    let qwen3 = with(
        raw("qwen_dense", "2l"),
        &[("architectures", r#"["Qwen3ForCausalLM"]"#), ("model_type", "qwen3"), ("attention_bias", "true")],
    )
    .unwrap();
    let a = gqa(&qwen3);
    // Qwen3Config's head_dim defaults to 128 regardless of H/nq.
    assert_eq!((qwen3.family, a.head_dim, a.qkv_bias, a.o_bias, a.qk_norm), (Family::Qwen3, 128, true, true, true));
}

#[test]
fn qwen2_moe_shared_expert_with_sigmoid_gate() {
    let j = json!({"architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe", "vocab_size": 151936,
        "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 2, "num_attention_heads": 16,
        "num_key_value_heads": 16, "max_position_embeddings": 8192, "rope_theta": 1000000.0,
        "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632, "num_experts_per_tok": 4,
        "num_experts": 60});
    let c = with(j.clone(), &[]).unwrap();
    let moe = c.moe.as_ref().unwrap();
    assert_eq!(moe.shared, Some(SharedExpertConfig { intermediate_size: 5632, sigmoid_gate: true }));
    assert!(!moe.router.norm_topk_prob, "HF default false for Qwen2-MoE");
    assert!(gqa(&c).qkv_bias && !gqa(&c).o_bias);
    let c = with(j, &[("shared_expert_intermediate_size", "0"), ("qkv_bias", "false")]).unwrap();
    assert!(c.moe.as_ref().unwrap().shared.is_none() && !gqa(&c).qkv_bias);
}

#[test]
fn deepseek_v3_mla_router_and_softmax_scale() {
    let c = load("deepseek", "full");
    let a = mla(&c);
    assert_eq!(
        (a.num_heads, a.q_lora_rank, a.kv_lora_rank, a.qk_head_dim(), a.cache_dim()),
        (128, Some(1536), 512, 192, 576)
    );
    assert!((a.softmax_scale - 0.135_233_8).abs() < 5e-7, "{}", a.softmax_scale);
    assert_eq!((a.rope.style, a.rope.rotary_dim, a.rope.theta), (RopeStyle::Interleaved, 64, 10000.0));
    assert_eq!(a.rope.attention_factor(), 1.0);
    let moe = c.moe.as_ref().unwrap();
    let r = &moe.router;
    assert_eq!(
        (r.scoring, r.correction_bias, r.group_score, r.n_group, r.topk_group),
        (Scoring::Sigmoid, true, GroupScore::Top2Sum, 8, 4)
    );
    assert!(r.norm_topk_prob && r.routed_scaling_factor == 2.5);
    assert_eq!(moe.shared, Some(SharedExpertConfig { intermediate_size: 2048, sigmoid_gate: false }));
    assert_eq!(c.layer_ffn.iter().filter(|f| **f == FfnKind::Dense).count(), 3);
    assert_eq!(c.mlp.as_ref().unwrap().intermediate_size, 18432);
    assert_eq!(load("deepseek", "2l").layer_ffn, vec![FfnKind::Dense, FfnKind::Moe]);
}

#[test]
fn deepseek_yarn_inv_freqs_ramp_from_10_to_23() {
    let rope = mla(&load("deepseek", "full")).rope;
    assert_eq!(rope.yarn_correction_range(), Some((10.0, 23.0)));
    let base = rope.base_inv_freqs();
    let freqs = rope.inv_freqs();
    assert_eq!(freqs.len(), 32);
    // Values printed by transformers 5.17 `_compute_yarn_parameters` (f32) for this config.
    let hf = [
        (0, 1.0),
        (10, 0.056_234_128_773),
        (11, 0.039_006_926_119),
        (16, 0.005_500_000_436),
        (22, 1.778_279_402e-4),
        (23, 3.333_803_397e-5),
        (31, 3.333_803_534e-6),
    ];
    for (i, want) in hf {
        assert!((freqs[i] / want - 1.0).abs() < 1e-6, "pair {i}: {} vs HF {want}", freqs[i]);
    }
    for i in 0..32 {
        let ratio = freqs[i] / base[i];
        if i <= 10 {
            assert!((ratio - 1.0).abs() < 1e-12, "pair {i} keeps its frequency");
        } else if i >= 23 {
            assert!((ratio - 1.0 / 40.0).abs() < 1e-12, "pair {i} is interpolated");
        } else {
            let ramp = (i as f64 - 10.0) / 13.0;
            assert!((ratio - (ramp / 40.0 + 1.0 - ramp)).abs() < 1e-12, "pair {i}");
        }
    }
}

#[test]
fn deepseek_layer_rule_honours_moe_layer_freq() {
    let c = with(
        raw("deepseek", "2l"),
        &[("num_hidden_layers", "6"), ("first_k_dense_replace", "1"), ("moe_layer_freq", "2")],
    )
    .unwrap();
    use FfnKind::*;
    assert_eq!(c.layer_ffn, vec![Dense, Dense, Moe, Dense, Moe, Dense]);
}

#[test]
fn deepseek_v2_lite_style_softmax_greedy_without_q_lora() {
    let j = json!({"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "vocab_size": 102400,
        "hidden_size": 2048, "intermediate_size": 10944, "moe_intermediate_size": 1408, "num_hidden_layers": 3,
        "num_attention_heads": 16, "n_shared_experts": 2, "n_routed_experts": 64, "num_experts_per_tok": 6,
        "first_k_dense_replace": 1, "kv_lora_rank": 512, "q_lora_rank": null, "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64, "v_head_dim": 128, "topk_method": "greedy", "scoring_func": "softmax",
        "n_group": 1, "topk_group": 1, "max_position_embeddings": 163840, "rope_theta": 10000,
        "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096, "beta_fast": 32,
            "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707}});
    let c = with(j.clone(), &[]).unwrap();
    let a = mla(&c);
    assert_eq!(a.q_lora_rank, None);
    let expected = (192f64).powf(-0.5) * (0.1 * 0.707 * 40f64.ln() + 1.0).powi(2);
    assert!((a.softmax_scale as f64 - expected).abs() < 1e-7);
    let r = &c.moe.as_ref().unwrap().router;
    assert_eq!(
        (r.scoring, r.correction_bias, r.n_group, r.topk_group, r.norm_topk_prob),
        (Scoring::Softmax, false, 1, 1, false)
    );
    assert_eq!(r.routed_scaling_factor, 1.0);
    assert_eq!(c.moe.as_ref().unwrap().shared.as_ref().unwrap().intermediate_size, 2816);
    let e = err(with(without(j, "q_lora_rank"), &[]));
    assert!(e.contains("q_lora_rank") && e.contains("null"), "{e}");
}

#[test]
fn sigma_v2_router_and_dense_prefix() {
    let c = load("sigma", "full");
    let a = gqa(&c);
    assert_eq!((a.num_heads, a.num_kv_heads, a.head_dim, a.qk_norm, a.qkv_bias), (64, 8, 128, true, false));
    let moe = c.moe.as_ref().unwrap();
    assert_eq!((moe.num_experts, moe.top_k, moe.expert_intermediate_size), (96, 8, 2160));
    let r = &moe.router;
    assert_eq!(
        (r.scoring, r.correction_bias, r.n_group, r.topk_group, r.norm_topk_prob),
        (Scoring::Sigmoid, true, 1, 1, true)
    );
    assert_eq!(r.routed_scaling_factor, 1.0);
    assert!(moe.shared.is_none() && c.mlp.is_none());
    let c = with(
        raw("sigma", "2l"),
        &[("first_k_dense_replace", "1"), ("num_experts_per_tok", "1"), ("n_shared_experts", "1")],
    )
    .unwrap();
    assert_eq!(c.layer_ffn, vec![FfnKind::Dense, FfnKind::Moe]);
    assert_eq!(c.mlp.as_ref().unwrap().intermediate_size, 7168);
    let moe = c.moe.as_ref().unwrap();
    assert!(!moe.router.norm_topk_prob, "no renormalisation with k = 1");
    assert_eq!(moe.shared.as_ref().unwrap().intermediate_size, 2160);
    let e = err(with(without(raw("sigma", "2l"), "n_routed_experts"), &[("num_experts", "96")]));
    assert!(e.contains("n_routed_experts"), "{e}");
}

#[test]
fn sigma_v1_diffqkv() {
    let c = load("sigma_v1", "full");
    let AttentionConfig::DiffQkv(a) = &c.attention else { panic!("not DiffQKV") };
    assert_eq!(
        (a.num_heads, a.num_k_heads, a.num_v_heads, a.head_dim, a.aug_q_intermediate),
        (32, 4, 16, 128, Some(6144))
    );
    assert_eq!((a.rope.theta, c.mlp.as_ref().unwrap().intermediate_size), (500000.0, 14336));
    let c = with(raw("sigma_v1", "2l"), &[("aug_q_intermediate_size", "0")]).unwrap();
    let AttentionConfig::DiffQkv(a) = &c.attention else { panic!() };
    assert_eq!(a.aug_q_intermediate, None);
    let e = err(with(raw("sigma_v1", "2l"), &[("num_value_heads", "12")]));
    assert!(e.contains("num_value_heads") && e.contains("num_attention_heads"), "{e}");
}

#[test]
fn rope_parameters_v5_equals_legacy_spelling() {
    let legacy = load("deepseek", "2l");
    let mut v5 = without(without(raw("deepseek", "2l"), "rope_scaling"), "rope_theta");
    v5["rope_parameters"] = json!({"rope_theta": 10000.0, "rope_type": "yarn", "factor": 40.0,
        "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0});
    let v5 = parse_model_config(&v5, "v5.json").unwrap();
    assert_eq!(legacy.attention, v5.attention);
    // Both spellings present and agreeing is fine; disagreeing is an error naming both keys.
    let both =
        with(raw("deepseek", "2l"), &[("rope_parameters", r#"{"rope_theta": 10000, "rope_type": "yarn"}"#)]).unwrap();
    assert_eq!(both.attention, legacy.attention);
    let e = err(with(raw("deepseek", "2l"), &[("rope_parameters", r#"{"rope_theta": 50000}"#)]));
    assert!(e.contains("rope_theta") && e.contains("rope_parameters.rope_theta") && e.contains("contradictory"), "{e}");
    let e = err(with(raw("deepseek", "2l"), &[("rope_parameters", r#"{"rope_type": "default"}"#)]));
    assert!(e.contains("rope_scaling.rope_type") && e.contains("rope_parameters"), "{e}");
}

#[test]
fn yarn_defaults_follow_hf() {
    // factor null -> max_pos / original; no mscale pair -> attention_factor = mscale(factor).
    let c = with(
        raw("qwen", "2l"),
        &[("rope_scaling", r#"{"rope_type": "yarn", "factor": null, "original_max_position_embeddings": 10240}"#)],
    )
    .unwrap();
    let Some(rope) = gqa(&c).rope else { panic!() };
    let RopeScaling::Yarn(y) = rope.scaling else { panic!("yarn") };
    assert_eq!((y.factor, y.beta_fast, y.beta_slow, y.truncate), (4.0, 32.0, 1.0, true));
    assert!((y.attention_factor - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-12);
    // mscale == mscale_all_dim -> factor 1 (the ltp qwen_sigma stand-in).
    let c = with(raw("qwen", "2l"), &[("rope_scaling", r#"{"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096, "mscale": 0.707, "mscale_all_dim": 0.707}"#)])
        .unwrap();
    assert_eq!(gqa(&c).rope.unwrap().attention_factor(), 1.0);
    assert_eq!(gqa(&c).softmax_scale, (128f32).sqrt().recip(), "Qwen applies no mscale to the softmax scale");
}

#[test]
fn unsupported_rope_types_are_named() {
    for kind in ["linear", "dynamic", "longrope"] {
        let e =
            err(with(raw("qwen", "2l"), &[("rope_scaling", &format!(r#"{{"rope_type": "{kind}", "factor": 8}}"#))]));
        assert!(e.contains(kind) && e.contains("rope_scaling.rope_type") && e.contains("yarn"), "{e}");
    }
}

/// (what, base config, overrides, words the message must contain)
type ErrorCase<'a> = (&'a str, Value, &'a [(&'a str, &'a str)], &'a [&'a str]);

#[test]
fn validation_errors_name_file_and_key() {
    let cases: &[ErrorCase] = &[
        ("missing", without(raw("qwen", "2l"), "hidden_size"), &[], &["hidden_size", "missing"]),
        ("wrong type", raw("qwen", "2l"), &[("num_hidden_layers", "\"two\"")], &["num_hidden_layers", "integer"]),
        ("zero heads", raw("qwen", "2l"), &[("num_attention_heads", "0")], &["num_attention_heads", "positive"]),
        ("gqa", raw("qwen", "2l"), &[("num_key_value_heads", "5")], &["num_attention_heads", "num_key_value_heads"]),
        ("top-k", raw("qwen", "2l"), &[("num_experts_per_tok", "200")], &["num_experts_per_tok", "num_experts"]),
        ("n_group", raw("deepseek", "2l"), &[("n_group", "7")], &["n_group", "n_routed_experts"]),
        ("topk_group", raw("deepseek", "2l"), &[("topk_group", "9")], &["topk_group", "n_group"]),
        ("bool", raw("deepseek", "2l"), &[("norm_topk_prob", "1")], &["norm_topk_prob", "true or false"]),
        ("activation", raw("qwen", "2l"), &[("hidden_act", "relu")], &["hidden_act", "relu"]),
        ("theta", raw("qwen", "2l"), &[("rope_theta", "-1")], &["rope_theta"]),
        ("eps", raw("qwen", "2l"), &[("rms_norm_eps", "0")], &["rms_norm_eps"]),
        ("scoring", raw("deepseek", "2l"), &[("scoring_func", "sqrtsoftplus")], &["scoring_func"]),
        ("sliding", raw("qwen", "2l"), &[("use_sliding_window", "true")], &["use_sliding_window"]),
        ("not a list", raw("qwen", "2l"), &[("architectures", "\"Qwen3MoeForCausalLM\"")], &["architectures"]),
    ];
    for (what, base, edits, needles) in cases {
        let e = err(with(base.clone(), edits));
        assert!(e.contains("test.json"), "{what}: {e}");
        for n in *needles {
            assert!(e.contains(n), "{what}: `{n}` not in: {e}");
        }
    }
}

#[test]
fn load_applies_overrides_including_nested_keys() {
    let path = conf_path("deepseek", "2l");
    let set = |k: &str, v: &str| (k.to_string(), v.to_string());
    let c = load_model_config(&path, &[set("rope_scaling.factor", "4"), set("num_hidden_layers", "3")]).unwrap();
    assert_eq!(c.num_layers, 3);
    let RopeScaling::Yarn(y) = mla(&c).rope.scaling else { panic!() };
    assert_eq!(y.factor, 4.0);
    let e = load_model_config(Path::new("/nonexistent/config.json"), &[]).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/config.json"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("config_bad.json");
    std::fs::write(&bad, "{\n  \"a\": 1,\n}").unwrap();
    let e = load_model_config(&bad, &[]).unwrap_err().to_string();
    assert!(e.contains("config_bad.json") && e.contains("line 3"), "{e}");
}

#[test]
fn shipped_configs_have_no_unread_keys() {
    // Every key of the configs we ship is read by its family (or is inert HF bookkeeping):
    // a warning here means a parser ignores a key a user would expect to matter.
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    for dir in ["model_conf", "tests/fixtures"] {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            for f in std::fs::read_dir(entry.path()).into_iter().flatten().flatten() {
                let name = f.file_name().to_string_lossy().to_string();
                if name.starts_with("config") && name.ends_with(".json") {
                    files.push(f.path());
                }
            }
        }
    }
    assert!(files.len() >= 20, "found only {} configs", files.len());
    let mut warnings = Vec::new();
    for f in &files {
        let loaded = fwdbench::config::hf::load_model_config_with_warnings(f, &[]).unwrap();
        warnings.extend(loaded.warnings);
    }
    assert!(warnings.is_empty(), "{warnings:#?}");
}

#[test]
fn typos_and_unread_overrides_are_warned_about_with_a_suggestion() {
    let path = std::path::Path::new("model_conf/qwen/config_2l.json");
    let set = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
    let w =
        fwdbench::config::hf::load_model_config_with_warnings(path, &set("num_hiden_layers", "4")).unwrap().warnings;
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("--set num_hiden_layers") && w[0].contains("did you mean `num_hidden_layers`"), "{w:?}");
    // A YaRN key without a type would silently mean no scaling: an error naming both.
    let e = fwdbench::config::hf::load_model_config(path, &set("rope_scaling.factor", "4")).unwrap_err().to_string();
    assert!(e.contains("rope_type") && e.contains("rope_scaling.factor") && e.contains("--set"), "{e}");
    let yarn = vec![
        ("rope_scaling.type".to_string(), "yarn".to_string()),
        ("rope_scaling.factr".to_string(), "4".to_string()),
    ];
    let w = fwdbench::config::hf::load_model_config_with_warnings(path, &yarn).unwrap().warnings;
    assert!(w.iter().any(|w| w.contains("rope_scaling.factr") && w.contains("did you mean `factor`")), "{w:?}");
}

#[test]
fn sizes_are_bounded_and_errors_name_the_set_flag() {
    let path = std::path::Path::new("model_conf/qwen/config_2l.json");
    for (key, value) in [
        ("num_hidden_layers", "18446744073709551615"),
        ("num_hidden_layers", "1000000"),
        ("moe_intermediate_size", "999999999999999"),
        ("hidden_size", "1e9"),
    ] {
        let e = fwdbench::config::hf::load_model_config(path, &[(key.to_string(), value.to_string())])
            .unwrap_err()
            .to_string();
        assert!(e.contains(key) && e.contains("--set"), "{key}={value}: {e}");
    }
    // Each size in range, but their product is not a model anyone can plan.
    let big = vec![
        ("hidden_size".to_string(), "1048576".to_string()),
        ("moe_intermediate_size".to_string(), "1048576".to_string()),
    ];
    let e = fwdbench::config::hf::load_model_config(path, &big).unwrap_err().to_string();
    assert!(e.contains("parameters"), "{e}");
}
