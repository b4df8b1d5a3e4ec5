//! Launch parameters for `kernels/gemm_tma.cu`, the Hopper layer's TMA + wgmma GEMM gate
//! (C = A B^T, bf16). It is timed against cuBLASLt in tests/gpu.rs; no plan op uses it
//! until it wins.

use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::super::tma;
use super::ptr::{Bf16Ptr, TensorMap};

/// Compile-time tile of the gate GEMM (the kernel instantiates from these through the
/// generated header).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmTile {
    pub m: i32,
    pub n: i32,
    pub k: i32,
    pub stages: i32,
}
pub const GEMM_TMA_TILE: GemmTile = GemmTile { m: 128, n: 256, k: 64, stages: 4 };

/// Tensor maps first: they need 128-byte alignment inside the struct, as in C.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GemmTmaParams {
    /// A [m, k] row-major, boxes of 64 columns x `GEMM_TMA_TILE.m` rows.
    pub a: TensorMap,
    /// B [n, k] row-major, boxes of 64 columns x `GEMM_TMA_TILE.n` rows.
    pub b: TensorMap,
    pub c: Bf16Ptr,
    pub ldc: i64,
    pub m: i32,
    pub n: i32,
    pub k: i32,
}
unsafe impl DeviceRepr for GemmTmaParams {}
pub const GEMM_TMA: (&str, &str) = ("gemm_tma", "gemm_tma_bf16");

/// Shared memory of the ring: A and B stages, 2 barriers per stage, 1 KiB alignment slack.
pub const fn gemm_tma_smem_bytes() -> u32 {
    let t = GEMM_TMA_TILE;
    ((t.m * t.k + t.n * t.k) * 2 * t.stages + 16 * t.stages + 1024) as u32
}

/// Parameters and launch for C[m, n] = A[m, k] B[n, k]^T on row-major device buffers.
#[allow(clippy::too_many_arguments)]
pub fn gemm_tma(
    a: u64,
    lda: usize,
    b: u64,
    ldb: usize,
    c: u64,
    ldc: usize,
    m: usize,
    n: usize,
    k: usize,
) -> anyhow::Result<(GemmTmaParams, LaunchConfig)> {
    let t = GEMM_TMA_TILE;
    let p = GemmTmaParams {
        a: tma::matrix_bf16(a, m, k, lda, t.m as u32)?,
        b: tma::matrix_bf16(b, n, k, ldb, t.n as u32)?,
        c,
        ldc: ldc as i64,
        m: m as i32,
        n: n as i32,
        k: k as i32,
    };
    let cfg = LaunchConfig {
        grid_dim: (n.div_ceil(t.n as usize) as u32, m.div_ceil(t.m as usize) as u32, 1),
        block_dim: (384, 1, 1),
        shared_mem_bytes: gemm_tma_smem_bytes(),
    };
    Ok((p, cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_match_the_c_layout() {
        // Two 128-byte maps, then c, ldc (8 bytes each) and three i32, padded to 128.
        assert_eq!(std::mem::align_of::<GemmTmaParams>(), 128);
        assert_eq!(std::mem::offset_of!(GemmTmaParams, c), 256);
        assert_eq!(std::mem::size_of::<GemmTmaParams>(), 384);
        assert!(gemm_tma_smem_bytes() <= 227 * 1024);
    }
}
