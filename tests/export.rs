//! `fwdbench export` round trips: for every family's fixture config, the exported folder
//! loads back into fwdbench with the same `ModelConfig` and the same logits bit for bit
//! (random weights and loaded checkpoints, bf16 and f32), passes the `safetensors` crate's
//! validation, and carries exactly the fixture checkpoint's Hub names and shapes (the
//! fixtures were themselves reloaded by HF's `from_pretrained` when they were made).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use fwdbench::check::{logits, CheckMode};
use fwdbench::config::hf::load_model_config;
use fwdbench::exec::cpu::run::CpuExecutor;
use fwdbench::exec::Logits;
use fwdbench::export::{export, ExportOptions, StoredDType};
use fwdbench::plan::RankLayout;
use fwdbench::weights::{RandomWeights, SafetensorsWeights, WeightSource};

/// Every model fixture (a folder with config.json and model.safetensors): one per family
/// and dialect, so a new fixture is exported here too.
fn fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("tests/fixtures")
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("config.json").is_file() && e.path().join("model.safetensors").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 11, "fixtures missing: {names:?}");
    names
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new("tests/fixtures").join(name)
}

fn config_json(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("config.json")).unwrap()).unwrap()
}

fn ids(name: &str) -> Vec<Vec<i32>> {
    fwdbench::inputs::read_ids_json(&fixture(name).join("input.json")).unwrap()
}

fn cpu(name: &str, cfg_path: &Path, src: &dyn WeightSource, round_bf16: bool, mode: CheckMode) -> Logits {
    let cfg = load_model_config(cfg_path, &[]).unwrap();
    let mut exec = CpuExecutor::new(&cfg, vec![RankLayout::single()], src, round_bf16);
    logits(&mut exec, &cfg, &ids(name), mode).unwrap_or_else(|e| panic!("{name}: {e:#}"))
}

fn bits(l: &Logits) -> Vec<u32> {
    l.iter().flatten().flatten().map(|v| v.to_bits()).collect()
}

/// Every shard of the exported folder `dir`.
fn shards(dir: &Path) -> Vec<PathBuf> {
    let files = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path());
    files.filter(|p| p.extension().is_some_and(|x| x == "safetensors")).collect()
}

/// `files` through `SafeTensors::deserialize`: name -> (dtype, shape).
fn stored(files: Vec<PathBuf>) -> BTreeMap<String, (String, Vec<usize>)> {
    let mut out = BTreeMap::new();
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap_or_else(|err| panic!("{file:?}: {err}"));
        for (name, view) in st.tensors() {
            out.insert(name, (format!("{:?}", view.dtype()), view.shape().to_vec()));
        }
    }
    out
}

#[test]
fn random_weights_round_trip_bit_for_bit_for_every_family() {
    for name in fixtures() {
        let name = name.as_str();
        let dir = tempfile::tempdir().unwrap();
        let random = RandomWeights { seed: 11 };
        let summary = export(&config_json(name), &random, dir.path(), &ExportOptions::default()).unwrap();
        let original_cfg = load_model_config(&fixture(name).join("config.json"), &[]).unwrap();
        let exported_cfg = load_model_config(&dir.path().join("config.json"), &[]).unwrap();
        assert_eq!(exported_cfg, original_cfg, "{name}: config.json parses back to the same model");
        assert_eq!(summary.config, original_cfg);
        let reloaded = SafetensorsWeights::open(dir.path()).unwrap();
        for mode in [CheckMode::Prefill, CheckMode::Decode] {
            // What `run` computes from the counter RNG (bf16-rounded, as on the GPU) ...
            let want = cpu(name, &fixture(name).join("config.json"), &random, true, mode);
            // ... and what the exported folder gives, read as it is.
            let got = cpu(name, &dir.path().join("config.json"), &reloaded, false, mode);
            assert_eq!(bits(&got), bits(&want), "{name} {mode:?}: logits differ after export");
        }
    }
}

#[test]
fn exported_checkpoints_have_the_fixtures_hub_names_and_shapes() {
    for name in fixtures() {
        let name = name.as_str();
        let dir = tempfile::tempdir().unwrap();
        export(&config_json(name), &RandomWeights { seed: 0 }, dir.path(), &ExportOptions::default()).unwrap();
        let ours = stored(shards(dir.path()));
        let theirs = stored(vec![fixture(name).join("model.safetensors")]);
        let shapes = |m: &BTreeMap<String, (String, Vec<usize>)>| {
            m.iter().map(|(k, (_, s))| (k.clone(), s.clone())).collect::<BTreeMap<_, _>>()
        };
        assert_eq!(shapes(&ours), shapes(&theirs), "{name}: tensor names or shapes differ from the Hub layout");
        for (tensor, (dtype, _)) in &ours {
            let f32_kept = tensor.ends_with("e_score_correction_bias");
            assert_eq!(dtype, if f32_kept { "F32" } else { "BF16" }, "{name}: {tensor}");
        }
    }
}

/// A loaded checkpoint (the fixtures are f32) exported in bf16 is what the GPU holds;
/// exported in f32 it is the checkpoint itself.
#[test]
fn loaded_weights_round_trip_in_both_dtypes() {
    for name in ["gpt2", "qwen2_moe", "deepseek_v3", "sigma_v1"] {
        let weights = SafetensorsWeights::open(&fixture(name).join("model.safetensors")).unwrap();
        for (dtype, round) in [(StoredDType::BF16, true), (StoredDType::F32, false)] {
            let dir = tempfile::tempdir().unwrap();
            let opts = ExportOptions { dtype, max_shard_bytes: 32 << 10 };
            export(&config_json(name), &weights, dir.path(), &opts).unwrap();
            let reloaded = SafetensorsWeights::open(dir.path()).unwrap();
            let want = cpu(name, &fixture(name).join("config.json"), &weights, round, CheckMode::Prefill);
            let got = cpu(name, &dir.path().join("config.json"), &reloaded, false, CheckMode::Prefill);
            assert_eq!(bits(&got), bits(&want), "{name} {dtype:?}");
        }
    }
}

/// The command line: `--layers` and `--set` shape the exported model, the model folder's
/// tokenizer is copied, and the folder reloads under `fwdbench check`'s loader.
#[test]
fn cli_exports_a_smaller_model_with_its_tokenizer() {
    let models = tempfile::tempdir().unwrap();
    let model = models.path().join("tiny");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::copy(fixture("qwen2_moe").join("config.json"), model.join("config_full.json")).unwrap();
    std::fs::copy("tests/fixtures/tokenizer/tokenizer.json", model.join("tokenizer.json")).unwrap();
    let out = models.path().join("out");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_fwdbench"))
            .args(["export", "--model", "tiny", "--mconf", "full", "--model-dir"])
            .arg(models.path())
            .arg("--out")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let done = run(&["--layers", "2", "--set", "num_experts_per_tok=3", "--dtype", "f32"]);
    let text = format!("{}{}", String::from_utf8_lossy(&done.stdout), String::from_utf8_lossy(&done.stderr));
    assert!(done.status.success(), "{text}");
    assert!(text.contains("2 layers") && text.contains("tokenizer files: tokenizer.json"), "{text}");
    let cfg = load_model_config(&out.join("config.json"), &[]).unwrap();
    assert_eq!((cfg.num_layers, cfg.moe.as_ref().unwrap().top_k), (2, 3));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(json["mlp_only_layers"], serde_json::json!([1]), "layer 1 stays dense");
    assert_eq!(json["torch_dtype"], "float32");
    assert!(out.join("tokenizer.json").is_file());
    assert!(stored(shards(&out)).values().all(|(dtype, _)| dtype == "F32"));
    assert!(!stored(shards(&out)).keys().any(|k| k.starts_with("model.layers.2.")), "only two layers are written");
    // A second export into the same folder is refused with one sentence naming --out.
    let again = run(&[]);
    let text = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && text.contains("--out") && text.contains("not empty"), "{text}");
}

/// `check --expect` with SGLang's format (`logprobs`, what reference_logits.py --engine
/// sglang writes): the fixture's logits as log-probabilities pass, shifted ones do not.
#[test]
fn check_accepts_expected_logprobs() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixture("qwen3");
    let (shape, logits) =
        SafetensorsWeights::open(&fx.join("logits.safetensors")).unwrap().read_tensor("logits").unwrap();
    let write = |name: &str, shift: f32| {
        let mut values = logits.clone();
        for row in values.chunks_mut(shape[2]) {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
            let log_sum = row.iter().map(|v| (v - max).exp()).sum::<f32>().ln() + max;
            row.iter_mut().for_each(|v| *v = *v - log_sum + shift);
        }
        let tensor = safetensors::tensor::TensorView::new(
            safetensors::Dtype::F32,
            shape.clone(),
            bytemuck::cast_slice::<f32, u8>(&values),
        )
        .unwrap();
        let path = dir.path().join(name);
        safetensors::tensor::serialize_to_file([("logprobs", tensor)], None, &path).unwrap();
        path
    };
    let check = |expect: &Path| {
        Command::new(env!("CARGO_BIN_EXE_fwdbench"))
            .args(["check", "--config"])
            .arg(fx.join("config.json"))
            .arg("--weights")
            .arg(fx.join("model.safetensors"))
            .arg("--input")
            .arg(fx.join("input.json"))
            .arg("--expect")
            .arg(expect)
            .output()
            .unwrap()
    };
    let good = check(&write("good.safetensors", 0.0));
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stdout));
    assert!(String::from_utf8_lossy(&good.stdout).contains("PASS"));
    // Logits passed off as log-probabilities are off by each row's log-sum-exp.
    let bad = check(&write("bad.safetensors", 1.0));
    assert!(!bad.status.success(), "{}", String::from_utf8_lossy(&bad.stdout));
}
