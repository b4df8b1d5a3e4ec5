//! Llama 3.x and Mixtral configs: what they resolve to, Llama 3 RoPE scaling against
//! frequencies worked out by hand, and the clear errors for what fwdbench does not run.
//! (Their CPU consistency over tp/ep/dp runs in cpu_consistency.rs with every family.)

use std::path::Path;

use fwdbench::config::hf::{load_model_config, parse_model_config};
use fwdbench::config::model::{AttentionConfig, Family, FfnKind, GqaConfig, ModelConfig, RopeScaling, Scoring};
use serde_json::{json, Value};

fn shipped(model: &str, mconf: &str) -> ModelConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("model_conf/{model}/config_{mconf}.json"));
    load_model_config(&path, &[]).unwrap_or_else(|e| panic!("{e}"))
}

fn gqa(c: &ModelConfig) -> &GqaConfig {
    match &c.attention {
        AttentionConfig::Gqa(a) => a,
        other => panic!("not GQA: {other:?}"),
    }
}

#[test]
fn llama_3_1_configs_resolve_to_dense_gqa_with_llama3_rope() {
    for (model, hidden, layers, heads, inter) in
        [("llama3_8b", 4096, 32, 32, 14336), ("llama3_70b", 8192, 80, 64, 28672)]
    {
        let c = shipped(model, "full");
        let a = gqa(&c);
        assert_eq!((c.family, c.hidden_size, c.num_layers, c.vocab_size), (Family::Llama, hidden, layers, 128256));
        assert_eq!((a.num_heads, a.num_kv_heads, a.head_dim, a.qkv_bias, a.qk_norm), (heads, 8, 128, false, false));
        assert_eq!(c.mlp.as_ref().unwrap().intermediate_size, inter);
        assert!(c.layer_ffn.iter().all(|k| *k == FfnKind::Dense) && c.moe.is_none() && !c.tie_word_embeddings);
        let rope = a.rope.unwrap();
        assert_eq!(rope.theta, 500_000.0);
        let RopeScaling::Llama3(l) = rope.scaling else { panic!("{model}: {:?}", rope.scaling) };
        assert_eq!(
            (l.factor, l.low_freq_factor, l.high_freq_factor, l.original_max_position_embeddings),
            (8.0, 1.0, 4.0, 8192)
        );
        assert_eq!(c.norm.eps, 1e-5);
    }
}

#[test]
fn llama3_rope_frequencies_match_hand_computed_values() {
    // theta 500000, 128 dims: f_i = 500000^(-i/64), wavelength 2*pi/f_i. With factor 8,
    // low 1, high 4 and an 8192-token pre-training context, wavelengths below 2048 keep
    // f_i, above 8192 become f_i/8, and between them s = (8192/wavelength - 1)/3 mixes
    // (1-s) f_i/8 + s f_i. Pair 29: wavelength 2401.74, s = 0.80366, 0.0021665708. Pair 30:
    // wavelength 2948.30, s = 0.59284, 0.0013718936. Pair 34: 6695.11, s = 0.07453. Pair 35:
    // 8218.72 (just past 8192), f/8. Pair 63: f/8 = 3.0689e-7.
    let rope = gqa(&shipped("llama3_8b", "full")).rope.unwrap();
    let f = rope.inv_freqs();
    assert_eq!(f.len(), 64);
    let expect = [
        (0, 1.0),
        (20, 0.016560440080994446),
        (29, 0.002166570763503359),
        (30, 0.0013718935677611381),
        (34, 0.0001785078127679964),
        (35, 9.556212353964683e-05),
        (63, 3.068925988914511e-07),
    ];
    for (i, want) in expect {
        let rel = (f[i] - want).abs() / want;
        assert!(rel < 1e-12, "pair {i}: {} against {want}", f[i]);
    }
    assert_eq!(rope.attention_factor(), 1.0, "Llama 3 scaling leaves cos/sin unscaled");
}

#[test]
fn mixtral_resolves_to_softmax_top2_moe_without_a_shared_expert() {
    let c = shipped("mixtral", "full");
    let a = gqa(&c);
    assert_eq!((c.family, c.hidden_size, c.num_layers, c.vocab_size), (Family::Mixtral, 4096, 32, 32000));
    assert_eq!((a.num_heads, a.num_kv_heads, a.head_dim), (32, 8, 128));
    assert!(matches!(a.rope.unwrap().scaling, RopeScaling::None) && a.rope.unwrap().theta == 1e6);
    let m = c.moe.as_ref().unwrap();
    assert_eq!((m.num_experts, m.top_k, m.expert_intermediate_size), (8, 2, 14336));
    assert_eq!((m.router.scoring, m.router.norm_topk_prob, m.router.correction_bias), (Scoring::Softmax, true, false));
    assert!(m.shared.is_none() && c.mlp.is_none() && c.layer_ffn.iter().all(|k| *k == FfnKind::Moe));
}

fn llama_json() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 64, "hidden_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 48, "max_position_embeddings": 128,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64}
    })
}

#[test]
fn llama_defaults_follow_hf() {
    let c = parse_model_config(&llama_json(), "l.json").unwrap();
    let a = gqa(&c);
    // num_key_value_heads absent: MHA; head_dim absent: H / nq; rms_norm_eps 1e-6.
    assert_eq!((a.num_kv_heads, a.head_dim, c.norm.eps), (4, 8, 1e-6));
    let mut biased = llama_json();
    biased["attention_bias"] = json!(true);
    let b = parse_model_config(&biased, "l.json").unwrap();
    assert!(gqa(&b).qkv_bias && gqa(&b).o_bias);
}

#[test]
fn unsupported_llama_and_mixtral_settings_are_one_sentence() {
    let err = |j: Value| parse_model_config(&j, "cfg.json").unwrap_err().to_string();
    let mut j = llama_json();
    j["rope_scaling"]["high_freq_factor"] = json!(1.0);
    let e = err(j);
    assert!(e.contains("cfg.json") && e.contains("high_freq_factor") && e.contains("greater than"), "{e}");
    let mut j = llama_json();
    j["rope_scaling"].as_object_mut().unwrap().remove("low_freq_factor");
    let e = err(j);
    assert!(e.contains("rope_scaling.low_freq_factor") && e.contains("missing"), "{e}");
    let mut j = llama_json();
    j["rope_scaling"].as_object_mut().unwrap().remove("rope_type");
    let e = err(j);
    assert!(e.contains("rope_type") && e.contains("llama3"), "a scaling key without a type: {e}");
    let mut j = llama_json();
    j["mlp_bias"] = json!(true);
    assert!(err(j).contains("mlp_bias"));
    let mut j = llama_json();
    j["architectures"] = json!(["MixtralForCausalLM"]);
    j["model_type"] = json!("mixtral");
    j["num_local_experts"] = json!(4);
    j["num_experts_per_tok"] = json!(2);
    j["rope_scaling"] = Value::Null;
    assert_eq!(parse_model_config(&j, "m.json").unwrap().family, Family::Mixtral);
    j["sliding_window"] = json!(4096);
    let e = err(j.clone());
    assert!(e.contains("sliding_window") && e.contains("not implemented"), "{e}");
    j["sliding_window"] = Value::Null;
    j["num_experts_per_tok"] = json!(5);
    let e = err(j);
    assert!(e.contains("num_experts_per_tok") && e.contains("num_local_experts"), "{e}");
}

#[test]
fn qwen_sigma_is_the_seeds_qwen3_moe_stand_in() {
    let c = shipped("qwen_sigma", "full");
    let a = gqa(&c);
    assert_eq!((c.family, c.hidden_size, c.num_layers, c.vocab_size), (Family::Qwen3Moe, 5120, 63, 200064));
    assert_eq!((a.num_heads, a.num_kv_heads, a.head_dim, a.qk_norm), (64, 8, 128, true));
    let m = c.moe.as_ref().unwrap();
    assert_eq!((m.num_experts, m.top_k, m.expert_intermediate_size, m.router.norm_topk_prob), (96, 8, 2160, true));
    let RopeScaling::Yarn(y) = a.rope.unwrap().scaling else { panic!("the seed's config uses YaRN") };
    assert_eq!((y.factor, y.original_max_position_embeddings), (40.0, 4096));
    // The seed's mconfs: full (63 layers) and layer (3), plus fwdbench's 2l.
    assert_eq!(shipped("qwen_sigma", "layer").num_layers, 3);
    assert_eq!(shipped("qwen_sigma", "2l").num_layers, 2);
}
