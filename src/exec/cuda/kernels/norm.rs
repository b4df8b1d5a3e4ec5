//! `kernels/norm.cu`: RMSNorm (with the fused residual add), LayerNorm and the per-head
//! RMSNorm of QK-norm.

use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::misc::MAX_CHUNK_BLOCKS;
use super::prepare::{kernel, Call, Prep};
use super::ptr::{Bf16Ptr, ConstBf16Ptr};
use crate::config::model::NormKind;
use crate::plan::Op;

/// 16-byte vectors of a row each thread keeps in registers (norm.cu sizes its register
/// arrays with it, the launch below sizes blocks with it).
pub const NORM_VECS_PER_THREAD: usize = 4;
/// Same for one head in `head_rms_norm`.
pub const HEAD_NORM_VECS_PER_THREAD: usize = 4;

/// If `delta`: `x = bf16(x + delta)` (stored back); then
/// `out = bf16(w * bf16(x * rsqrt(mean(x^2) + eps)))`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct RmsNormParams {
    /// `[rows, cols]`, row stride `x_ld`; updated in place when `delta` is set.
    pub x: Bf16Ptr,
    pub x_ld: i32,
    /// Nullable (0): no residual add.
    pub delta: ConstBf16Ptr,
    pub delta_ld: i32,
    /// `[cols]`.
    pub weight: ConstBf16Ptr,
    /// May equal `x` (each thread reads a value before writing its output).
    pub out: Bf16Ptr,
    pub out_ld: i32,
    pub rows: i32,
    pub cols: i32,
    pub eps: f32,
}
unsafe impl DeviceRepr for RmsNormParams {}
pub const RMS_NORM: (&str, &str) = ("norm", "rms_norm");

/// Residual as in [`RmsNormParams`]; `out = bf16((x - mean) * rsqrt(var + eps) * w + b)`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerNormParams {
    pub x: Bf16Ptr,
    pub x_ld: i32,
    pub delta: ConstBf16Ptr,
    pub delta_ld: i32,
    pub weight: ConstBf16Ptr,
    pub bias: ConstBf16Ptr,
    pub out: Bf16Ptr,
    pub out_ld: i32,
    pub rows: i32,
    pub cols: i32,
    pub eps: f32,
}
unsafe impl DeviceRepr for LayerNormParams {}
pub const LAYER_NORM: (&str, &str) = ("norm", "layer_norm");

/// One block per row, sized so the row fits in registers
/// (`ceil(cols / 8) <= threads * NORM_VECS_PER_THREAD`) up to 1024 threads (cols <= 32768);
/// wider rows still work through the kernel's re-reading path.
pub fn rms_norm_launch(rows: usize, cols: usize) -> LaunchConfig {
    let vectors = cols.div_ceil(8);
    // At most 512 threads: at 72-80 registers a 1024-thread block exceeds the register file;
    // wider rows take the kernel's re-reading path.
    let threads = vectors.div_ceil(NORM_VECS_PER_THREAD).div_ceil(32).clamp(1, 16) * 32;
    LaunchConfig {
        grid_dim: (rows.clamp(1, i32::MAX as usize) as u32, 1, 1),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}
pub fn layer_norm_launch(rows: usize, cols: usize) -> LaunchConfig {
    rms_norm_launch(rows, cols)
}

/// In place: for each row and head h, RMSNorm (HF cast order) of
/// `x[row, col_offset + h*head_dim ..][..head_dim]` with `weight[head_dim]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct HeadRmsNormParams {
    pub x: Bf16Ptr,
    pub ld: i32,
    pub rows: i32,
    pub col_offset: i32,
    pub n_heads: i32,
    pub head_dim: i32,
    pub weight: ConstBf16Ptr,
    pub eps: f32,
}
unsafe impl DeviceRepr for HeadRmsNormParams {}
pub const HEAD_RMS_NORM: (&str, &str) = ("norm", "head_rms_norm");

/// 256 threads; each warp covers `32 / lanes` heads where `lanes` is the smallest power of
/// two >= head_dim / 8 (one warp per head when head_dim is not a multiple of 8).
pub fn head_rms_norm_launch(rows: usize, n_heads: usize, head_dim: usize) -> LaunchConfig {
    let heads_per_warp = if head_dim.is_multiple_of(8) && head_dim / 8 <= 32 * HEAD_NORM_VECS_PER_THREAD {
        32 / (head_dim / 8).next_power_of_two().clamp(1, 32)
    } else {
        1
    };
    let warps = (rows as u64).saturating_mul(n_heads as u64).div_ceil(heads_per_warp as u64);
    let blocks = warps.div_ceil(8).clamp(1, MAX_CHUNK_BLOCKS);
    LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

/// `Op::Norm` (RMSNorm or LayerNorm, with the residual add fused) and `Op::HeadNorm`.
pub fn prepare(cx: &mut Prep, op: &Op) -> anyhow::Result<Vec<Call>> {
    match op {
        Op::Norm { x, delta, weight, bias, kind, eps, out } => {
            let (rows, cols) = (cx.rows(*x), x.cols as i32);
            let (delta, delta_ld) = delta.map(|d| (cx.ptr(d), cx.ld(d))).unwrap_or((0, 0));
            Ok(vec![match kind {
                NormKind::RmsNorm => {
                    let p = RmsNormParams {
                        x: cx.ptr(*x),
                        x_ld: cx.ld(*x),
                        delta,
                        delta_ld,
                        weight: cx.w(*weight),
                        out: cx.ptr(*out),
                        out_ld: cx.ld(*out),
                        rows,
                        cols,
                        eps: *eps,
                    };
                    kernel(RMS_NORM, rms_norm_launch(rows as usize, x.cols), p)
                }
                NormKind::LayerNorm => {
                    let p = LayerNormParams {
                        x: cx.ptr(*x),
                        x_ld: cx.ld(*x),
                        delta,
                        delta_ld,
                        weight: cx.w(*weight),
                        bias: cx.w_or_null(*bias),
                        out: cx.ptr(*out),
                        out_ld: cx.ld(*out),
                        rows,
                        cols,
                        eps: *eps,
                    };
                    kernel(LAYER_NORM, layer_norm_launch(rows as usize, x.cols), p)
                }
            }])
        }
        Op::HeadNorm { x, heads, head_dim, weight, eps } => {
            let p = HeadRmsNormParams {
                x: cx.base(*x),
                ld: cx.ld(*x),
                rows: cx.rows(*x),
                col_offset: x.col as i32,
                n_heads: *heads as i32,
                head_dim: *head_dim as i32,
                weight: cx.w(*weight),
                eps: *eps,
            };
            Ok(vec![kernel(HEAD_RMS_NORM, head_rms_norm_launch(cx.rows(*x) as usize, *heads, *head_dim), p)])
        }
        _ => unreachable!("norm::prepare got {op:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norm_block_holds_the_row_in_registers() {
        // Up to 512 threads x 4 vectors x 8 values = 16384 columns stay in registers;
        // wider rows take the kernel's re-reading path (blocks never exceed 512 threads,
        // which the register file can hold at 80 registers a thread).
        for cols in [1, 7, 512, 1536, 4096, 5120, 7168, 12288, 16384] {
            let threads = rms_norm_launch(3, cols).block_dim.0 as usize;
            assert_eq!(threads % 32, 0);
            assert!(cols.div_ceil(8) <= threads * NORM_VECS_PER_THREAD, "cols {cols}");
        }
        assert_eq!(rms_norm_launch(8192, 7168).block_dim.0, 224);
        assert_eq!(rms_norm_launch(1, 32768).block_dim.0, 512);
        assert_eq!(rms_norm_launch(1, 1 << 20).block_dim.0, 512);
    }

    #[test]
    fn head_norm_packs_heads_into_warps() {
        // head_dim 128: 16 lanes per head, 2 heads per warp, 16 per 256-thread block.
        assert_eq!(head_rms_norm_launch(8, 64, 128).grid_dim.0, 8 * 64 / 16);
        assert_eq!(head_rms_norm_launch(8, 64, 7).grid_dim.0, 8 * 64 / 8);
        assert_eq!(head_rms_norm_launch(0, 0, 64).grid_dim.0, 1);
    }
}
