//! `kernels/quant.cu`: FP8 e4m3 quantization of activations (per token and 128-column
//! group, before every FP8 GEMM) and of random f32 weights (per 128x128 block), with the
//! scale layouts cuBLASLt's block-scaled matmul reads (`quant::layout`).

use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::ptr::{ConstBf16Ptr, ConstF32Ptr, F32Ptr, VoidPtr};
use crate::plan::{DType, Op, Plan};
use crate::quant::Fp8Layout;

/// Side of a weight block, width of an activation group (`quant::BLOCK`).
pub const QUANT_BLOCK: i32 = 128;
/// bf16 values each lane of `quant_act_fp8` quantizes (a warp covers one group).
pub const QUANT_VALUES_PER_LANE: i32 = 4;
/// `quant::E4M3_MAX` and `quant::AMAX_EPS`, for the kernels.
pub const QUANT_E4M3_MAX: f32 = 448.0;
pub const QUANT_AMAX_EPS: f32 = 1e-10;
const WARPS_PER_BLOCK: u32 = 8;

/// Activation `src[rows, cols]` (row stride `src_ld`) into e4m3 `codes[rows, cols]` and
/// scales `[groups, rows]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct QuantActParams {
    pub src: ConstBf16Ptr,
    pub src_ld: i32,
    pub rows: i32,
    pub cols: i32,
    /// e4m3 bytes, row stride `cols`.
    pub codes: VoidPtr,
    pub scales: F32Ptr,
}
unsafe impl DeviceRepr for QuantActParams {}
pub const QUANT_ACT_FP8: (&str, &str) = ("quant", "quant_act_fp8");

pub fn quant_act_launch(rows: usize, cols: usize) -> LaunchConfig {
    let items = (rows * cols.div_ceil(QUANT_BLOCK as usize)) as u64;
    let blocks = items.div_ceil(u64::from(WARPS_PER_BLOCK)).max(1);
    LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (32 * WARPS_PER_BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// f32 `src[count, rows, cols]` into e4m3 `codes` (same layout) and scales
/// `[count, row_blocks, scale_ld]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct QuantWeightParams {
    pub src: ConstF32Ptr,
    pub rows: i64,
    pub cols: i64,
    pub codes: VoidPtr,
    pub scales: F32Ptr,
    pub scale_ld: i32,
}
unsafe impl DeviceRepr for QuantWeightParams {}
pub const QUANT_WEIGHT_FP8: (&str, &str) = ("quant", "quant_weight_fp8");

pub fn quant_weight_launch(layout: &Fp8Layout) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (layout.col_blocks() as u32, layout.row_blocks() as u32, layout.count as u32),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Scratch an FP8 Linear needs: its input's codes and group scales.
pub fn linear_scratch_bytes(plan: &Plan, op: &Op) -> usize {
    match op {
        Op::Linear { x, weight, .. } if plan.weight(*weight).dtype == DType::F8E4M3 => {
            Fp8Layout::new(1, plan.rows(*x), x.cols).activation_bytes()
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_the_host_quantizer() {
        assert_eq!(QUANT_BLOCK as usize, crate::quant::BLOCK);
        assert_eq!(QUANT_E4M3_MAX, crate::quant::E4M3_MAX);
        assert_eq!(QUANT_AMAX_EPS, crate::quant::AMAX_EPS);
        assert_eq!(QUANT_VALUES_PER_LANE * 32, QUANT_BLOCK);
    }

    #[test]
    fn fp8_moe_takes_a_wgmma_tile_and_fp8_linears_get_scratch() {
        use crate::model::{build_plan, tests_support::tiny_mla_moe};
        use crate::plan::{RankLayout, Shape};
        let mut cfg = tiny_mla_moe();
        let bf16 = build_plan(&cfg, RankLayout::single(), Shape::prefill(2, 5), Default::default()).unwrap();
        cfg.quant = crate::quant::Quant::Fp8;
        let fp8 = build_plan(&cfg, RankLayout::single(), Shape::prefill(2, 5), Default::default()).unwrap();
        let moe = |p: &Plan| p.ops.iter().find(|o| matches!(o.op, Op::Moe { .. })).unwrap().op.clone();
        // 10 tokens: bf16 streams them with moe.cu's decode tile; moe_fp8.cu has none.
        let block_m = |p: &Plan| super::super::moe::MoeScratch::of(p, &moe(p)).0.block_m;
        assert_eq!((block_m(&bf16), block_m(&fp8)), (16, 64));
        let linear = |p: &Plan| p.ops.iter().find(|o| o.site.name == "attn.o_proj").unwrap().op.clone();
        assert_eq!(linear_scratch_bytes(&bf16, &linear(&bf16)), 0);
        let Op::Linear { x, .. } = linear(&fp8) else { unreachable!() };
        let want = Fp8Layout::new(1, fp8.rows(x), x.cols).activation_bytes();
        assert_eq!(linear_scratch_bytes(&fp8, &linear(&fp8)), want);
        let lm_head = fp8.ops.iter().find(|o| o.site.name == "lm_head").unwrap();
        assert_eq!(linear_scratch_bytes(&fp8, &lm_head.op), 0, "the LM head stays bf16");
    }

    #[test]
    fn one_warp_per_row_group() {
        // 3 rows x 300 cols = 3 groups each: 9 warps -> 2 blocks of 8.
        assert_eq!(quant_act_launch(3, 300).grid_dim.0, 2);
        assert_eq!(quant_act_launch(0, 0).grid_dim.0, 1);
        let l = quant_weight_launch(&Fp8Layout::new(4, 300, 128));
        assert_eq!(l.grid_dim, (1, 3, 4));
    }
}
