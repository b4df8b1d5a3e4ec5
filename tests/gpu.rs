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

#[test]
fn gpu_weight_generator_matches_the_cpu_bit_for_bit() {
    // CPU and GPU derive random weights from the same counter RNG; a drift would make every
    // GPU-vs-CPU check compare different models. Indices near 2^40 cover the 64-bit index path.
    if !gpu_available() {
        return;
    }
    use fwdbench::exec::cuda::gpu::Gpu;
    use fwdbench::exec::cuda::kernels::init::{fill_normal_launch, FillNormalParams, FILL_NORMAL_F32};
    use fwdbench::exec::cuda::memory::DeviceBuffer;
    let gpu = Gpu::new(0).unwrap();
    let (rows, cols, ld, row0, seed) = (3usize, 37usize, 1i64 << 20, 1i64 << 20, 0x35f7_803b_9f2e_f067u64);
    let buf = DeviceBuffer::zeroed(rows * cols * 4).unwrap();
    let p = FillNormalParams {
        dst: buf.ptr,
        dst_ld: cols as i64,
        rows: rows as i64,
        cols: cols as i64,
        seed,
        mean: 0.0,
        std: 0.02,
        src_row0: row0,
        src_col0: 5,
        src_ld: ld,
        transposed: 0,
    };
    gpu.launch(FILL_NORMAL_F32, fill_normal_launch(rows, cols), p).unwrap();
    gpu.sync().unwrap();
    let got: Vec<f32> = buf.download(rows * cols).unwrap();
    for r in 0..rows {
        for c in 0..cols {
            let index = ((row0 + r as i64) * ld + 5 + c as i64) as u64;
            let want = fwdbench::weights::rng::value(seed, index, 0.0, 0.02);
            assert_eq!(got[r * cols + c].to_bits(), want.to_bits(), "row {r} col {c} (index {index})");
        }
    }
}
