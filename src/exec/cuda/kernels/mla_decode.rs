//! Launch parameters for `kernels/mla_decode_wgmma.cu`: absorbed-form MLA decode with TMA and
//! wgmma, the `fa3` backend's MLA decode for DeepSeek's 512 + 64 latent (other widths, and
//! the `fa2` backend, run mla.cu's mma.sync kernels). Its split partials use mla.cu's scratch
//! layout, so mla.cu's `mla_combine` merges them.

use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::super::tma::{encode_bf16, TensorLayout, BOX_INNER};
use anyhow::ensure;

use super::attention_decode::choose_splits;
use super::mla::MlaDecodeParams;
use super::prepare::{kernel, Call};
use super::ptr::{Bf16Ptr, F32Ptr, TensorMap};

/// Latent and rope widths the kernel is compiled for (its Q and cache tiles are 9 chunks of
/// 64 columns).
pub const MLA_WGMMA_KV_LORA_RANK: i32 = 512;
pub const MLA_WGMMA_ROPE_DIM: i32 = 64;
/// Heads per CTA: the wgmma M rows (fewer heads are padded with zero rows).
pub const MLA_WGMMA_HEADS_PER_CTA: i32 = 64;
/// Cache rows per ring stage.
pub const MLA_WGMMA_BLOCK_N: i32 = 64;
/// Dynamic shared memory: Q tile + 2 ring stages (each 64 x 576 bf16), the 64 x 64 bf16 P
/// tile, two fp32 row arrays of 2 x 64 (maxima, sums), 21 mbarriers (Q, a full barrier per
/// stage and 64-column chunk, an empty one per stage), 1 KiB alignment slack. The kernel
/// static_asserts its own layout against this.
pub const MLA_WGMMA_SMEM_BYTES: i32 = 3 * 64 * 576 * 2 + 64 * 64 * 2 + 2 * (2 * 64 * 4) + (1 + 2 * 9 + 2) * 8 + 1024;
// One CTA per SM only if it fits the H200's 227 KiB opt-in shared memory.
const _: () = assert!(MLA_WGMMA_SMEM_BYTES <= 227 * 1024);
/// Three warpgroups: the TMA producer and two consumers.
pub const MLA_WGMMA_THREADS: u32 = 384;

pub const MLA_DECODE_WGMMA: (&str, &str) = ("mla_decode_wgmma", "mla_decode_wgmma");
/// The same kernel with v4's S (split by keys, not along its depth), for A/B runs: chosen
/// when [`MLA_S_SPLIT_ENV`] is `keys`.
pub const MLA_DECODE_WGMMA_V4: (&str, &str) = ("mla_decode_wgmma", "mla_decode_wgmma_v4");
pub const MLA_S_SPLIT_ENV: &str = "FWDBENCH_MLA_S_SPLIT";
/// The keys kernel prefetches this many tiles beyond its ring into L2; the environment
/// variable overrides it (0 turns the prefetch off) for A/B runs.
pub const MLA_KEYS_L2_PREFETCH_TILES: i32 = 3;
pub const MLA_L2_PREFETCH_ENV: &str = "FWDBENCH_MLA_L2_PREFETCH";

/// The keys-on-M kernel (v4) serves at most this many heads, its wgmma N (the TP8 shard's 16;
/// fewer are zero columns).
pub const MLA_WGMMA_KEYS_HEADS: i32 = 16;
/// Its dynamic shared memory: Q (16 heads x 576), a ring of 25 chunks of 64 keys x 64
/// columns, P^T (16 x 64) bf16, the per-warp maxima (2 tiles x 4 warps x 16 heads) and sums
/// (4 x 16) in fp32, 51 mbarriers (Q, a full and an empty one per slot), 1 KiB alignment slack.
pub const MLA_WGMMA_KEYS_SMEM_BYTES: i32 =
    (16 * 576 + 25 * 64 * 64 + 16 * 64) * 2 + (2 * 4 * 16 + 4 * 16) * 4 + (1 + 2 * 25) * 8 + 1024;
const _: () = assert!(MLA_WGMMA_KEYS_SMEM_BYTES <= 227 * 1024);
/// The TMA producer warpgroup and one consumer warpgroup.
pub const MLA_WGMMA_KEYS_THREADS: u32 = 256;
/// One CTA per split; the pair entry is launched in clusters of 2 (its two splits merge in
/// distributed shared memory, no combine kernel).
pub const MLA_DECODE_WGMMA_KEYS: (&str, &str) = ("mla_decode_wgmma", "mla_decode_wgmma_keys");
pub const MLA_DECODE_WGMMA_KEYS_PAIR: (&str, &str) = ("mla_decode_wgmma", "mla_decode_wgmma_keys_pair");

/// Tensor maps first (128-byte aligned, as in C).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MlaDecodeWgmmaParams {
    /// (512, heads, batch, 1), boxes of 64 x 64 x 1 x 1.
    pub q_lat: TensorMap,
    /// (64, heads, batch, 1), boxes of 64 x 64 x 1 x 1.
    pub q_pe: TensorMap,
    /// The latent cache (576, n_kv, batch, 1), boxes of 64 x 64 x 1 x 1: rows past the
    /// context read as zero.
    pub cache: TensorMap,
    pub o: Bf16Ptr,
    pub o_batch_stride: i32,
    pub o_head_stride: i32,
    /// Partials in mla.cu's layout ([`super::mla::mla_scratch_bytes`]); unused at one split.
    pub scratch: F32Ptr,
    pub n_kv: i32,
    pub batch: i32,
    pub heads: i32,
    pub num_splits: i32,
    pub scale: f32,
    /// Keys kernel only: how many tiles beyond its ring the producer prefetches into L2.
    pub l2_prefetch_tiles: i32,
}
unsafe impl DeviceRepr for MlaDecodeWgmmaParams {}

/// Whether the wgmma kernel serves these latent and rope widths.
pub fn mla_wgmma_supports(kv_lora_rank: usize, d_rope: usize) -> bool {
    kv_lora_rank == MLA_WGMMA_KV_LORA_RANK as usize && d_rope == MLA_WGMMA_ROPE_DIM as usize
}

/// Split count: one resident CTA per SM (the kernel takes ~226 KiB of shared memory), at
/// least one 64-key tile per split, and a per-split cost of about one tile (Q load, pipeline
/// fill, partial write and its share of the combine). Every sequence has the same context,
/// so equal splits are equal work.
pub fn mla_wgmma_num_splits(batch: i32, heads: i32, n_kv: i32, sm_count: i32) -> i32 {
    let head_tiles = (heads + MLA_WGMMA_HEADS_PER_CTA - 1) / MLA_WGMMA_HEADS_PER_CTA;
    let keys = MLA_WGMMA_BLOCK_N;
    choose_splits(batch as i64 * head_tiles as i64, sm_count as i64, n_kv, keys, keys as i64)
}

/// Grid (splits, 64-head tiles, batch).
pub fn mla_wgmma_launch(batch: i32, heads: i32, num_splits: i32) -> LaunchConfig {
    let tiles = (heads + MLA_WGMMA_HEADS_PER_CTA - 1) / MLA_WGMMA_HEADS_PER_CTA;
    LaunchConfig {
        grid_dim: (num_splits.max(1) as u32, tiles.max(0) as u32, batch.max(0) as u32),
        block_dim: (MLA_WGMMA_THREADS, 1, 1),
        shared_mem_bytes: MLA_WGMMA_SMEM_BYTES as u32,
    }
}

/// Which kernel serves `heads` heads at `num_splits` splits: at most 16 heads go to the
/// keys-on-M kernel (v4), in clusters of two when there are exactly two splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlaWgmmaKernel {
    /// 64-head tiles on the wgmma M rows (v3b).
    Heads,
    /// Keys on M, heads on N; one CTA per split.
    Keys,
    /// Keys on M, the two splits of a sequence in one cluster, merged in the kernel.
    KeysPair,
}

impl MlaWgmmaKernel {
    pub fn select(heads: i32, num_splits: i32) -> Self {
        match (heads <= MLA_WGMMA_KEYS_HEADS, num_splits) {
            (false, _) => Self::Heads,
            (true, 2) => Self::KeysPair,
            (true, _) => Self::Keys,
        }
    }

    /// Whether the kernel writes o itself at any split count (no `mla_combine` after it).
    pub fn merges_splits(self) -> bool {
        self == Self::KeysPair
    }

    fn name(self) -> (&'static str, &'static str) {
        match self {
            Self::Heads if s_split_by_keys(std::env::var(MLA_S_SPLIT_ENV).ok().as_deref()) => MLA_DECODE_WGMMA_V4,
            Self::Heads => MLA_DECODE_WGMMA,
            Self::Keys => MLA_DECODE_WGMMA_KEYS,
            Self::KeysPair => MLA_DECODE_WGMMA_KEYS_PAIR,
        }
    }

    /// Heads per CTA, the rows of each Q box.
    fn heads_per_cta(self) -> i32 {
        if self == Self::Heads {
            MLA_WGMMA_HEADS_PER_CTA
        } else {
            MLA_WGMMA_KEYS_HEADS
        }
    }

    /// Grid (splits, head tiles, batch); the pair kernel's clusters are its (2, 1, 1).
    pub fn launch(self, batch: i32, heads: i32, num_splits: i32) -> LaunchConfig {
        match self {
            Self::Heads => mla_wgmma_launch(batch, heads, num_splits),
            Self::Keys | Self::KeysPair => LaunchConfig {
                grid_dim: (num_splits.max(1) as u32, 1, batch.max(0) as u32),
                block_dim: (MLA_WGMMA_KEYS_THREADS, 1, 1),
                shared_mem_bytes: MLA_WGMMA_KEYS_SMEM_BYTES as u32,
            },
        }
    }
}

/// The L2 prefetch distance for a `FWDBENCH_MLA_L2_PREFETCH` value (the default if unset or
/// not a count).
fn l2_prefetch_tiles(value: Option<&str>) -> i32 {
    value
        .and_then(|v| v.trim().parse::<i32>().ok())
        .filter(|n| (0..=16).contains(n))
        .unwrap_or(MLA_KEYS_L2_PREFETCH_TILES)
}

/// Whether the `FWDBENCH_MLA_S_SPLIT` value asks for v4's S.
fn s_split_by_keys(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.trim() == "keys")
}

/// The prepared kernel call for the problem mla.cu's kernels take (tensor maps encoded now,
/// at bind time); `p.kv_lora_rank` and `p.rope_dim` must be the compiled 512 and 64. The
/// flag says whether the kernel merged the splits itself (otherwise `mla_combine` follows).
pub fn mla_wgmma_call(p: &MlaDecodeParams) -> anyhow::Result<(Call, bool)> {
    ensure!(
        mla_wgmma_supports(p.kv_lora_rank as usize, p.rope_dim as usize),
        "mla_decode_wgmma is compiled for a {MLA_WGMMA_KV_LORA_RANK} + {MLA_WGMMA_ROPE_DIM} latent, not {} + {}",
        p.kv_lora_rank,
        p.rope_dim
    );
    let which = MlaWgmmaKernel::select(p.heads, p.num_splits);
    let (dl, dr) = (MLA_WGMMA_KV_LORA_RANK as u64, MLA_WGMMA_ROPE_DIM as u64);
    let (batch, heads, row, max_seq) = (p.batch as u64, p.heads as u64, dl + dr, p.max_seq as u64);
    // A (d, heads, batch) operand as a 4-D map (trailing extent 1), boxes of 64 x the CTA's heads.
    let heads_map = |base, d, head_stride: i32, batch_stride: i32| {
        let strides = [head_stride as u64, batch_stride as u64, batch * batch_stride as u64];
        let layout = TensorLayout { base, dims: vec![d, heads, batch, 1], strides: strides.to_vec() };
        encode_bf16(&layout, &[BOX_INNER, which.heads_per_cta() as u32, 1, 1])
    };
    let cache = TensorLayout {
        base: p.cache,
        dims: vec![row, p.n_kv as u64, batch, 1],
        strides: vec![row, max_seq * row, batch * max_seq * row],
    };
    let params = MlaDecodeWgmmaParams {
        q_lat: heads_map(p.q_lat, dl, p.q_lat_head_stride, p.q_lat_batch_stride)?,
        q_pe: heads_map(p.q_pe, dr, p.q_pe_head_stride, p.q_pe_batch_stride)?,
        cache: encode_bf16(&cache, &[BOX_INNER, MLA_WGMMA_BLOCK_N as u32, 1, 1])?,
        o: p.o,
        o_batch_stride: p.o_batch_stride,
        o_head_stride: p.o_head_stride,
        scratch: p.scratch,
        n_kv: p.n_kv,
        batch: p.batch,
        heads: p.heads,
        num_splits: p.num_splits,
        scale: p.scale,
        l2_prefetch_tiles: l2_prefetch_tiles(std::env::var(MLA_L2_PREFETCH_ENV).ok().as_deref()),
    };
    let call = kernel(which.name(), which.launch(p.batch, p.heads, p.num_splits), params);
    Ok((call, which.merges_splits()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smem_matches_the_kernel_layout() {
        // 3 x 73,728 + 8,192 + 1,024 + 168 + 1,024, as mla_decode_wgmma.cu lays it out.
        assert_eq!(MLA_WGMMA_SMEM_BYTES, 231_592);
    }

    #[test]
    fn splits_fill_the_sms() {
        // b64 h128: 128 CTAs already fill one wave of 132.
        assert_eq!(mla_wgmma_num_splits(64, 128, 4096, 132), 1);
        // b64 h16 (TP8): 64 CTAs, two splits make one full wave.
        assert_eq!(mla_wgmma_num_splits(64, 16, 4096, 132), 2);
        // b1: the context is cut into many splits, never below one tile each.
        let s = mla_wgmma_num_splits(1, 128, 4096, 132);
        assert!((32..=64).contains(&s), "{s}");
        assert_eq!(mla_wgmma_num_splits(1, 16, 37, 132), 1);
        // Odd sizes: every split still gets a tile.
        for (b, h, n) in [(3, 128, 1000), (17, 16, 4097), (1, 16, 4097)] {
            let s = mla_wgmma_num_splits(b, h, n, 132);
            assert!(s >= 1 && s <= (n + 63) / 64, "{b} {h} {n}: {s}");
        }
    }

    #[test]
    fn launch_shape() {
        let cfg = mla_wgmma_launch(3, 16, 5);
        assert_eq!(cfg.grid_dim, (5, 1, 3));
        assert_eq!(mla_wgmma_launch(2, 128, 1).grid_dim, (1, 2, 2));
        assert!(mla_wgmma_supports(512, 64));
        assert!(!mla_wgmma_supports(32, 16));
    }

    #[test]
    fn keys_kernel_serves_the_tp8_shard() {
        // Q 18,432 + 25 x 8,192 + P 2,048 + 768 of statistics + 408 + 1,024.
        assert_eq!(MLA_WGMMA_KEYS_SMEM_BYTES, 227_480);
        assert_eq!(MlaWgmmaKernel::select(128, 1), MlaWgmmaKernel::Heads);
        assert_eq!(MlaWgmmaKernel::select(32, 2), MlaWgmmaKernel::Heads);
        assert_eq!(MlaWgmmaKernel::select(16, 2), MlaWgmmaKernel::KeysPair);
        assert_eq!(MlaWgmmaKernel::select(16, 1), MlaWgmmaKernel::Keys);
        assert_eq!(MlaWgmmaKernel::select(16, 7), MlaWgmmaKernel::Keys);
        assert!(MlaWgmmaKernel::KeysPair.merges_splits() && !MlaWgmmaKernel::Keys.merges_splits());
        // b64 h16 ctx4096: two splits, 64 clusters of 2 on 132 SMs.
        let splits = mla_wgmma_num_splits(64, 16, 4096, 132);
        let cfg = MlaWgmmaKernel::select(16, splits).launch(64, 16, splits);
        assert_eq!(cfg.grid_dim, (2, 1, 64));
        assert_eq!(cfg.block_dim.0, 256);
        // The check at b64 ctx200 exercises the pair kernel with a partial last tile.
        assert_eq!(mla_wgmma_num_splits(64, 16, 200, 132), 2);
    }

    #[test]
    fn l2_prefetch_switch() {
        assert_eq!(l2_prefetch_tiles(None), 3);
        assert_eq!(l2_prefetch_tiles(Some("0")), 0);
        assert_eq!(l2_prefetch_tiles(Some(" 5 ")), 5);
        assert_eq!(l2_prefetch_tiles(Some("-1")), 3);
        assert_eq!(l2_prefetch_tiles(Some("x")), 3);
    }

    #[test]
    fn s_split_switch() {
        assert!(s_split_by_keys(Some("keys")) && s_split_by_keys(Some(" keys\n")));
        assert!(!s_split_by_keys(None) && !s_split_by_keys(Some("depth")) && !s_split_by_keys(Some("")));
    }

    #[test]
    fn params_match_the_c_layout() {
        assert_eq!(std::mem::align_of::<MlaDecodeWgmmaParams>(), 128);
        assert_eq!(std::mem::offset_of!(MlaDecodeWgmmaParams, o), 384);
    }
}
