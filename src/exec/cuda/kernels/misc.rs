//! `kernels/misc.cu`: the strided row gather (`gather_rows`), the benchmarks' read-only L2
//! flush (`l2_flush_read`, [`L2FlushParams`]), plus the launch
//! shape shared by every 1-D grid-stride kernel that walks (row, 8-value chunk) pairs
//! (embed, act, init, misc, rope).

use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::prepare::{kernel, Call, Prep};
use super::ptr::{Bf16Ptr, ConstBf16Ptr, ConstI32Ptr, I32Ptr};
use crate::plan::Op;

/// Threads per block of the chunk-walking kernels.
pub const CHUNK_THREADS: u32 = 256;
/// Grid cap for those kernels: beyond it the grid-stride loop covers the rest, so the
/// cap only bounds block-scheduling overhead (the H200 holds ~1000 such blocks at once).
pub const MAX_CHUNK_BLOCKS: u64 = 32768;

/// One thread per `work_items` item, 256 threads per block, capped grid.
pub fn grid_stride_launch(work_items: u64) -> LaunchConfig {
    let blocks = work_items.div_ceil(u64::from(CHUNK_THREADS)).clamp(1, MAX_CHUNK_BLOCKS);
    LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (CHUNK_THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// Launch shape for a kernel walking `rows` rows of `cols` values in chunks of 8 (what it
/// uses when rows are 16-byte aligned; otherwise it walks single values with the same grid).
pub fn chunked_launch(rows: usize, cols: usize) -> LaunchConfig {
    grid_stride_launch((rows as u64).saturating_mul((cols as u64).div_ceil(8)))
}

/// `l2_flush_read`: reads `n_vec16` 16-byte vectors of `buf` through L2 and writes `sink`
/// only if their XOR equals `never` (pass a value the buffer's contents cannot give, so the
/// loads stay and nothing is written).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct L2FlushParams {
    pub buf: ConstI32Ptr,
    pub n_vec16: i64,
    pub sink: I32Ptr,
    pub never: i32,
}
unsafe impl DeviceRepr for L2FlushParams {}

pub const L2_FLUSH_READ: (&str, &str) = ("misc", "l2_flush_read");

/// `dst[i, :] = src[rows_idx[i], :]` for `i < n_rows`, `cols` values per row.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GatherRowsParams {
    /// Row stride `src_ld`.
    pub src: ConstBf16Ptr,
    pub src_ld: i32,
    /// Row stride `dst_ld`; must not overlap `src`.
    pub dst: Bf16Ptr,
    pub dst_ld: i32,
    /// `[n_rows]`, source row of each destination row.
    pub rows_idx: ConstI32Ptr,
    pub n_rows: i32,
    pub cols: i32,
}
unsafe impl DeviceRepr for GatherRowsParams {}
pub const GATHER_ROWS: (&str, &str) = ("misc", "gather_rows");
pub fn gather_rows_launch(n_rows: usize, cols: usize) -> LaunchConfig {
    chunked_launch(n_rows, cols)
}

/// `Op::GatherRows`: the row indices are fixed by the plan and uploaded once.
pub fn prepare(cx: &mut Prep, op: &Op) -> anyhow::Result<Vec<Call>> {
    let Op::GatherRows { x, rows, out } = op else { unreachable!("misc::prepare got {op:?}") };
    let idx: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
    let p = GatherRowsParams {
        src: cx.ptr(*x),
        src_ld: cx.ld(*x),
        dst: cx.ptr(*out),
        dst_ld: cx.ld(*out),
        rows_idx: cx.upload(&idx)?,
        n_rows: rows.len() as i32,
        cols: x.cols as i32,
    };
    Ok(vec![kernel(GATHER_ROWS, gather_rows_launch(rows.len(), x.cols), p)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_grid_covers_small_and_caps_large() {
        assert_eq!(chunked_launch(0, 0).grid_dim.0, 1);
        assert_eq!(chunked_launch(1, 7).grid_dim.0, 1);
        assert_eq!(chunked_launch(8192, 7168).grid_dim.0, 8192 * 896 / 256);
        assert_eq!(chunked_launch(1 << 20, 1 << 16).grid_dim.0, MAX_CHUNK_BLOCKS as u32);
    }
}
