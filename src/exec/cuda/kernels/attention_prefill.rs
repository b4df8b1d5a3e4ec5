//! Launch parameters for `kernels/attention_prefill.cu`: the KV-cache write and causal flash
//! prefill attention (one entry per head-dim bucket, chosen by [`select_variant`]).

use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::ptr::{Bf16Ptr, ConstBf16Ptr};

/// Token row `t` of `src` goes to sequence `t / tokens_per_seq`, position
/// `past + t % tokens_per_seq` of the caches.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct KvCacheWriteParams {
    /// Fused qkv (or kv) rows, `src_ld` elements apart.
    pub src: ConstBf16Ptr,
    pub src_ld: i32,
    pub rows: i32,
    /// First column of K head 0 / V head 0 inside a `src` row.
    pub k_col: i32,
    pub v_col: i32,
    pub k_heads: i32,
    pub v_heads: i32,
    pub d_k: i32,
    pub d_v: i32,
    /// [batch, max_seq, k_heads, d_k].
    pub k_cache: Bf16Ptr,
    /// [batch, max_seq, v_heads, d_v]; 0 skips V (MLA writes its cache with `mla_cache_write`).
    pub v_cache: Bf16Ptr,
    pub max_seq: i32,
    pub tokens_per_seq: i32,
    pub past: i32,
}
unsafe impl DeviceRepr for KvCacheWriteParams {}
pub const KV_CACHE_WRITE: (&str, &str) = ("attention_prefill", "kv_cache_write");

/// One block per token row.
pub fn kv_cache_write_launch(rows: i32) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows.max(0) as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 }
}

/// Strides are in elements; base pointers and strides must be 16-byte aligned (multiples of
/// 8 elements), `d_qk`, `d_v` multiples of 8, `n_q <= n_kv`. Query `i` sits at position
/// `n_kv - n_q + i` and sees keys `0..=` that position.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct FlashPrefillParams {
    pub q: ConstBf16Ptr,
    pub q_batch_stride: i64,
    pub q_token_stride: i32,
    pub q_head_stride: i32,
    pub k: ConstBf16Ptr,
    pub k_batch_stride: i64,
    pub k_token_stride: i32,
    pub k_head_stride: i32,
    pub v: ConstBf16Ptr,
    pub v_batch_stride: i64,
    pub v_token_stride: i32,
    pub v_head_stride: i32,
    pub o: Bf16Ptr,
    pub o_batch_stride: i64,
    pub o_token_stride: i32,
    pub o_head_stride: i32,
    pub batch: i32,
    pub n_q: i32,
    pub n_kv: i32,
    pub q_heads: i32,
    pub k_heads: i32,
    pub v_heads: i32,
    pub d_qk: i32,
    pub d_v: i32,
    pub scale: f32,
    /// `<= 0` disables the tanh soft cap.
    pub softcap: f32,
}
unsafe impl DeviceRepr for FlashPrefillParams {}

/// Compile-time shape of one `flash_prefill` entry: attention_prefill.cu instantiates its
/// template from these constants (through the generated header), [`PrefillVariant`] sizes
/// the launch from the same values.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefillTile {
    pub d_qk: i32,
    pub d_v: i32,
    /// Warps per CTA, 16 query rows each.
    pub warps: i32,
    /// Keys per K/V tile.
    pub block_n: i32,
}
pub const PREFILL_TILE_D32: PrefillTile = PrefillTile { d_qk: 32, d_v: 32, warps: 4, block_n: 64 };
pub const PREFILL_TILE_D64: PrefillTile = PrefillTile { d_qk: 64, d_v: 64, warps: 8, block_n: 64 };
pub const PREFILL_TILE_D128: PrefillTile = PrefillTile { d_qk: 128, d_v: 128, warps: 8, block_n: 64 };
pub const PREFILL_TILE_D192_128: PrefillTile = PrefillTile { d_qk: 192, d_v: 128, warps: 8, block_n: 64 };
pub const PREFILL_TILE_D256: PrefillTile = PrefillTile { d_qk: 256, d_v: 256, warps: 4, block_n: 32 };

/// One compiled head-dim bucket of `flash_prefill`; any `d_qk <= max_d_qk`, `d_v <= max_d_v`
/// (multiples of 8) runs correctly in it, because loads zero-fill the columns past `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefillVariant {
    pub kernel: (&'static str, &'static str),
    pub max_d_qk: i32,
    pub max_d_v: i32,
    /// Warps per CTA; each owns 16 query rows, so a CTA covers `16 * warps` queries.
    pub warps: i32,
    /// Keys per K/V tile.
    pub block_n: i32,
}

impl PrefillVariant {
    const fn new(kernel: &'static str, tile: PrefillTile) -> Self {
        PrefillVariant {
            kernel: ("attention_prefill", kernel),
            max_d_qk: tile.d_qk,
            max_d_v: tile.d_v,
            warps: tile.warps,
            block_n: tile.block_n,
        }
    }
    pub const fn block_m(&self) -> i32 {
        16 * self.warps
    }
    /// Dynamic shared memory: Q tile plus two K and two V tiles, rows padded by 8 elements.
    pub const fn smem_bytes(&self) -> u32 {
        let (qk, v) = (self.max_d_qk + 8, self.max_d_v + 8);
        ((self.block_m() * qk + 2 * self.block_n * qk + 2 * self.block_n * v) * 2) as u32
    }
}

/// Smallest first: [`select_variant`] returns the first that holds the dims.
pub const PREFILL_VARIANTS: [PrefillVariant; 5] = [
    PrefillVariant::new("flash_prefill_d32", PREFILL_TILE_D32),
    PrefillVariant::new("flash_prefill_d64", PREFILL_TILE_D64),
    PrefillVariant::new("flash_prefill_d128", PREFILL_TILE_D128),
    PrefillVariant::new("flash_prefill_d192_128", PREFILL_TILE_D192_128),
    PrefillVariant::new("flash_prefill_d256", PREFILL_TILE_D256),
];

/// The bucket for these head dims, or `None` when a dim exceeds 256 or is not a positive
/// multiple of 8 (no kernel covers it).
pub fn select_variant(d_qk: i32, d_v: i32) -> Option<PrefillVariant> {
    let valid = |d: i32| d > 0 && d % 8 == 0;
    if !valid(d_qk) || !valid(d_v) {
        return None;
    }
    PREFILL_VARIANTS.iter().copied().find(|v| d_qk <= v.max_d_qk && d_v <= v.max_d_v)
}

/// Grid (query blocks, q heads, batch); the caller must raise the kernel's max dynamic smem
/// attribute to `shared_mem_bytes` (above the 48 KiB default) once per function.
pub fn flash_prefill_launch(variant: &PrefillVariant, batch: i32, n_q: i32, q_heads: i32) -> LaunchConfig {
    let bm = variant.block_m();
    LaunchConfig {
        grid_dim: (((n_q + bm - 1) / bm).max(0) as u32, q_heads as u32, batch as u32),
        block_dim: (32 * variant.warps as u32, 1, 1),
        shared_mem_bytes: variant.smem_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_picks_smallest_bucket() {
        let select = |d_qk, d_v| select_variant(d_qk, d_v).map(|v| v.kernel);
        assert_eq!(select(16, 16), Some(("attention_prefill", "flash_prefill_d32")));
        assert_eq!(select(24, 16), Some(("attention_prefill", "flash_prefill_d32")));
        assert_eq!(select(64, 64), Some(("attention_prefill", "flash_prefill_d64")));
        assert_eq!(select(128, 128), Some(("attention_prefill", "flash_prefill_d128")));
        assert_eq!(select(192, 128), Some(("attention_prefill", "flash_prefill_d192_128")));
        assert_eq!(select(192, 192), Some(("attention_prefill", "flash_prefill_d256")));
        assert_eq!(select(256, 256), Some(("attention_prefill", "flash_prefill_d256")));
        assert_eq!(select(264, 128), None);
        assert_eq!(select(20, 16), None);
    }

    #[test]
    fn smem_fits_sm90() {
        for v in PREFILL_VARIANTS {
            assert!(v.smem_bytes() <= 227 * 1024, "{:?}", v.kernel);
        }
        // Hand count for d128: (128*136 + 2*64*136 + 2*64*136) * 2.
        assert_eq!(PREFILL_VARIANTS[2].smem_bytes(), 104_448);
    }
}
