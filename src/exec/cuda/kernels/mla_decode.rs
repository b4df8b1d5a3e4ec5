//! Launch parameters for `kernels/mla_decode_wgmma.cu`: absorbed-form MLA decode with TMA and
//! wgmma, the `fa3` backend's MLA decode for DeepSeek's 512 + 64 latent (other widths, and
//! the `fa2` backend, run mla.cu's mma.sync kernels). Its split partials use mla.cu's scratch
//! layout, so mla.cu's `mla_combine` merges them, except at two splits, where the
//! `_pair` entry runs the two splits of a sequence as a 2-CTA cluster that merges in the kernel.
//! At most 16 heads (the TP8 shard) go to `kernels/mla_decode_keys.cu` instead: keys on the
//! wgmma M rows, a 16-row Q, a ring of 64-column chunks and two consumers on alternate tiles,
//! with the same parameters (+4% over the 64-row kernel there, docs/perf.md session 13).

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
/// Two splits as one 2-CTA cluster (`__cluster_dims__(2, 1, 1)`): the pair merges its halves
/// through distributed shared memory and writes `o`, so no combine kernel follows.
pub const MLA_DECODE_WGMMA_PAIR: (&str, &str) = ("mla_decode_wgmma", "mla_decode_wgmma_pair");
/// The two above with Q's last 3 column chunks held as wgmma A fragments in registers.
pub const MLA_DECODE_WGMMA_QREG: (&str, &str) = ("mla_decode_wgmma", "mla_decode_wgmma_qreg");
pub const MLA_DECODE_WGMMA_QREG_PAIR: (&str, &str) = ("mla_decode_wgmma", "mla_decode_wgmma_qreg_pair");

/// `kernels/mla_decode_keys.cu` (keys on the wgmma M rows) serves at most this many heads,
/// its wgmma N (the TP8 shard's 16; fewer are zero columns).
pub const MLA_KEYS_HEADS: i32 = 16;
/// Its ring: chunk slots of 64 keys x 64 columns (a tile is 9 chunks).
pub const MLA_KEYS_SLOTS: i32 = 25;
/// Its consumer warpgroups, on alternate tiles.
pub const MLA_KEYS_CONSUMERS: i32 = 2;
/// Its dynamic shared memory: Q (16 heads x 576), the ring, per consumer P^T (16 x 64) bf16,
/// the per-warp maxima (2 tiles x 4 warps x 16 heads) and sums (4 x 16) in fp32, a full and an
/// empty mbarrier per slot and Q's, 1 KiB alignment slack.
pub const MLA_KEYS_SMEM_BYTES: i32 = (16 * 576 + MLA_KEYS_SLOTS * 64 * 64 + MLA_KEYS_CONSUMERS * 16 * 64) * 2
    + MLA_KEYS_CONSUMERS * (2 * 4 * 16 + 4 * 16) * 4
    + (1 + 2 * MLA_KEYS_SLOTS) * 8
    + 1024;
const _: () = assert!(MLA_KEYS_SMEM_BYTES <= 227 * 1024);
/// The TMA producer warpgroup and the consumers.
pub const MLA_KEYS_THREADS: u32 = 384;
const _: () = assert!(MLA_KEYS_THREADS == 128 * (1 + MLA_KEYS_CONSUMERS as u32));
pub const MLA_DECODE_KEYS: (&str, &str) = ("mla_decode_keys", "mla_decode_keys");
/// Two splits as one 2-CTA cluster, merged in the kernel (no combine).
pub const MLA_DECODE_KEYS_PAIR: (&str, &str) = ("mla_decode_keys", "mla_decode_keys_pair");

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
    /// Tiles the producer prefetches into L2 ahead of the one waiting for a ring stage
    /// (0: none); [`MlaWgmmaKnobs`].
    pub l2_prefetch: i32,
    /// Order of one tile's work, an [`MlaSchedule`] as i32.
    pub schedule: i32,
}
unsafe impl DeviceRepr for MlaDecodeWgmmaParams {}

/// Where S(t + 1) goes in the tile loop, and when stage t is released to the producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum MlaSchedule {
    /// S(t + 1) after P V(t) (v3): stage t is released once P V(t) retires, which the consumer
    /// reaches only after S(t + 1) found all its chunks landed.
    After = 0,
    /// S(t + 1) between the two halves of P V(t), softmax(t + 1) under the second (v3b,
    /// compute bound, the default above 64 heads).
    UnderPv = 1,
    /// P V(t) retires and stage t is released before S(t + 1) waits for its chunks (v7, the
    /// default at or below 64 heads, the TP8 shard): the load of tile t + 2 no longer waits
    /// for tile t + 1 to land. Measured +1.9% at h16 in session 11.
    ReleaseFirst = 2,
}

/// Same-call A/B switches (environment, read at bind time):
/// `FWDBENCH_MLA_PAIR=0` keeps two splits on the partials + `mla_combine` path,
/// `FWDBENCH_MLA_L2_PREFETCH=N` sets [`MlaDecodeWgmmaParams::l2_prefetch`] (default: 1 above
/// 64 heads, 0 at or below: measured in session 9, call B, +5.5% at h128 and -12% at h16),
/// `FWDBENCH_MLA_QREG=0|1` forces Q's register chunks off or on (default: on above 64 heads),
/// `FWDBENCH_MLA_SCHED=pv|after|release` forces the [`MlaSchedule`] (default: `pv` above 64
/// heads, `release` at or below), `FWDBENCH_MLA_KEYS=0` keeps at most 16 heads on the 64-row
/// kernel instead of `mla_decode_keys` (the L2 prefetch, Q register and schedule knobs only
/// apply to the 64-row kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlaWgmmaKnobs {
    pub pair: bool,
    pub keys: bool,
    pub l2_prefetch: Option<i32>,
    pub qreg: Option<bool>,
    pub schedule: Option<MlaSchedule>,
}

impl MlaWgmmaKnobs {
    pub fn from_env() -> Self {
        let var = |k| std::env::var(k).ok();
        MlaWgmmaKnobs {
            pair: var("FWDBENCH_MLA_PAIR").as_deref() != Some("0"),
            keys: var("FWDBENCH_MLA_KEYS").as_deref() != Some("0"),
            l2_prefetch: var("FWDBENCH_MLA_L2_PREFETCH").and_then(|v| v.parse::<i32>().ok()).map(|n| n.clamp(0, 8)),
            qreg: match var("FWDBENCH_MLA_QREG").as_deref() {
                Some("0") => Some(false),
                Some("1") => Some(true),
                _ => None,
            },
            schedule: match var("FWDBENCH_MLA_SCHED").as_deref() {
                Some("pv") => Some(MlaSchedule::UnderPv),
                Some("after") => Some(MlaSchedule::After),
                Some("release") => Some(MlaSchedule::ReleaseFirst),
                _ => None,
            },
        }
    }

    /// (l2_prefetch, schedule) for `heads`: the knob, else the measured default.
    pub fn schedule(&self, heads: i32) -> (i32, MlaSchedule) {
        let compute_bound = heads > MLA_WGMMA_HEADS_PER_CTA;
        let default = if compute_bound { MlaSchedule::UnderPv } else { MlaSchedule::ReleaseFirst };
        (self.l2_prefetch.unwrap_or(if compute_bound { 1 } else { 0 }), self.schedule.unwrap_or(default))
    }
}

/// Which of the six MLA decode entries a call runs: the keys kernel (at most 16 heads) or the
/// 64-row kernel, each alone or as the 2-CTA pair (two splits merged in the kernel), the
/// latter also with Q in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlaWgmmaEntry {
    pub keys: bool,
    pub pair: bool,
    pub qreg: bool,
}

impl MlaWgmmaEntry {
    /// The entry for `heads` and `num_splits` under `knobs`: the keys kernel where it serves
    /// ([`mla_keys_serves`]); the pair at two splits; Q in registers by default above 64 heads,
    /// where the kernel is compute bound and S's k-steps are bound by the shared-memory port
    /// (the memory-bound TP8 shard on the 64-row kernel keeps v3b's all-shared-memory S).
    pub fn select(heads: i32, num_splits: i32, knobs: MlaWgmmaKnobs) -> Self {
        let keys = mla_keys_serves(heads, knobs);
        let qreg = !keys && knobs.qreg.unwrap_or(heads > MLA_WGMMA_HEADS_PER_CTA);
        MlaWgmmaEntry { keys, pair: mla_wgmma_pairs(num_splits, knobs), qreg }
    }

    pub fn name(&self) -> (&'static str, &'static str) {
        match (self.keys, self.pair, self.qreg) {
            (true, false, _) => MLA_DECODE_KEYS,
            (true, true, _) => MLA_DECODE_KEYS_PAIR,
            (false, false, false) => MLA_DECODE_WGMMA,
            (false, true, false) => MLA_DECODE_WGMMA_PAIR,
            (false, false, true) => MLA_DECODE_WGMMA_QREG,
            (false, true, true) => MLA_DECODE_WGMMA_QREG_PAIR,
        }
    }

    pub fn launch(&self, batch: i32, heads: i32, num_splits: i32) -> LaunchConfig {
        if self.keys {
            mla_keys_launch(batch, num_splits)
        } else {
            mla_wgmma_launch(batch, heads, num_splits)
        }
    }
}

/// Whether a launch with `num_splits` takes the 2-CTA pair entry (and needs no combine).
pub fn mla_wgmma_pairs(num_splits: i32, knobs: MlaWgmmaKnobs) -> bool {
    num_splits == 2 && knobs.pair
}

/// Whether `mla_decode_keys` serves `heads` (the TP8 shard and narrower).
pub fn mla_keys_serves(heads: i32, knobs: MlaWgmmaKnobs) -> bool {
    knobs.keys && heads <= MLA_KEYS_HEADS
}

/// The keys kernel's launch: one CTA per (split, sequence), in 2-CTA clusters for the pair
/// entry (its `__cluster_dims__`).
pub fn mla_keys_launch(batch: i32, num_splits: i32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (num_splits.max(1) as u32, 1, batch.max(0) as u32),
        block_dim: (MLA_KEYS_THREADS, 1, 1),
        shared_mem_bytes: MLA_KEYS_SMEM_BYTES as u32,
    }
}

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

/// The prepared kernel call for the problem mla.cu's kernels take (tensor maps encoded now,
/// at bind time); `p.kv_lora_rank` and `p.rope_dim` must be the compiled 512 and 64. The
/// flag says whether the call already wrote `o` from all splits (the pair entry), so that no
/// `mla_combine` must follow.
pub fn mla_wgmma_call(p: &MlaDecodeParams) -> anyhow::Result<(Call, bool)> {
    let knobs = MlaWgmmaKnobs::from_env();
    let (l2_prefetch, schedule) = knobs.schedule(p.heads);
    ensure!(
        mla_wgmma_supports(p.kv_lora_rank as usize, p.rope_dim as usize),
        "mla_decode_wgmma is compiled for a {MLA_WGMMA_KV_LORA_RANK} + {MLA_WGMMA_ROPE_DIM} latent, not {} + {}",
        p.kv_lora_rank,
        p.rope_dim
    );
    let entry = MlaWgmmaEntry::select(p.heads, p.num_splits, knobs);
    let (dl, dr) = (MLA_WGMMA_KV_LORA_RANK as u64, MLA_WGMMA_ROPE_DIM as u64);
    let (batch, heads, row, max_seq) = (p.batch as u64, p.heads as u64, dl + dr, p.max_seq as u64);
    // A (d, heads, batch) operand as a 4-D map (trailing extent 1), boxes of 64 x the CTA's
    // heads (heads past `heads` read as zero).
    let box_heads = if entry.keys { MLA_KEYS_HEADS } else { MLA_WGMMA_HEADS_PER_CTA } as u32;
    let heads_map = |base, d, head_stride: i32, batch_stride: i32| {
        let strides = [head_stride as u64, batch_stride as u64, batch * batch_stride as u64];
        let layout = TensorLayout { base, dims: vec![d, heads, batch, 1], strides: strides.to_vec() };
        encode_bf16(&layout, &[BOX_INNER, box_heads, 1, 1])
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
        l2_prefetch,
        schedule: schedule as i32,
    };
    let call = kernel(entry.name(), entry.launch(p.batch, p.heads, p.num_splits), params);
    Ok((call, entry.pair))
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
        let on = MlaWgmmaKnobs { pair: true, keys: true, l2_prefetch: None, qreg: None, schedule: None };
        assert_eq!(on.schedule(128), (1, MlaSchedule::UnderPv));
        assert_eq!(on.schedule(16), (0, MlaSchedule::ReleaseFirst));
        let forced = MlaWgmmaKnobs { l2_prefetch: Some(2), schedule: Some(MlaSchedule::After), ..on };
        assert_eq!(forced.schedule(16), (2, MlaSchedule::After));
        assert!(mla_wgmma_pairs(2, on));
        assert!(!mla_wgmma_pairs(1, on) && !mla_wgmma_pairs(3, on));
        assert!(!mla_wgmma_pairs(2, MlaWgmmaKnobs { pair: false, ..on }));
        let entry = |heads, splits, knobs| MlaWgmmaEntry::select(heads, splits, knobs).name();
        let rows = MlaWgmmaKnobs { keys: false, ..on };
        assert_eq!(entry(128, 1, on), MLA_DECODE_WGMMA_QREG);
        assert_eq!(entry(128, 2, on), MLA_DECODE_WGMMA_QREG_PAIR);
        assert_eq!(entry(16, 2, on), MLA_DECODE_KEYS_PAIR);
        assert_eq!(entry(16, 1, on), MLA_DECODE_KEYS);
        assert_eq!(entry(16, 2, rows), MLA_DECODE_WGMMA_PAIR);
        assert_eq!(entry(64, 5, on), MLA_DECODE_WGMMA);
        assert_eq!(entry(16, 1, MlaWgmmaKnobs { qreg: Some(true), ..rows }), MLA_DECODE_WGMMA_QREG);
        // The keys kernel has no Q-register form: the knob does not move it.
        assert_eq!(entry(16, 1, MlaWgmmaKnobs { qreg: Some(true), ..on }), MLA_DECODE_KEYS);
        assert_eq!(entry(128, 1, MlaWgmmaKnobs { qreg: Some(false), ..on }), MLA_DECODE_WGMMA);
        // Each kernel's own grid: the keys kernel one CTA per (split, sequence).
        let keys = MlaWgmmaEntry::select(16, 2, on);
        assert_eq!(keys.launch(64, 16, 2).grid_dim, (2, 1, 64));
        assert_eq!(MlaWgmmaEntry::select(128, 1, on).launch(2, 128, 1).grid_dim, (1, 2, 2));
    }

    #[test]
    fn keys_kernel_serves_the_tp8_shard() {
        // Q 18,432 + 25 x 8,192 + 2 x (P^T 2,048 + 768 of statistics) + 408 of barriers + 1,024.
        assert_eq!(MLA_KEYS_SMEM_BYTES, 230_296);
        let on = MlaWgmmaKnobs { pair: true, keys: true, l2_prefetch: None, qreg: None, schedule: None };
        assert!(mla_keys_serves(16, on) && mla_keys_serves(5, on));
        assert!(!mla_keys_serves(32, on) && !mla_keys_serves(128, on));
        assert!(!mla_keys_serves(16, MlaWgmmaKnobs { keys: false, ..on }));
        // b64 h16 ctx4096: two splits, 64 clusters of 2 on 132 SMs.
        let splits = mla_wgmma_num_splits(64, 16, 4096, 132);
        let cfg = mla_keys_launch(64, splits);
        assert_eq!((cfg.grid_dim, cfg.block_dim.0), ((2, 1, 64), 384));
        // The check at b64 ctx200 runs the pair entry with a partial last tile.
        assert_eq!(mla_wgmma_num_splits(64, 16, 200, 132), 2);
    }

    #[test]
    fn params_match_the_c_layout() {
        assert_eq!(std::mem::align_of::<MlaDecodeWgmmaParams>(), 128);
        assert_eq!(std::mem::offset_of!(MlaDecodeWgmmaParams, o), 384);
    }
}
