//! FP8 e4m3 with block scales, DeepSeek-V3's native format (models.md §4, issue 9):
//! weights in 128x128 blocks, activations per token and 128-channel group, each block with
//! one fp32 scale `amax / 448` and values rounded to e4m3 (nearest even, saturating at
//! +-448). This module is the one definition of that arithmetic; the CPU reference
//! (`exec::cpu::ops::quant`) uses it directly and `kernels/quant.cu` mirrors it operation
//! for operation (the same IEEE divisions, the same rounding), so CPU and GPU quantize a
//! bf16 value to the same code.

pub mod layout;
mod quantize;

pub use layout::Fp8Layout;
pub use quantize::{dequantize_blocks, quantize_blocks, quantize_groups, GroupQuant};

use serde::Serialize;

/// Side of a weight scale block and width of an activation scale group.
pub const BLOCK: usize = 128;
/// Largest finite e4m3 value (0x7E; 0x7F is NaN in the `fn` variant DeepSeek uses).
pub const E4M3_MAX: f32 = 448.0;
/// Lower bound on a block's amax, as SGLang's `per_token_group_quant_fp8` clamps it, so an
/// all-zero block gets a finite scale (and zero codes) instead of 0/0.
pub const AMAX_EPS: f32 = 1e-10;

/// Dense FP8 tensor-core peak of one H200 SXM (TFLOP/s, without sparsity).
pub const FP8_PEAK_TFLOPS: f64 = 1979.0;

/// What the linear weights of a plan are stored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Quant {
    #[default]
    Bf16,
    /// e4m3 weights with 128x128 block scales, activations quantized per 1x128 group.
    Fp8,
}

impl Quant {
    pub fn name(self) -> &'static str {
        match self {
            Quant::Bf16 => "bf16",
            Quant::Fp8 => "fp8",
        }
    }
    /// Dense tensor-core peak of one H200 in this format (TFLOP/s): the MFU denominator.
    pub fn peak_tflops(self) -> f64 {
        match self {
            Quant::Bf16 => crate::report::PEAK_TFLOPS,
            Quant::Fp8 => FP8_PEAK_TFLOPS,
        }
    }
    /// FP8 when any of the plan's weights is (its GEMMs then run on the FP8 tensor cores).
    pub fn of_plan(plan: &crate::plan::Plan) -> Quant {
        if plan.weights.iter().any(|w| w.dtype == crate::plan::DType::F8E4M3) {
            Quant::Fp8
        } else {
            Quant::Bf16
        }
    }
    /// `bf16` / `fp8` (also SGLang's `--quantization fp8`); None for anything else.
    pub fn parse(text: &str) -> Option<Quant> {
        match text.trim().to_ascii_lowercase().as_str() {
            "bf16" | "bfloat16" => Some(Quant::Bf16),
            "fp8" | "fp8_e4m3" | "e4m3" => Some(Quant::Fp8),
            _ => None,
        }
    }
}

impl std::str::FromStr for Quant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Quant::parse(s).ok_or_else(|| format!("`{s}` is not a weight format: use bf16 or fp8"))
    }
}

/// The scale of a block whose largest magnitude is `amax`.
#[inline]
pub fn block_scale(amax: f32) -> f32 {
    amax.max(AMAX_EPS) / E4M3_MAX
}

/// `x` rounded to the nearest e4m3 value (ties to even), saturated to +-448; NaN stays NaN.
pub fn e4m3_from_f32(x: f32) -> u8 {
    let sign = ((x.to_bits() >> 24) & 0x80) as u8;
    let a = x.abs();
    if a.is_nan() {
        return sign | 0x7F;
    }
    if a >= E4M3_MAX {
        return sign | 0x7E;
    }
    // Below the smallest normal (2^-6) the spacing is 2^-9: round a * 2^9 (exact scaling)
    // to an integer; 8 lands on code 0x08, which is exactly 2^-6.
    if a < 2f32.powi(-6) {
        let q = (a * 512.0).round_ties_even() as u8;
        return sign | q;
    }
    // Normal: keep 3 of f32's 23 mantissa bits, rounding the dropped 20 to nearest even; a
    // carry out of the mantissa bumps the exponent, which the bit pattern does by itself.
    let bits = a.to_bits();
    let rounded = (bits + 0x7FFFF + ((bits >> 20) & 1)) >> 20;
    let code = rounded - ((127 - 7) << 3);
    // 464 and above round to 480 (code 0x7F, NaN): saturate instead.
    sign | code.min(0x7E) as u8
}

/// The value of an e4m3 code.
pub fn e4m3_to_f32(code: u8) -> f32 {
    let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = ((code >> 3) & 0x0F) as i32;
    let mant = (code & 0x07) as f32;
    if code & 0x7F == 0x7F {
        return f32::NAN;
    }
    let mag = if exp == 0 { mant * 2f32.powi(-9) } else { (1.0 + mant / 8.0) * 2f32.powi(exp - 7) };
    sign * mag
}

/// `x` rounded to e4m3 and back.
#[inline]
pub fn e4m3_round(x: f32) -> f32 {
    e4m3_to_f32(e4m3_from_f32(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_codes() {
        // (value, code): normals, the largest finite value, the subnormals, signed zero.
        let cases = [
            (1.0, 0x38),
            (1.125, 0x39),
            (448.0, 0x7E),
            (-448.0, 0xFE),
            (2f32.powi(-6), 0x08),
            (2f32.powi(-9), 0x01),
            (7.0 * 2f32.powi(-9), 0x07),
            (0.0, 0x00),
            (-0.0, 0x80),
            (240.0, 0x77),
            (0.1, 0x1D), // 0.1 = 1.6 * 2^-4: mantissa 1.625 (5/8) is nearest: 0x1D = 0.1015625
        ];
        for (v, code) in cases {
            assert_eq!(e4m3_from_f32(v), code, "{v}");
        }
        assert_eq!(e4m3_to_f32(0x1D), 0.1015625);
        assert_eq!(e4m3_to_f32(0x7E), 448.0);
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
        assert!(e4m3_to_f32(0x7F).is_nan() && e4m3_to_f32(0xFF).is_nan());
    }

    #[test]
    fn ties_round_to_even_and_large_values_saturate() {
        // Between 1.0 (mantissa 000) and 1.125 (001): the tie goes to the even 1.0.
        assert_eq!(e4m3_from_f32(1.0625), 0x38);
        // Between 1.125 (001) and 1.25 (010): the tie goes to the even 1.25.
        assert_eq!(e4m3_from_f32(1.1875), 0x3A);
        // Just above a tie rounds up.
        assert_eq!(e4m3_from_f32(1.0625 + 1e-6), 0x39);
        // Subnormal ties: 1.5 and 2.5 steps of 2^-9 go to 2 and 2.
        assert_eq!(e4m3_from_f32(1.5 * 2f32.powi(-9)), 0x02);
        assert_eq!(e4m3_from_f32(2.5 * 2f32.powi(-9)), 0x02);
        // Half the smallest subnormal rounds to zero (even).
        assert_eq!(e4m3_from_f32(0.5 * 2f32.powi(-9)), 0x00);
        // 7.5 subnormal steps: tie between 0x07 and 0x08 (2^-6) goes to the even 0x08.
        assert_eq!(e4m3_from_f32(7.5 * 2f32.powi(-9)), 0x08);
        // 456 is the tie between 448 and 464 (not finite): saturated, as are 1e9 and inf.
        for v in [449.0, 456.0, 464.0, 1e9, f32::INFINITY] {
            assert_eq!(e4m3_from_f32(v), 0x7E, "{v}");
            assert_eq!(e4m3_from_f32(-v), 0xFE, "{v}");
        }
        assert_eq!(e4m3_from_f32(f32::NAN) & 0x7F, 0x7F);
    }

    #[test]
    fn every_code_round_trips() {
        for code in 0u8..=255 {
            let v = e4m3_to_f32(code);
            if v.is_nan() {
                continue;
            }
            let back = e4m3_from_f32(v);
            // -0 and +0 are distinct codes of the same value.
            assert!(back == code || v == 0.0, "code {code:#x} -> {v} -> {back:#x}");
        }
    }

    #[test]
    fn rounding_is_nearest() {
        // Every positive finite value's rounding is at least as close as both neighbours.
        let finite: Vec<f32> = (0u8..0x7F).map(e4m3_to_f32).collect();
        for i in 0..20_000 {
            let x = i as f32 * 0.0231;
            let r = e4m3_round(x);
            let best = finite.iter().map(|v| (v - x.min(448.0)).abs()).fold(f32::INFINITY, f32::min);
            assert!((r - x.min(448.0)).abs() <= best, "{x}: got {r}");
        }
    }

    #[test]
    fn fp8_rows_divide_by_the_fp8_peak() {
        use crate::model::{build_plan, tests_support::tiny_mla_moe};
        use crate::plan::{cost::PhaseCost, RankLayout, Shape};
        let mut cfg = tiny_mla_moe();
        for (quant, peak) in [(Quant::Bf16, 989.0), (Quant::Fp8, 1979.0)] {
            cfg.quant = quant;
            let plan = build_plan(&cfg, RankLayout::single(), Shape::prefill(2, 5), Default::default()).unwrap();
            assert_eq!(Quant::of_plan(&plan), quant);
            let cost = PhaseCost::of(&plan, &cfg);
            let row = crate::report::Row::new(&plan, &cost, crate::report::Stats::of(&[1.0]), false);
            assert_eq!(row.quant, quant);
            assert!((row.mfu - row.tflops / peak).abs() < 1e-12, "{quant:?}");
        }
    }

    #[test]
    fn quant_names_parse() {
        assert_eq!(Quant::parse("FP8"), Some(Quant::Fp8));
        assert_eq!(Quant::parse("bfloat16"), Some(Quant::Bf16));
        assert_eq!(Quant::parse("int4"), None);
        assert!("int4".parse::<Quant>().unwrap_err().contains("bf16 or fp8"));
    }
}
