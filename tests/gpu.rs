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

/// `kernels/quant.cu` and `src/quant` give the same codes and scales, bit for bit, on values
/// that include ties, an all-zero group, a partial group and a partial weight block.
#[test]
fn gpu_quantizers_match_the_cpu_bit_for_bit() {
    if !gpu_available() {
        return;
    }
    use fwdbench::exec::cuda::gpu::Gpu;
    use fwdbench::exec::cuda::kernels::quant::*;
    use fwdbench::exec::cuda::memory::DeviceBuffer;
    use fwdbench::quant::{quantize_groups, Fp8Layout};
    let gpu = Gpu::new(0).unwrap();
    let (rows, cols) = (5usize, 300usize);
    let mut x: Vec<f32> =
        (0..rows * cols).map(|i| half::bf16::from_f32(((i as f32) * 0.731).sin() * 3.0).to_f32()).collect();
    x[cols..cols + 128].iter_mut().for_each(|v| *v = 0.0);
    let src = DeviceBuffer::upload(&x.iter().map(|v| half::bf16::from_f32(*v)).collect::<Vec<_>>()).unwrap();
    let layout = Fp8Layout::new(1, rows, cols);
    let out = DeviceBuffer::zeroed(layout.activation_bytes()).unwrap();
    let p = QuantActParams {
        src: src.ptr,
        src_ld: cols as i32,
        rows: rows as i32,
        cols: cols as i32,
        codes: out.ptr,
        scales: out.ptr + layout.scale_offset() as u64,
    };
    gpu.launch(QUANT_ACT_FP8, quant_act_launch(rows, cols), p).unwrap();
    gpu.sync().unwrap();
    let want = quantize_groups(&x, rows, cols);
    assert_eq!(out.download::<u8>(rows * cols).unwrap(), want.codes);
    let scales: Vec<f32> = out.download_at(layout.scale_offset(), rows * 3).unwrap();
    for r in 0..rows {
        for g in 0..3 {
            assert_eq!(scales[g * rows + r].to_bits(), want.scales[r * 3 + g].to_bits(), "row {r} group {g}");
        }
    }

    let (count, wr, wc) = (2usize, 200usize, 130usize);
    let w: Vec<f32> = (0..count * wr * wc).map(|i| ((i as f32) * 0.377).cos() * 0.02).collect();
    let src = DeviceBuffer::upload(&w).unwrap();
    let layout = Fp8Layout::new(count, wr, wc);
    let out = DeviceBuffer::zeroed(layout.weight_bytes()).unwrap();
    let p = QuantWeightParams {
        src: src.ptr,
        rows: wr as i64,
        cols: wc as i64,
        codes: out.ptr,
        scales: out.ptr + layout.scale_offset() as u64,
        scale_ld: layout.weight_scale_ld() as i32,
    };
    gpu.launch(QUANT_WEIGHT_FP8, quant_weight_launch(&layout), p).unwrap();
    gpu.sync().unwrap();
    let (codes, scales) = fwdbench::quant::quantize_blocks(&w, count, wr, wc);
    let got = out.download::<u8>(layout.weight_bytes()).unwrap();
    let image = layout.weight_buffer(&codes, &scales);
    assert_eq!(&got[..count * wr * wc], &image[..count * wr * wc], "codes");
    for i in 0..count {
        for rb in 0..2 {
            for cb in 0..2 {
                let at = layout.scale_offset() + 4 * layout.weight_scale_index(i, rb, cb);
                assert_eq!(&got[at..at + 4], &image[at..at + 4], "scale of block ({i}, {rb}, {cb})");
            }
        }
    }
}

/// The block-scaled cuBLASLt GEMM through the one-op path, against the CPU reference.
#[test]
fn gpu_fp8_gemm_matches_the_cpu() {
    if !gpu_available() {
        return;
    }
    // Within the CPU check's budget (4 GFLOP), so each is compared, not skipped.
    for (m, n, k) in [(1, 256, 512), (300, 384, 7168), (64, 2048, 7168)] {
        let (m, n, k) = (m.to_string(), n.to_string(), k.to_string());
        let args = ["kernel", "check", "--op", "linear", "--m", &m, "--n", &n, "--k", &k, "--quant", "fp8"];
        // On the GPU machine the test binary runs without cargo: the binary sits in .device/.
        let bin = std::env::var("FWDBENCH_BIN").unwrap_or_else(|_| {
            let built = env!("CARGO_BIN_EXE_fwdbench");
            if Path::new(built).exists() {
                built.to_string()
            } else {
                ".device/fwdbench".to_string()
            }
        });
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("check pass"), "{args:?}: {text}");
    }
}
