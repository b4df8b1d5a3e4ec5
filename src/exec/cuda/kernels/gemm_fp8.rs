//! Launch parameters for `kernels/gemm_fp8.cu`: our dense block-scaled FP8 GEMM, which FP8
//! Linears run after `quant_act_fp8` with `--gemm tma` (cuBLASLt's block-scaled matmul, the
//! default, measured 1.1-1.5x faster on DeepSeek-V3's prefill linears). Operands are in the `quant::Fp8Layout` buffers the
//! rest of the FP8 path already uses: codes first, scales behind them.

use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::super::tma;
use super::gemm_tma::GemmTile;
use super::ptr::{Bf16Ptr, ConstBf16Ptr, ConstF32Ptr, TensorMap};
use crate::quant::{Fp8Layout, BLOCK};

/// Tile and ring depth: BK 128 bytes is one swizzle row of e4m3, BN 256 two weight scale
/// blocks (170 FLOP per byte of L2 where 128 x 128 read 128 and was L2-bound).
pub const GEMM_FP8_TILE: GemmTile = GemmTile { m: 128, n: 256, k: 128, stages: 4 };
/// M-blocks walked together across all n-tiles (the CTA raster, see gemm_fp8.cu).
pub const GEMM_FP8_GROUP_M: i32 = 8;
/// A producer warpgroup and two consumer warpgroups.
pub const GEMM_FP8_THREADS: u32 = 384;
pub const GEMM_FP8: (&str, &str) = ("gemm_fp8", "gemm_fp8_block");

/// Tensor maps first: they need 128-byte alignment inside the struct, as in C.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GemmFp8Params {
    /// xq `[m, k]` e4m3 codes, boxes of 128 bytes x `GEMM_FP8_TILE.m` rows.
    pub a: TensorMap,
    /// Wq `[n, k]` e4m3 codes, boxes of 128 bytes x `GEMM_FP8_TILE.n` rows.
    pub b: TensorMap,
    /// `[k / 128, m]` activation group scales.
    pub sx: ConstF32Ptr,
    /// `[ceil(n / 128), sw_ld]` weight block scales.
    pub sw: ConstF32Ptr,
    /// `[n]`, or 0 for none (added after alpha, as cuBLASLt's bias epilogue does).
    pub bias: ConstBf16Ptr,
    pub out: Bf16Ptr,
    pub ldo: i64,
    pub sw_ld: i32,
    pub m: i32,
    pub n: i32,
    pub k: i32,
    /// N tiles of the raster (`ceil(n / 256)`).
    pub n_tiles: i32,
    pub alpha: f32,
}
unsafe impl DeviceRepr for GemmFp8Params {}

/// One FP8 GEMM `out[m, n] = alpha * xq . Wq^T (+ bias)` on device buffers.
#[derive(Debug, Clone, Copy)]
pub struct Fp8Gemm {
    /// The quantized activation: `Fp8Layout::new(1, m, k)` (codes, then group scales).
    pub x: u64,
    /// The weight: `Fp8Layout::new(1, n, k)` (codes, then padded block scales).
    pub w: u64,
    pub bias: Option<u64>,
    /// bf16 `[m, ldo]`.
    pub out: u64,
    pub ldo: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
}

/// Shared memory of the ring: A stages of 128 x 128 bytes and B of 256 x 128, 2 barriers per stage, 1 KiB
/// alignment slack (hopper.cuh's TmaRing).
pub const fn gemm_fp8_smem_bytes() -> u32 {
    let t = GEMM_FP8_TILE;
    ((t.m * t.k + t.n * t.k) * t.stages + 16 * t.stages + 1024) as u32
}

/// The grid: every (m, n) tile once, in one dimension (the kernel rasters it).
pub fn gemm_fp8_launch(m: usize, n: usize) -> LaunchConfig {
    let t = GEMM_FP8_TILE;
    let tiles = m.div_ceil(t.m as usize) * n.div_ceil(t.n as usize);
    LaunchConfig {
        grid_dim: (tiles as u32, 1, 1),
        block_dim: (GEMM_FP8_THREADS, 1, 1),
        shared_mem_bytes: gemm_fp8_smem_bytes(),
    }
}

/// Checks the shape (before any driver call), then encodes the tensor maps.
pub fn gemm_fp8(g: &Fp8Gemm) -> anyhow::Result<(GemmFp8Params, LaunchConfig)> {
    anyhow::ensure!(g.m >= 1 && g.n >= 1, "FP8 GEMM of an empty shape (m {}, n {})", g.m, g.n);
    anyhow::ensure!(
        g.k >= BLOCK && g.k.is_multiple_of(BLOCK),
        "the FP8 GEMM needs a depth k that is a multiple of {BLOCK} (one scale group per 128 columns), not {}: \
         FP8 plans quantize only such linears; run this one in bf16 (--quant bf16)",
        g.k
    );
    anyhow::ensure!(g.ldo >= g.n, "FP8 GEMM output row stride {} is below its {} columns", g.ldo, g.n);
    let (xl, wl) = (Fp8Layout::new(1, g.m, g.k), Fp8Layout::new(1, g.n, g.k));
    let t = GEMM_FP8_TILE;
    let p = GemmFp8Params {
        a: tma::matrix_u8(g.x, g.m, g.k, g.k, t.m as u32)?,
        b: tma::matrix_u8(g.w, g.n, g.k, g.k, t.n as u32)?,
        sx: g.x + xl.scale_offset() as u64,
        sw: g.w + wl.scale_offset() as u64,
        bias: g.bias.unwrap_or(0),
        out: g.out,
        ldo: g.ldo as i64,
        sw_ld: wl.weight_scale_ld() as i32,
        m: g.m as i32,
        n: g.n as i32,
        k: g.k as i32,
        n_tiles: g.n.div_ceil(t.n as usize) as i32,
        alpha: g.alpha,
    };
    Ok((p, gemm_fp8_launch(g.m, g.n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_match_the_c_layout() {
        // Two 128-byte maps, four pointers and ldo (8 bytes each), six 4-byte fields, padded to 128.
        assert_eq!(std::mem::align_of::<GemmFp8Params>(), 128);
        assert_eq!(std::mem::offset_of!(GemmFp8Params, sx), 256);
        assert_eq!(std::mem::offset_of!(GemmFp8Params, ldo), 288);
        assert_eq!(std::mem::offset_of!(GemmFp8Params, alpha), 316);
        assert_eq!(std::mem::size_of::<GemmFp8Params>(), 384);
    }

    #[test]
    fn ring_fits_and_grid_covers_every_tile() {
        // 4 stages of a 16 KiB A and a 32 KiB B tile, 64 bytes of barriers, 1 KiB slack.
        assert_eq!(gemm_fp8_smem_bytes(), 4 * 49_152 + 64 + 1024);
        assert!(gemm_fp8_smem_bytes() <= 227 * 1024);
        // DeepSeek-V3 at 4096 tokens, 7168 -> 18432: 32 M-blocks x 72 n-tiles.
        assert_eq!(gemm_fp8_launch(4096, 18_432).grid_dim, (32 * 72, 1, 1));
        // Odd shapes round up: 300 rows are 3 M-blocks, 520 columns 3 n-tiles.
        let cfg = gemm_fp8_launch(300, 520);
        assert_eq!((cfg.grid_dim, cfg.block_dim), ((9, 1, 1), (384, 1, 1)));
    }

    fn problem(m: usize, n: usize, k: usize) -> Fp8Gemm {
        Fp8Gemm { x: 0, w: 0, bias: None, out: 0, ldo: n, m, n, k, alpha: 1.0 }
    }

    #[test]
    fn shapes_without_a_kernel_are_refused_before_any_driver_call() {
        let message = |g: Fp8Gemm| gemm_fp8(&g).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message(problem(300, 520, 200)).contains("multiple of 128"));
        assert!(message(problem(300, 520, 64)).contains("multiple of 128"));
        assert!(message(problem(0, 520, 384)).contains("empty"));
        assert!(message(Fp8Gemm { ldo: 500, ..problem(3, 520, 384) }).contains("row stride"));
    }
}
