//! TMA descriptors (tensor maps) for the Hopper kernels, encoded on the host with the
//! driver's `cuTensorMapEncodeTiled`. Every map here is bf16 with the 128-byte swizzle and a
//! box whose innermost extent is 64 elements (one swizzle span), which is the layout
//! kernels/hopper.cuh's wgmma descriptors expect. Out-of-bounds box elements read as zero,
//! so edge tiles need no masking on load.

use std::mem::MaybeUninit;

use anyhow::{bail, ensure};
use cudarc::driver::sys;

use super::kernels::ptr::TensorMap;

/// Elements of the innermost box dimension: 64 bf16 = 128 bytes, the swizzle span.
pub const BOX_INNER: u32 = 64;

/// A bf16 tensor of up to 5 dimensions, innermost first: `dims[i]` elements, `strides[i]` the
/// element distance between consecutive indices of dimension `i + 1` (dimension 0 is
/// contiguous).
#[derive(Debug, Clone)]
pub struct TensorLayout {
    pub base: u64,
    pub dims: Vec<u64>,
    pub strides: Vec<u64>,
}

/// Encodes a tiled map over `layout` with box `box_dims` (innermost first; `box_dims[0]`
/// must be [`BOX_INNER`]).
pub fn encode_bf16(layout: &TensorLayout, box_dims: &[u32]) -> anyhow::Result<TensorMap> {
    let rank = layout.dims.len();
    ensure!((2..=5).contains(&rank), "a tensor map has 2 to 5 dimensions, not {rank}");
    ensure!(layout.strides.len() == rank - 1 && box_dims.len() == rank, "tensor map rank mismatch: {layout:?} box {box_dims:?}");
    ensure!(box_dims[0] == BOX_INNER, "the innermost box extent must be {BOX_INNER} (one 128-byte swizzle span)");
    if !layout.base.is_multiple_of(16) {
        bail!("tensor map base {:#x} is not 16-byte aligned", layout.base);
    }
    for (i, &s) in layout.strides.iter().enumerate() {
        ensure!((s * 2) % 16 == 0, "tensor map stride {i} ({s} elements) is not a multiple of 16 bytes");
    }
    for (i, (&b, &d)) in box_dims.iter().zip(&layout.dims).enumerate() {
        ensure!((1..=256).contains(&b) && d >= 1, "tensor map box {i} = {b} over {d} elements is out of range");
    }
    let strides_bytes: Vec<u64> = layout.strides.iter().map(|s| s * 2).collect();
    let element_strides = vec![1u32; rank];
    let mut map = MaybeUninit::<TensorMap>::zeroed();
    // SAFETY: every array holds `rank` (strides: rank - 1) entries, as the driver reads.
    let status = unsafe {
        sys::cuTensorMapEncodeTiled(
            map.as_mut_ptr(),
            sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
            rank as u32,
            layout.base as *mut std::ffi::c_void,
            layout.dims.as_ptr(),
            strides_bytes.as_ptr(),
            box_dims.as_ptr(),
            element_strides.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    ensure!(status == sys::CUresult::CUDA_SUCCESS, "cuTensorMapEncodeTiled failed ({status:?}) for {layout:?} box {box_dims:?}");
    // SAFETY: the driver wrote the whole descriptor on success.
    Ok(unsafe { map.assume_init() })
}

/// A row-major matrix of `rows` x `cols` bf16 with row stride `ld`, boxes of `box_rows` rows
/// by 64 columns. The box may be larger than the matrix: the kernels count full boxes in
/// their barriers, and the rows past the end read as zero.
pub fn matrix_bf16(base: u64, rows: usize, cols: usize, ld: usize, box_rows: u32) -> anyhow::Result<TensorMap> {
    let layout = TensorLayout { base, dims: vec![cols as u64, rows as u64], strides: vec![ld as u64] };
    encode_bf16(&layout, &[BOX_INNER, box_rows])
}
