//! Launch parameters for `kernels/attention_decode.cu`: split-KV decode attention over the KV cache
//! (one entry per head-dim bucket, chosen by [`select_variant`]) and the split combine.

use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::ptr::{Bf16Ptr, ConstBf16Ptr, ConstF32Ptr, F32Ptr};

/// One query per sequence; K cache [batch, max_seq, k_heads, d_qk], V cache
/// [batch, max_seq, v_heads, d_v]; keys `0..n_kv`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeAttentionParams {
    pub q: ConstBf16Ptr,
    pub q_batch_stride: i32,
    pub q_head_stride: i32,
    pub k_cache: ConstBf16Ptr,
    pub v_cache: ConstBf16Ptr,
    pub max_seq: i32,
    pub k_heads: i32,
    pub v_heads: i32,
    pub q_heads: i32,
    pub d_qk: i32,
    pub d_v: i32,
    pub n_kv: i32,
    pub batch: i32,
    pub scale: f32,
    pub softcap: f32,
    pub o: Bf16Ptr,
    pub o_batch_stride: i32,
    pub o_head_stride: i32,
    /// Partials, [`decode_scratch_bytes`]; may be 0 when `num_splits == 1`.
    pub scratch: F32Ptr,
    pub num_splits: i32,
}
unsafe impl DeviceRepr for DecodeAttentionParams {}

/// Same scratch, o and sizes as the decode launch.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeCombineParams {
    pub scratch: ConstF32Ptr,
    pub o: Bf16Ptr,
    pub o_batch_stride: i32,
    pub o_head_stride: i32,
    pub batch: i32,
    pub q_heads: i32,
    pub d_v: i32,
    pub num_splits: i32,
    /// fa3's combine (`decode_tma_combine`) only: 1 runs the merge once with every load and
    /// store predicated off before it waits on the decode (PDL), so its code is fetched while
    /// the decode still runs (`FWDBENCH_DECODE_COMBINE=warm`); 0 otherwise.
    pub warm: i32,
}
unsafe impl DeviceRepr for DecodeCombineParams {}
pub const DECODE_COMBINE: (&str, &str) = ("attention_decode", "decode_combine");

/// Keys per tile (16 per warp) and warps per CTA of every decode entry.
pub const DECODE_BLOCK_N: usize = 64;
pub const DECODE_WARPS: u32 = 4;
/// The sm_90 per-block dynamic smem limit.
const MAX_SMEM: usize = 227 * 1024;

/// Compile-time shape of one decode entry: attention_decode.cu instantiates its template
/// from these constants (through the generated header) and the launch sizes smem from them.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeTile {
    /// Head dim (q/k and v) the entry is compiled for.
    pub max_d: i32,
    /// Deepest cp.async ring the kernel uses when the smem fits.
    pub max_stages: i32,
}
pub const DECODE_TILE_D32: DecodeTile = DecodeTile { max_d: 32, max_stages: 3 };
pub const DECODE_TILE_D64: DecodeTile = DecodeTile { max_d: 64, max_stages: 3 };
pub const DECODE_TILE_D128: DecodeTile = DecodeTile { max_d: 128, max_stages: 3 };
pub const DECODE_TILE_D256: DecodeTile = DecodeTile { max_d: 256, max_stages: 2 };

/// One compiled head-dim bucket: any `max(d_qk, d_v) <= max_d` (multiple of 8) runs in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeVariant {
    pub kernel: (&'static str, &'static str),
    pub max_d: i32,
    /// Deepest cp.async ring the kernel uses when the smem fits.
    pub max_stages: i32,
}

impl DecodeVariant {
    const fn new(kernel: &'static str, tile: DecodeTile) -> Self {
        DecodeVariant { kernel: ("attention_decode", kernel), max_d: tile.max_d, max_stages: tile.max_stages }
    }
}

pub const DECODE_VARIANTS: [DecodeVariant; 4] = [
    DecodeVariant::new("decode_attention_d32", DECODE_TILE_D32),
    DecodeVariant::new("decode_attention_d64", DECODE_TILE_D64),
    DecodeVariant::new("decode_attention_d128", DECODE_TILE_D128),
    DecodeVariant::new("decode_attention_d256", DECODE_TILE_D256),
];

/// The bucket for these head dims, or `None` when a dim exceeds 256 or is not a positive
/// multiple of 8.
pub fn select_variant(d_qk: i32, d_v: i32) -> Option<DecodeVariant> {
    let valid = |d: i32| d > 0 && d % 8 == 0;
    if !valid(d_qk) || !valid(d_v) {
        return None;
    }
    DECODE_VARIANTS.iter().copied().find(|v| d_qk.max(d_v) <= v.max_d)
}

/// CTAs per K head: a CTA takes at most 16 of the q heads that share one K head.
pub fn decode_head_tiles(q_heads: i32, k_heads: i32) -> i32 {
    let group = (q_heads + k_heads - 1) / k_heads;
    (group + 15) / 16
}

/// Most V heads any CTA's q-head tile touches (1 for MHA/GQA; 4 for Sigma's 32q/4k/16v).
pub fn decode_max_v_heads(q_heads: i32, k_heads: i32, v_heads: i32) -> i32 {
    let (q, k, v) = (q_heads as i64, k_heads as i64, v_heads as i64);
    let mut most = 1;
    for kh in 0..k {
        let (begin, end) = ((kh * q + k - 1) / k, ((kh + 1) * q + k - 1) / k);
        let mut h0 = begin;
        while h0 < end {
            let last = (h0 + 16).min(end) - 1;
            most = most.max((last * v / q - h0 * v / q + 1) as i32);
            h0 += 16;
        }
    }
    most
}

/// Dynamic smem for a decode launch: the q tile plus the deepest ring of (K tile + one V tile
/// per V head the CTA touches) that fits 227 KiB, and at least the 4-warp merge area. The
/// kernel derives its ring depth from the size it is given, so this rule is the contract.
pub fn decode_smem_bytes(variant: &DecodeVariant, q_heads: i32, k_heads: i32, v_heads: i32) -> u32 {
    let row = variant.max_d as usize + 8;
    let v_tiles = decode_max_v_heads(q_heads, k_heads, v_heads) as usize;
    let merge = 4 * 16 * 2 * 4 + 4 * 16 * variant.max_d as usize * 4;
    let ring = |stages: usize| (16 * row + stages * (DECODE_BLOCK_N * row + v_tiles * DECODE_BLOCK_N * row)) * 2;
    let stages = (1..=variant.max_stages as usize).rev().find(|&s| ring(s).max(merge) <= MAX_SMEM).unwrap_or(1);
    ring(stages).max(merge) as u32
}

/// Split count that minimises (waves x keys per split + per-CTA overhead), assuming two
/// resident CTAs per SM; at most one split per 128 keys and 128 splits. `batch * k_heads`
/// CTAs per split (one head tile per K head, i.e. K groups of <= 16 q heads).
pub fn decode_num_splits(batch: i32, k_heads: i32, n_kv: i32, sm_count: i32) -> i32 {
    choose_splits(batch as i64 * k_heads as i64, 2 * sm_count as i64, n_kv, 128, 128)
}

/// Shared by decode and MLA: `base_ctas` CTAs per split, `slots` resident CTAs on the GPU.
pub(crate) fn choose_splits(base_ctas: i64, slots: i64, n_kv: i32, min_keys: i32, overhead_keys: i64) -> i32 {
    let max_splits = ((n_kv + min_keys - 1) / min_keys).clamp(1, 128);
    let (mut best, mut best_cost) = (1, i64::MAX);
    for s in 1..=max_splits {
        let waves = (base_ctas.max(1) * s as i64 + slots.max(1) - 1) / slots.max(1);
        let keys = (n_kv as i64 + s as i64 - 1) / s as i64;
        let cost = waves * (keys + overhead_keys) + if s > 1 { overhead_keys } else { 0 };
        if cost < best_cost {
            (best, best_cost) = (s, cost);
        }
    }
    best
}

/// fp32 scratch: partial o [batch, q_heads, splits, d_v] then lse [batch, q_heads, splits];
/// 0 when `num_splits <= 1` (the kernel writes o directly).
pub fn decode_scratch_bytes(batch: i32, q_heads: i32, d_v: i32, num_splits: i32) -> usize {
    if num_splits <= 1 {
        return 0;
    }
    batch as usize * q_heads as usize * num_splits as usize * (d_v as usize + 1) * 4
}

/// Grid (splits, k_heads * head tiles, batch), 128 threads; raise the function's max dynamic
/// smem attribute to `shared_mem_bytes` before launching.
pub fn decode_attention_launch(
    variant: &DecodeVariant,
    batch: i32,
    q_heads: i32,
    k_heads: i32,
    v_heads: i32,
    num_splits: i32,
) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (num_splits as u32, (k_heads * decode_head_tiles(q_heads, k_heads)) as u32, batch as u32),
        block_dim: (32 * DECODE_WARPS, 1, 1),
        shared_mem_bytes: decode_smem_bytes(variant, q_heads, k_heads, v_heads),
    }
}

/// Grid (q_heads, batch); returns at once when `num_splits <= 1`.
pub fn decode_combine_launch(batch: i32, q_heads: i32) -> LaunchConfig {
    LaunchConfig { grid_dim: (q_heads as u32, batch as u32, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v_heads_per_tile() {
        assert_eq!(decode_max_v_heads(64, 8, 8), 1);
        assert_eq!(decode_max_v_heads(32, 4, 16), 4);
        assert_eq!(decode_max_v_heads(32, 32, 32), 1);
        assert_eq!(decode_head_tiles(64, 1), 4);
    }

    #[test]
    fn smem_shrinks_ring_for_diffqkv() {
        let d128 = select_variant(128, 128).unwrap();
        assert_eq!(decode_smem_bytes(&d128, 64, 8, 8), (16 * 136 + 3 * 2 * 64 * 136) * 2);
        // 4 V tiles per stage: 3 stages would exceed 227 KiB, 2 fit.
        assert_eq!(decode_smem_bytes(&d128, 32, 4, 16), (16 * 136 + 2 * 5 * 64 * 136) * 2);
        for v in DECODE_VARIANTS {
            assert!(decode_smem_bytes(&v, 32, 4, 16) as usize <= MAX_SMEM);
        }
    }

    #[test]
    fn splits_fill_the_gpu() {
        assert_eq!(decode_num_splits(32, 8, 4096, 132), 1);
        assert_eq!(decode_num_splits(1, 8, 4096, 132), 32);
        assert_eq!(decode_num_splits(1, 8, 1, 132), 1);
        assert_eq!(decode_scratch_bytes(1, 64, 128, 1), 0);
        assert_eq!(decode_scratch_bytes(2, 64, 128, 4), 2 * 64 * 4 * 129 * 4);
    }
}
