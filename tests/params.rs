//! Parameter totals of the full models reproduce models.md §8.2.

use std::path::Path;

use fwdbench::config::hf::load_model_config;
use fwdbench::model::{build_plan, PlanOptions};
use fwdbench::plan::cost::count_params;
use fwdbench::plan::{RankLayout, Shape};

fn params(model: &str) -> (f64, f64) {
    let cfg = load_model_config(Path::new(&format!("model_conf/{model}/config_full.json")), &[]).unwrap();
    let plan = build_plan(&cfg, RankLayout::single(), Shape::decode(1, 1), PlanOptions::default()).unwrap();
    let p = count_params(&plan, &cfg);
    (p.total / 1e9, p.active / 1e9)
}

fn assert_billions(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() < 0.005, "{what}: {got:.3}B, models.md says {want:.2}B");
}

#[test]
fn deepseek_v3_is_671b_with_37b_active() {
    let (total, active) = params("deepseek");
    assert_billions(total, 671.03, "DeepSeek-V3 total");
    assert_billions(active, 37.55, "DeepSeek-V3 active");
}

#[test]
fn qwen3_235b() {
    let (total, active) = params("qwen");
    assert_billions(total, 235.09, "Qwen3-235B total");
    assert_billions(active, 22.19, "Qwen3-235B active");
}

#[test]
fn qwen25_72b() {
    let (total, active) = params("qwen_dense");
    assert_billions(total, 72.71, "Qwen2.5-72B total");
    assert_eq!(total, active);
}

#[test]
fn gpt3_175b() {
    assert_billions(params("gpt3").0, 174.60, "GPT-3 total");
}

#[test]
fn grok1_untied_sglang_dialect() {
    let (total, active) = params("grok");
    assert_billions(total, 316.49, "Grok-1 total (separate lm_head)");
    // 83.76B tied + the separate 0.805B head.
    assert_billions(active, 83.76 + 0.805, "Grok-1 active");
}

#[test]
fn sigma_v2() {
    let (total, active) = params("sigma");
    assert_billions(total, 208.68, "Sigma V2 total");
    assert_billions(active, 24.75, "Sigma V2 active");
}

#[test]
fn sigma_v1_10b() {
    assert_billions(params("sigma_v1").0, 9.99, "Sigma-10B total (tied)");
}
