//! Helpers shared by the integration tests (each test crate uses a subset of them).
#![allow(dead_code)]

use std::process::Output;

/// Every model fixture of tests/fixtures (one per family and dialect): the HF families,
/// then those only our references cover.
pub const FIXTURES: [&str; 11] = [
    "gpt2",
    "qwen2",
    "qwen3",
    "qwen2_moe",
    "qwen3_moe",
    "deepseek_v3",
    "deepseek_v2_lite_style",
    "grok1",
    "grok1_hpcai",
    "sigma_v2",
    "sigma_v1",
];

/// ||a - b|| / ||b||.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// Logits as one flat row-major vector.
pub fn flat(l: &[Vec<Vec<f32>>]) -> Vec<f32> {
    l.iter().flatten().flatten().copied().collect()
}

/// A finished command's stdout then stderr, as text.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
