//! FP8 e4m3 block-scaled weights end to end on the CPU: a tiny DeepSeek-V3-style FP8
//! checkpoint written here in HF's layout (per-expert 2-D weights, `kv_a_proj_with_mqa`,
//! F8_E4M3 `weight` + F32 `weight_scale_inv`) loads code for code and runs prefill and
//! decode; the memory planner fits DeepSeek-V3 full on tp8ep8 in FP8 and not in bf16.

mod support;
use support::{flat, rel_l2};

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use fwdbench::config::hf::load_model_config;
use fwdbench::config::model::ModelConfig;
use fwdbench::exec::cpu::run::CpuModel;
use fwdbench::model::{build_plan, PlanOptions};
use fwdbench::plan::{DType, Init, Plan, RankLayout, Shape, WeightPiece};
use fwdbench::quant::{quantize_blocks, Quant};
use fwdbench::weights::{materialize, RandomWeights, SafetensorsWeights, WeightSource};

const TINY_V3: &str = r#"{
  "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
  "vocab_size": 96, "hidden_size": 128, "num_hidden_layers": 2,
  "num_attention_heads": 2, "num_key_value_heads": 2,
  "q_lora_rank": 128, "kv_lora_rank": 128, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64,
  "intermediate_size": 256, "moe_intermediate_size": 128,
  "n_routed_experts": 4, "num_experts_per_tok": 2, "n_shared_experts": 1,
  "n_group": 2, "topk_group": 1, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
  "norm_topk_prob": true, "routed_scaling_factor": 2.5, "first_k_dense_replace": 1, "moe_layer_freq": 1,
  "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 10000, "max_position_embeddings": 64,
  "attention_bias": false, "tie_word_embeddings": false,
  "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128], "activation_scheme": "dynamic"}
}"#;

fn tiny_config(dir: &Path) -> ModelConfig {
    let path = dir.join("config.json");
    std::fs::write(&path, TINY_V3).unwrap();
    load_model_config(&path, &[]).unwrap()
}

/// One HF tensor: its logical shape and the init its plan pieces give it.
struct HfTensor {
    rows: usize,
    cols: usize,
    init: Init,
    fp8: bool,
}

/// Every tensor the plans read, by HF name; FP8 where an FP8 plan weight reads it (as
/// DeepSeek's checkpoint stores every projection, kv_b_proj included).
fn hf_tensors(plans: &[Plan]) -> BTreeMap<String, HfTensor> {
    let mut out = BTreeMap::new();
    for plan in plans {
        for w in &plan.weights {
            for p in &w.pieces {
                let t = out.entry(p.hf_name.clone()).or_insert(HfTensor {
                    rows: p.hf_rows,
                    cols: p.hf_cols,
                    init: p.init,
                    fp8: false,
                });
                t.fp8 |= w.dtype == DType::F8E4M3;
            }
        }
    }
    out
}

fn whole(name: &str, t: &HfTensor) -> WeightPiece {
    WeightPiece {
        hf_name: name.into(),
        hf_rows: t.rows,
        hf_cols: t.cols,
        transposed_in_file: false,
        src_row: 0,
        src_col: 0,
        rows: t.rows,
        cols: t.cols,
        dst_index: 0,
        dst_row: 0,
        dst_col: 0,
        init: t.init,
    }
}

/// Writes the checkpoint: FP8 tensors as codes + `weight_scale_inv`, the rest bf16 (the
/// router's correction bias f32). With `dequantized`, the FP8 tensors are written as the
/// f32 values their codes stand for instead (a bf16-style checkpoint of the same model).
fn write_checkpoint(path: &Path, tensors: &BTreeMap<String, HfTensor>, dequantized: bool) {
    let src = RandomWeights { seed: 5 };
    let mut header = serde_json::Map::new();
    let mut data: Vec<u8> = Vec::new();
    let mut push = |name: String, dtype: &str, shape: Vec<usize>, bytes: Vec<u8>| {
        header.insert(
            name,
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [data.len(), data.len() + bytes.len()]}),
        );
        data.extend(bytes);
    };
    for (name, t) in tensors {
        let mut values = vec![0f32; t.rows * t.cols];
        src.fill(&whole(name, t), &mut values, t.cols).unwrap();
        let shape = if t.rows == 1 { vec![t.cols] } else { vec![t.rows, t.cols] };
        if t.fp8 {
            let (codes, scales) = quantize_blocks(&values, 1, t.rows, t.cols);
            if dequantized {
                let deq = fwdbench::quant::dequantize_blocks(&codes, &scales, 1, t.rows, t.cols);
                push(name.clone(), "F32", shape, deq.iter().flat_map(|v| v.to_le_bytes()).collect());
            } else {
                push(name.clone(), "F8_E4M3", shape, codes);
                let grid = vec![t.rows.div_ceil(128), t.cols.div_ceil(128)];
                push(format!("{name}_scale_inv"), "F32", grid, scales.iter().flat_map(|v| v.to_le_bytes()).collect());
            }
        } else if name.ends_with("e_score_correction_bias") {
            push(name.clone(), "F32", shape, values.iter().flat_map(|v| v.to_le_bytes()).collect());
        } else {
            let bytes = values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
            push(name.clone(), "BF16", shape, bytes);
        }
    }
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    std::fs::write(path, out).unwrap();
}

const IDS: [[i32; 6]; 2] = [[3, 17, 42, 8, 91, 5], [60, 2, 2, 77, 14, 33]];

fn prefill<'a>(cfg: &'a ModelConfig, src: &dyn WeightSource, len: usize) -> (Vec<f32>, CpuModel<'a>) {
    let mut model = CpuModel::new(cfg, vec![RankLayout::single()], false);
    let ids: Vec<Vec<i32>> = IDS.iter().map(|r| r[..len].to_vec()).collect();
    let opts = PlanOptions { all_logits: true, cache_len: Some(6) };
    let logits = model.forward(Shape::prefill(2, len), opts, src, &ids).unwrap();
    (flat(&logits), model)
}

#[test]
fn hf_fp8_checkpoint_loads_code_for_code_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    assert_eq!(cfg.quant, Quant::Fp8, "quantization_config makes the model FP8");
    let plans: Vec<Plan> = [Shape::prefill(2, 6), Shape::decode(2, 5)]
        .into_iter()
        .map(|s| build_plan(&cfg, RankLayout::single(), s, PlanOptions::default()).unwrap())
        .collect();
    let tensors = hf_tensors(&plans);
    // HF's layout: 2-D per-expert weights and the fused MQA down-projection, in FP8.
    for name in [
        "model.layers.1.mlp.experts.3.gate_proj.weight",
        "model.layers.1.mlp.shared_experts.down_proj.weight",
        "model.layers.0.self_attn.kv_a_proj_with_mqa.weight",
        "model.layers.0.self_attn.kv_b_proj.weight",
    ] {
        assert!(tensors.get(name).is_some_and(|t| t.fp8 && t.rows > 1), "{name} is not an FP8 2-D tensor");
    }
    for name in ["model.embed_tokens.weight", "lm_head.weight", "model.layers.1.mlp.gate.weight"] {
        assert!(tensors.get(name).is_some_and(|t| !t.fp8), "{name} should stay bf16");
    }
    let fp8_path = dir.path().join("fp8.safetensors");
    write_checkpoint(&fp8_path, &tensors, false);
    let ckpt = SafetensorsWeights::open(&fp8_path).unwrap();

    // Every FP8 plan weight holds exactly the checkpoint's dequantized values (codes
    // copied, each block with its file block's scale), stacked experts included.
    for w in plans[0].weights.iter().filter(|w| w.dtype == DType::F8E4M3) {
        let as_f32 = fwdbench::plan::WeightInfo { dtype: DType::F32, ..w.clone() };
        assert_eq!(materialize(w, &ckpt, false).unwrap(), materialize(&as_f32, &ckpt, false).unwrap(), "{}", w.name);
    }

    // The same model from a checkpoint of the dequantized values, quantized at load: the
    // same codes, scales within an ulp, so the same logits up to f32 rounding.
    let deq_path = dir.path().join("deq.safetensors");
    write_checkpoint(&deq_path, &tensors, true);
    let deq = SafetensorsWeights::open(&deq_path).unwrap();
    let (fp8_logits, mut model) = prefill(&cfg, &ckpt, 5);
    let (requantized, _) = prefill(&cfg, &deq, 5);
    let err = rel_l2(&requantized, &fp8_logits);
    assert!(err < 1e-5, "FP8 checkpoint vs requantized f32 checkpoint: rel-L2 {err:.3e}");
    assert!(fp8_logits.iter().all(|v| v.is_finite()));

    // `--quant bf16` semantics: the dequantized weights with unquantized activations. The
    // difference is the activation quantization alone (e4m3 keeps 3 mantissa bits, ~2% per
    // value, through seven quantized GEMMs a layer): 5.3e-2 measured, 0.12 allowed.
    let bf16_cfg = ModelConfig { quant: Quant::Bf16, ..cfg.clone() };
    let (bf16_logits, _) = prefill(&bf16_cfg, &ckpt, 5);
    let err = rel_l2(&fp8_logits, &bf16_logits);
    assert!(err > 1e-3 && err < 0.12, "FP8 vs dequantized-bf16 prefill logits: rel-L2 {err:.3e}");

    // Decode (absorbed MLA with kv_b dequantized to bf16, as SGLang does) continues the
    // prefill: it differs legitimately from a 6-token FP8 prefill's last position, where
    // kv_b's input is quantized and the attention runs in MHA form (4.8e-2 measured).
    let decode_ids: Vec<Vec<i32>> = IDS.iter().map(|r| vec![r[5]]).collect();
    let step = model.forward(Shape::decode(2, 5), PlanOptions::default(), &ckpt, &decode_ids).unwrap();
    let (full, _) = prefill(&cfg, &ckpt, 6);
    let vocab = cfg.vocab_size;
    let last: Vec<f32> = (0..2).flat_map(|s| full[(s * 6 + 5) * vocab..(s * 6 + 6) * vocab].to_vec()).collect();
    let err = rel_l2(&flat(&step), &last);
    assert!(err < 0.12, "FP8 decode vs prefill last position: rel-L2 {err:.3e}");
}

#[test]
fn misaligned_fp8_shards_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    // 64-wide experts: gate_proj ends and up_proj starts at row 64 of the fused w13,
    // inside one scale block.
    let mut cfg = tiny_config(dir.path());
    cfg.moe.as_mut().unwrap().expert_intermediate_size = 64;
    let plan = build_plan(&cfg, RankLayout::single(), Shape::prefill(1, 2), PlanOptions::default()).unwrap();
    let tensors = hf_tensors(std::slice::from_ref(&plan));
    let path = dir.path().join("m.safetensors");
    write_checkpoint(&path, &tensors, false);
    let ckpt = SafetensorsWeights::open(&path).unwrap();
    let w13 = plan.weights.iter().find(|w| w.name.ends_with("moe.experts_w13")).unwrap();
    let err = materialize(w13, &ckpt, false).unwrap_err().to_string();
    assert!(
        err.contains("experts.0.gate_proj.weight") && err.contains("128x128") && err.contains("--quant bf16"),
        "{err}"
    );
}

fn fwdbench(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fwdbench")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
}

fn count_json(extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["count", "--model", "deepseek", "--mconf", "full", "--deploy", "tp8ep8", "--json"];
    args.extend(extra);
    let out = Command::new(env!("CARGO_BIN_EXE_fwdbench")).args(&args).output().unwrap();
    // The JSON is stdout; the conf notes go to stderr.
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn deepseek_full_fits_tp8ep8_in_fp8_and_not_in_bf16() {
    let fp8 = count_json(&[]);
    assert_eq!(fp8["fits"], true, "{fp8}");
    let weights = fp8["weight_bytes_per_rank"].as_f64().unwrap();
    // 671B parameters, most of them FP8, over 8 ranks: about 85 GB each (bf16 ~ 170 GB).
    assert!(weights > 70e9 && weights < 100e9, "FP8 weights per rank {weights:.3e}");
    assert_eq!(count_json(&["--quant", "fp8"])["weight_bytes_per_rank"], fp8["weight_bytes_per_rank"]);
    let bf16 = count_json(&["--quant", "bf16"]);
    assert_eq!(bf16["fits"], false, "{bf16}");
    assert!(bf16["weight_bytes_per_rank"].as_f64().unwrap() > 1.9 * weights);
    // The conf key does what the flag does.
    assert_eq!(count_json(&["--conf", "quantization=bf16"])["fits"], false);
}

#[test]
fn bad_quant_values_name_the_flag_and_key() {
    let (ok, text) = fwdbench(&["count", "--model", "deepseek", "--mconf", "full", "--quant", "int4"]);
    assert!(!ok && text.contains("--quant") && text.contains("bf16 or fp8"), "{text}");
    let (ok, text) = fwdbench(&["count", "--model", "deepseek", "--mconf", "full", "--conf", "quantization=int4"]);
    assert!(!ok && text.contains("quantization") && text.contains("fp8"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, TINY_V3.replace("\"e4m3\"", "\"e5m2\"")).unwrap();
    let err = load_model_config(&path, &[]).unwrap_err().to_string();
    assert!(err.contains("quantization_config.fmt") && err.contains("e5m2"), "{err}");
}
