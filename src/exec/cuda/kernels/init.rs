//! `kernels/init.cu`: synthetic weights on the device, bit-identical to
//! [`crate::weights::rng::value`] before the bf16 rounding.

use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::misc::chunked_launch;
use super::ptr::VoidPtr;

/// `dst[r, c] = value(seed, idx)` with `idx = (src_row0 + r) * src_ld + (src_col0 + c)`, or
/// `(src_col0 + c) * src_ld + (src_row0 + r)` when `transposed` (the window of the HF
/// tensor is stored transposed). `seed` is `rng::tensor_seed(global_seed, hf_name)`.
/// `dst` is bf16 for [`FILL_NORMAL_BF16`] and f32 for [`FILL_NORMAL_F32`] (same struct
/// layout on both sides).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct FillNormalParams {
    /// bf16 or f32 by entry.
    pub dst: VoidPtr,
    pub dst_ld: i64,
    pub rows: i64,
    pub cols: i64,
    pub seed: u64,
    pub mean: f32,
    pub std: f32,
    pub src_row0: i64,
    pub src_col0: i64,
    /// Row length of the full HF tensor.
    pub src_ld: i64,
    pub transposed: i32,
}
unsafe impl DeviceRepr for FillNormalParams {}
pub type FillNormalBf16Params = FillNormalParams;
pub type FillNormalF32Params = FillNormalParams;
pub const FILL_NORMAL_BF16: (&str, &str) = ("init", "fill_normal_bf16");
pub const FILL_NORMAL_F32: (&str, &str) = ("init", "fill_normal_f32");

/// One thread per 8 consecutive values of a row.
pub fn fill_normal_launch(rows: usize, cols: usize) -> LaunchConfig {
    chunked_launch(rows, cols)
}
