//! GPU tests: run when this machine has an NVIDIA GPU and the kernels were built; skipped
//! with a note (written past the test harness's output capture) otherwise.

use std::io::Write;
use std::path::Path;

use fwdbench::check::{compare, cuda_logits, expected_rows, CheckMode};
use fwdbench::config::hf::load_model_config;
use fwdbench::dist::rank_layouts;
use fwdbench::weights::SafetensorsWeights;

fn gpu_available() -> bool {
    // SAFETY: probing only dlopens the driver.
    let usable = fwdbench::exec::cuda::cubins::KERNELS_BUILT
        && unsafe { cudarc::driver::sys::is_culib_present() }
        && cudarc::driver::CudaContext::device_count().map(|n| n > 0).unwrap_or(false);
    if !usable {
        let _ = writeln!(std::io::stderr(), "note: no usable NVIDIA GPU (or kernels not built): GPU tests skipped");
    }
    usable
}

#[test]
fn gpu_logits_match_fixtures() {
    if !gpu_available() {
        return;
    }
    for name in ["qwen3", "deepseek_v3", "grok1", "sigma_v2", "gpt2"] {
        let dir = Path::new("tests/fixtures").join(name);
        let cfg = load_model_config(&dir.join("config.json"), &[]).unwrap();
        let weights = SafetensorsWeights::open(&dir.join("model.safetensors")).unwrap();
        let (shape, want) =
            SafetensorsWeights::open(&dir.join("logits.safetensors")).unwrap().read_tensor("logits").unwrap();
        let ids: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("input.json")).unwrap()).unwrap();
        let ids: Vec<Vec<i32>> = ids["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(|v| v.as_i64().unwrap() as i32).collect())
            .collect();
        for mode in [CheckMode::Prefill, CheckMode::Decode] {
            let got = cuda_logits(&cfg, &rank_layouts(1, 1, 1).unwrap(), &weights, &ids, mode).unwrap();
            let got: Vec<f32> = got.into_iter().flatten().flatten().collect();
            let a = compare(&got, &expected_rows(&want, shape[0], shape[1], shape[2], mode), cfg.vocab_size);
            assert!(a.rel_l2 <= 2e-2 && a.top1 >= 0.99, "{name} {mode:?}: {a:?}");
        }
    }
}
