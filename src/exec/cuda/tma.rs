//! TMA descriptors (tensor maps) for the Hopper kernels, encoded on the host with the
//! driver's `cuTensorMapEncodeTiled`. Every map here uses the 128-byte swizzle with a box
//! whose innermost extent is one swizzle span (64 bf16, or 128 e4m3 bytes for the FP8
//! GEMMs), which is the layout kernels/hopper.cuh's wgmma descriptors expect. Out-of-bounds
//! box elements read as zero, so edge tiles need no masking on load.

use std::mem::MaybeUninit;

use anyhow::{bail, ensure};
use cudarc::driver::sys;

use super::kernels::ptr::TensorMap;

/// Elements of the innermost box dimension: 64 bf16 = 128 bytes, the swizzle span.
pub const BOX_INNER: u32 = 64;
/// The same span in 8-bit elements (e4m3 codes): 128 bytes.
pub const BOX_INNER_U8: u32 = 128;

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
    encode(layout, box_dims, sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2)
}

/// [`encode_bf16`] for 8-bit elements (e4m3 codes, moved as bytes): `box_dims[0]` must be
/// [`BOX_INNER_U8`], strides count bytes.
pub fn encode_u8(layout: &TensorLayout, box_dims: &[u32]) -> anyhow::Result<TensorMap> {
    encode(layout, box_dims, sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_UINT8, 1)
}

fn encode(
    layout: &TensorLayout,
    box_dims: &[u32],
    dtype: sys::CUtensorMapDataType,
    elem_bytes: u64,
) -> anyhow::Result<TensorMap> {
    let inner = (128 / elem_bytes) as u32;
    let rank = layout.dims.len();
    ensure!((2..=5).contains(&rank), "a tensor map has 2 to 5 dimensions, not {rank}");
    ensure!(
        layout.strides.len() == rank - 1 && box_dims.len() == rank,
        "tensor map rank mismatch: {layout:?} box {box_dims:?}"
    );
    ensure!(box_dims[0] == inner, "the innermost box extent must be {inner} (one 128-byte swizzle span)");
    if !layout.base.is_multiple_of(16) {
        bail!("tensor map base {:#x} is not 16-byte aligned", layout.base);
    }
    for (i, &s) in layout.strides.iter().enumerate() {
        ensure!(
            (s * elem_bytes).is_multiple_of(16),
            "tensor map stride {i} ({s} elements) is not a multiple of 16 bytes"
        );
    }
    for (i, (&b, &d)) in box_dims.iter().zip(&layout.dims).enumerate() {
        ensure!((1..=256).contains(&b) && d >= 1, "tensor map box {i} = {b} over {d} elements is out of range");
    }
    let strides_bytes: Vec<u64> = layout.strides.iter().map(|s| s * elem_bytes).collect();
    let element_strides = vec![1u32; rank];
    let mut map = MaybeUninit::<TensorMap>::zeroed();
    // SAFETY: every array holds `rank` (strides: rank - 1) entries, as the driver reads.
    let status = unsafe {
        sys::cuTensorMapEncodeTiled(
            map.as_mut_ptr(),
            dtype,
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
    ensure!(
        status == sys::CUresult::CUDA_SUCCESS,
        "cuTensorMapEncodeTiled failed ({status:?}) for {layout:?} box {box_dims:?}"
    );
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

/// [`matrix_bf16`] for a row-major matrix of 8-bit codes (`ld` in bytes), boxes of
/// `box_rows` rows by 128 bytes.
pub fn matrix_u8(base: u64, rows: usize, cols: usize, ld: usize, box_rows: u32) -> anyhow::Result<TensorMap> {
    let layout = TensorLayout { base, dims: vec![cols as u64, rows as u64], strides: vec![ld as u64] };
    encode_u8(&layout, &[BOX_INNER_U8, box_rows])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(r: anyhow::Result<TensorMap>) -> String {
        r.err().map(|e| e.to_string()).unwrap_or_default()
    }

    // Every case fails before the driver is called, so this runs without a GPU.
    #[test]
    fn byte_maps_check_their_own_span_and_strides() {
        let layout = TensorLayout { base: 0, dims: vec![256, 8], strides: vec![256] };
        // A bf16-sized inner box is wrong for bytes, and the reverse.
        assert!(err(encode_u8(&layout, &[64, 8])).contains("must be 128"), "{}", err(encode_u8(&layout, &[64, 8])));
        assert!(err(encode_bf16(&layout, &[128, 8])).contains("must be 64"));
        // A 200-byte row stride is no multiple of 16 (200 bf16, 400 bytes, would be).
        assert!(err(matrix_u8(0, 8, 200, 200, 8)).contains("multiple of 16 bytes"));
        assert!(err(matrix_u8(0x8, 8, 256, 256, 8)).contains("not 16-byte aligned"));
        assert!(err(matrix_u8(0, 8, 256, 256, 300)).contains("out of range"));
    }
}
