//! Launch parameters for `kernels/attention_fa3.cu`: causal prefill attention with TMA and
//! wgmma (the `fa3` attention backend). One entry per head-dim bucket ([`select_variant`]);
//! the tensor maps carry every stride, so q may sit inside the fused qkv buffer and K/V in
//! the `[batch, max_seq, heads, d]` cache.

use cudarc::driver::{DeviceRepr, LaunchConfig};

use anyhow::{ensure, Context};

use super::super::tma::{encode_bf16, TensorLayout, BOX_INNER};
use super::prepare::{kernel, Call};
use super::ptr::{Bf16Ptr, TensorMap};

/// Query rows per CTA: two consumer warpgroups of 64.
pub const FA3_BLOCK_M: i32 = 128;

/// Compile-time shape of one entry (instantiated from these constants through the header).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fa3Tile {
    pub d_qk: i32,
    pub d_v: i32,
    /// Keys per K/V tile.
    pub block_n: i32,
    /// K/V ring depth.
    pub stages: i32,
    /// Q buffers of the persistent entry: 2 where they fit beside the ring (the next tile's
    /// Q loads while the current one is still read), else 1.
    pub q_buffers: i32,
}
pub const FA3_TILE_D64: Fa3Tile = Fa3Tile { d_qk: 64, d_v: 64, block_n: 128, stages: 4, q_buffers: 2 };
pub const FA3_TILE_D128: Fa3Tile = Fa3Tile { d_qk: 128, d_v: 128, block_n: 128, stages: 2, q_buffers: 2 };
/// d128 over long key ranges: a third stage (224 KiB, still one CTA per SM) is 2% faster at
/// 8192 keys and 3.8% slower at 2048 (same-call A/B, docs/perf.md "FA3 v3.1").
pub const FA3_TILE_D128_LONG: Fa3Tile = Fa3Tile { d_qk: 128, d_v: 128, block_n: 128, stages: 3, q_buffers: 1 };
/// Keys from which the d128 bucket takes [`FA3_TILE_D128_LONG`].
pub const FA3_LONG_KEYS: usize = 4096;
pub const FA3_TILE_D192_128: Fa3Tile = Fa3Tile { d_qk: 192, d_v: 128, block_n: 128, stages: 2, q_buffers: 1 };
pub const FA3_TILE_D256: Fa3Tile = Fa3Tile { d_qk: 256, d_v: 256, block_n: 80, stages: 2, q_buffers: 1 };

/// Tensor maps first (128-byte aligned, as in C).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Fa3PrefillParams {
    /// (d_qk, q_heads, n_q, batch), boxes of 64 x 1 x 128 x 1.
    pub q: TensorMap,
    /// (d_qk, k_heads, n_kv, batch), boxes of 64 x 1 x block_n x 1.
    pub k: TensorMap,
    /// (d_v, v_heads, n_kv, batch), boxes of 64 x 1 x block_n x 1.
    pub v: TensorMap,
    /// K columns from `k_rope_col` on (MLA's rope key, one head shared by all): (d_rope, 1,
    /// n_kv, batch), boxes as for k. A copy of `k` when unused.
    pub k_rope: TensorMap,
    pub o: Bf16Ptr,
    pub o_batch_stride: i64,
    pub o_token_stride: i32,
    pub o_head_stride: i32,
    pub n_q: i32,
    pub n_kv: i32,
    pub q_heads: i32,
    pub k_heads: i32,
    pub v_heads: i32,
    pub d_v: i32,
    pub batch: i32,
    /// (sequence, head) pairs per L2 section (see [`heads_per_section`]).
    pub heads_per_section: i32,
    pub scale: f32,
    /// `<= 0` disables the tanh soft cap.
    pub softcap: f32,
    /// First K column read through `k_rope` (a multiple of 64), `i32::MAX` for none.
    pub k_rope_col: i32,
}
unsafe impl DeviceRepr for Fa3PrefillParams {}

/// L2 the CTAs in flight may fill with K and V (of about 50 MB on an H200, leaving room for
/// Q and O traffic).
pub const FA3_L2_SECTION_BYTES: usize = 24 << 20;

/// How many (sequence, q head) pairs share an L2 section: as many as keep their K and V
/// within [`FA3_L2_SECTION_BYTES`] (q heads of one GQA group share theirs), at least one.
pub fn heads_per_section(n_kv: usize, d_qk: usize, d_v: usize, q_per_kv_head: usize) -> usize {
    let kv_bytes_per_q_head = (n_kv * (d_qk + d_v) * 2).div_ceil(q_per_kv_head.max(1)).max(1);
    (FA3_L2_SECTION_BYTES / kv_bytes_per_q_head).max(1)
}

/// One compiled bucket; any `d_qk <= tile.d_qk`, `d_v <= tile.d_v` (multiples of 8) runs in
/// it, because the boxes past `d` read as zero. A bucket has one CTA per tile (`kernel`) and
/// may have one CTA per SM claiming tiles (`persistent_kernel`; d256 has none: its
/// persistent loop would spill a register at 240).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fa3Variant {
    pub kernel: (&'static str, &'static str),
    pub persistent_kernel: Option<(&'static str, &'static str)>,
    /// Whether the persistent entry runs unless overridden. Measured (docs/perf.md "FA3 v6"):
    /// persistent is 7% faster than one CTA per tile on h64 1x2048 (d128), 0.7% on MLA
    /// 192/128 at 4096 keys, and 2.8% / 3.7% slower with the 3-stage long-key d128 entry
    /// (one Q buffer) on the 8192-key MHA h32 and Sigma GQA rows.
    pub persistent_by_default: bool,
    pub tile: Fa3Tile,
}

impl Fa3Variant {
    /// Q buffers, the K/V ring, the barriers (full and empty per Q buffer and per stage for K
    /// and for V), the tile index per Q buffer, and 1 KiB of alignment slack.
    pub const fn smem_bytes(&self, persistent: bool) -> u32 {
        let t = self.tile;
        let q_buffers = if persistent { t.q_buffers } else { 1 };
        let tiles = q_buffers * FA3_BLOCK_M * t.d_qk * 2 + t.stages * t.block_n * (t.d_qk + t.d_v) * 2;
        (tiles + 8 * (2 * q_buffers + 4 * t.stages) + 4 * q_buffers + 1024) as u32
    }
}

const fn variant(name: &'static str, persistent_name: Option<&'static str>, tile: Fa3Tile) -> Fa3Variant {
    let persistent_kernel = match persistent_name {
        Some(n) => Some(("attention_fa3", n)),
        None => None,
    };
    let persistent_by_default = persistent_kernel.is_some();
    Fa3Variant { kernel: ("attention_fa3", name), persistent_kernel, persistent_by_default, tile }
}

pub const FA3_VARIANTS: [Fa3Variant; 4] = [
    variant("fa3_prefill_d64", Some("fa3_prefill_d64_persistent"), FA3_TILE_D64),
    variant("fa3_prefill_d128", Some("fa3_prefill_d128_persistent"), FA3_TILE_D128),
    variant("fa3_prefill_d192_128", Some("fa3_prefill_d192_128_persistent"), FA3_TILE_D192_128),
    variant("fa3_prefill_d256", None, FA3_TILE_D256),
];
const FA3_D128_LONG: Fa3Variant = Fa3Variant {
    persistent_by_default: false,
    ..variant("fa3_prefill_d128_long", Some("fa3_prefill_d128_long_persistent"), FA3_TILE_D128_LONG)
};

/// The smallest bucket holding the dims, or `None` (a dim above 256 or not a positive
/// multiple of 8).
pub fn select_variant(d_qk: i32, d_v: i32) -> Option<Fa3Variant> {
    let valid = |d: i32| d > 0 && d % 8 == 0;
    if !valid(d_qk) || !valid(d_v) {
        return None;
    }
    FA3_VARIANTS.iter().copied().find(|v| d_qk <= v.tile.d_qk && d_v <= v.tile.d_v)
}

/// [`select_variant`], with the deeper-ring d128 entry from [`FA3_LONG_KEYS`] keys on.
pub fn select_variant_for(d_qk: i32, d_v: i32, n_kv: usize) -> Option<Fa3Variant> {
    let v = select_variant(d_qk, d_v)?;
    Some(if v.tile == FA3_TILE_D128 && n_kv >= FA3_LONG_KEYS { FA3_D128_LONG } else { v })
}

/// A `(d, heads, tokens, batch)` bf16 operand: element strides between heads, tokens and
/// sequences.
#[derive(Debug, Clone, Copy)]
pub struct HeadsOperand {
    pub base: u64,
    pub d: usize,
    pub heads: usize,
    pub tokens: usize,
    pub batch: usize,
    pub head_stride: usize,
    pub token_stride: usize,
    pub batch_stride: usize,
}

impl HeadsOperand {
    /// The tensor map with boxes of 64 columns x 1 head x `box_tokens` tokens x 1 sequence.
    pub fn tensor_map(&self, box_tokens: i32) -> anyhow::Result<TensorMap> {
        let layout = TensorLayout {
            base: self.base,
            dims: vec![self.d as u64, self.heads as u64, self.tokens as u64, self.batch as u64],
            strides: vec![self.head_stride as u64, self.token_stride as u64, self.batch_stride as u64],
        };
        encode_bf16(&layout, &[BOX_INNER, 1, box_tokens as u32, 1])
    }
}

/// Tiles of one call: (q head, sequence, query block) triples.
pub fn fa3_tiles(batch: i32, n_q: i32, q_heads: i32) -> u32 {
    (q_heads.max(0) as u32) * (batch.max(0) as u32) * ((n_q + FA3_BLOCK_M - 1) / FA3_BLOCK_M).max(0) as u32
}

/// One CTA per tile in a 1-D grid the kernel maps to L2 sections, or (persistent) one per SM
/// and no more than there are tiles.
pub fn fa3_prefill_launch(variant: &Fa3Variant, tiles: u32, persistent: bool, sm_count: i32) -> LaunchConfig {
    let ctas = if persistent { tiles.min(sm_count.max(1) as u32) } else { tiles };
    LaunchConfig { grid_dim: (ctas, 1, 1), block_dim: (384, 1, 1), shared_mem_bytes: variant.smem_bytes(persistent) }
}

/// Device A/B switches, read from the environment at bind time (docs/perf.md "FA3 v6"):
/// `FWDBENCH_FA3_GRID=tiles|persistent` forces one grid wherever there is a choice,
/// `FWDBENCH_FA3_LONG=0` keeps long key ranges on the 2-stage d128 entry,
/// `FWDBENCH_FA3_D256=nopp` runs d256 without pingpong.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fa3Overrides {
    /// `Some(true)`: persistent wherever an entry exists; `Some(false)`: one CTA per tile.
    pub persistent: Option<bool>,
    pub no_long: bool,
    pub d256_no_pingpong: bool,
}

impl Fa3Overrides {
    pub fn from_env() -> Self {
        let var = |key: &str| std::env::var(key).ok();
        Fa3Overrides {
            persistent: match var("FWDBENCH_FA3_GRID").as_deref() {
                Some("tiles") => Some(false),
                Some("persistent") => Some(true),
                _ => None,
            },
            no_long: var("FWDBENCH_FA3_LONG").as_deref() == Some("0"),
            d256_no_pingpong: var("FWDBENCH_FA3_D256").as_deref() == Some("nopp"),
        }
    }
}

/// The entry a bucket runs and whether it is the persistent one: the persistent entry where
/// the bucket prefers it ([`Fa3Variant::persistent_by_default`]), unless overridden.
pub fn fa3_entry(variant: &Fa3Variant, ov: Fa3Overrides) -> ((&'static str, &'static str), bool) {
    if ov.d256_no_pingpong && variant.tile == FA3_TILE_D256 {
        return (("attention_fa3", "fa3_prefill_d256_nopp"), false);
    }
    let persistent = ov.persistent.unwrap_or(variant.persistent_by_default);
    match variant.persistent_kernel {
        Some(k) if persistent => (k, true),
        _ => (variant.kernel, false),
    }
}

/// One causal prefill attention call: Q, K, V operands (K and V may have different head
/// counts and dims), the output `[batch, n_q, q_heads, d_v]` with its strides.
#[derive(Debug, Clone, Copy)]
pub struct Fa3Problem {
    pub q: HeadsOperand,
    pub k: HeadsOperand,
    pub v: HeadsOperand,
    /// The K columns past `k.d` when they live elsewhere, with one head for all q heads
    /// (MLA: K = [k_nope per head ; k_pe shared], read in place instead of built); `k.d`
    /// must then be a multiple of 64 and `k.d + k_rope.d == q.d`.
    pub k_rope: Option<HeadsOperand>,
    pub o: u64,
    pub o_batch_stride: usize,
    pub o_token_stride: usize,
    pub o_head_stride: usize,
    pub scale: f32,
    pub softcap: f32,
    /// SMs of the device (the persistent grid's size).
    pub sm_count: i32,
}

/// The prepared kernel call for `pr` (tensor maps encoded now, at bind time).
pub fn fa3_prefill_call(pr: &Fa3Problem) -> anyhow::Result<Call> {
    let (d_qk, d_v) = (pr.q.d as i32, pr.v.d as i32);
    let ov = Fa3Overrides::from_env();
    let n_kv_for_tile = if ov.no_long { 0 } else { pr.k.tokens };
    let variant = select_variant_for(d_qk, d_v, n_kv_for_tile)
        .with_context(|| format!("no fa3 prefill attention kernel for head dims {d_qk}/{d_v}"))?;
    let block_n = variant.tile.block_n;
    let k = pr.k.tensor_map(block_n)?;
    let (k_rope, k_rope_col) = match &pr.k_rope {
        Some(r) => {
            ensure!(
                pr.k.d.is_multiple_of(64) && r.heads == 1 && pr.k.d + r.d == pr.q.d,
                "fa3 split K: {} + {} columns (one rope head: {}) for a {}-wide q",
                pr.k.d,
                r.d,
                r.heads,
                pr.q.d
            );
            (r.tensor_map(block_n)?, pr.k.d as i32)
        }
        None => (k, i32::MAX),
    };
    let p = Fa3PrefillParams {
        q: pr.q.tensor_map(FA3_BLOCK_M)?,
        k,
        v: pr.v.tensor_map(block_n)?,
        k_rope,
        k_rope_col,
        o: pr.o,
        o_batch_stride: pr.o_batch_stride as i64,
        o_token_stride: pr.o_token_stride as i32,
        o_head_stride: pr.o_head_stride as i32,
        n_q: pr.q.tokens as i32,
        n_kv: pr.k.tokens as i32,
        q_heads: pr.q.heads as i32,
        k_heads: pr.k.heads as i32,
        v_heads: pr.v.heads as i32,
        d_v,
        batch: pr.q.batch as i32,
        heads_per_section: heads_per_section(pr.k.tokens, pr.q.d, pr.v.d, pr.q.heads / pr.k.heads.max(1)) as i32,
        scale: pr.scale,
        softcap: pr.softcap,
    };
    let tiles = fa3_tiles(pr.q.batch as i32, pr.q.tokens as i32, pr.q.heads as i32);
    let (entry, persistent) = fa3_entry(&variant, ov);
    let cfg = fa3_prefill_launch(&variant, tiles, persistent, pr.sm_count);
    Ok(kernel(entry, cfg, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_and_smem() {
        let pick = |a, b| select_variant(a, b).map(|v| v.kernel.1);
        assert_eq!(pick(24, 24), Some("fa3_prefill_d64"));
        assert_eq!(pick(128, 128), Some("fa3_prefill_d128"));
        assert_eq!(pick(192, 128), Some("fa3_prefill_d192_128"));
        assert_eq!(pick(128, 192), Some("fa3_prefill_d256"));
        assert_eq!(pick(264, 128), None);
        assert_eq!(pick(20, 16), None);
        for v in FA3_VARIANTS.iter().chain([&FA3_D128_LONG]) {
            for persistent in [false, true] {
                let bytes = v.smem_bytes(persistent);
                assert!(bytes <= 227 * 1024, "{:?} persistent {persistent}: {bytes}", v.kernel);
            }
        }
        // d128: Q 32 KiB + 2 stages of (K 32 KiB + V 32 KiB), 10 barriers and a tile index,
        // 1 KiB slack; persistent: a second Q buffer, 2 more barriers and index. The long-key
        // entry has a third stage, one Q buffer either way, and still fits.
        assert_eq!(FA3_VARIANTS[1].smem_bytes(false), 163_840 + 80 + 4 + 1024);
        assert_eq!(FA3_VARIANTS[1].smem_bytes(true), 196_608 + 96 + 8 + 1024);
        assert_eq!(FA3_D128_LONG.smem_bytes(true), 229_376 + 112 + 4 + 1024);
        // Two Q buffers wherever they fit, one where a second would not.
        for v in FA3_VARIANTS.iter().chain([&FA3_D128_LONG]) {
            let two = Fa3Variant { tile: Fa3Tile { q_buffers: 2, ..v.tile }, ..*v };
            assert_eq!(v.tile.q_buffers == 2, two.smem_bytes(true) <= 227 * 1024, "{:?}", v.kernel);
        }
        let long = |n| select_variant_for(128, 128, n).map(|v| v.kernel.1);
        assert_eq!(long(2048), Some("fa3_prefill_d128"));
        assert_eq!(long(4096), Some("fa3_prefill_d128_long"));
        assert_eq!(select_variant_for(64, 64, 8192).map(|v| v.kernel.1), Some("fa3_prefill_d64"));
    }

    #[test]
    fn persistent_grid_is_one_cta_per_sm_at_most() {
        let v = FA3_VARIANTS[1];
        // h64 1x2048: 64 heads x 16 query blocks.
        assert_eq!(fa3_tiles(1, 2048, 64), 1024);
        assert_eq!(fa3_tiles(2, 333, 32), 2 * 3 * 32);
        assert_eq!(fa3_prefill_launch(&v, 1024, true, 132).grid_dim, (132, 1, 1));
        assert_eq!(fa3_prefill_launch(&v, 1024, false, 132).grid_dim, (1024, 1, 1));
        assert_eq!(fa3_prefill_launch(&v, 5, true, 132).grid_dim, (5, 1, 1));
        assert_eq!(fa3_prefill_launch(&v, 5, true, 132).shared_mem_bytes, v.smem_bytes(true));
    }

    #[test]
    fn entries_and_overrides() {
        let none = Fa3Overrides::default();
        let d128 = FA3_VARIANTS[1];
        let name = |v: &Fa3Variant, ov| fa3_entry(v, ov).0 .1;
        assert_eq!(fa3_entry(&d128, none), (("attention_fa3", "fa3_prefill_d128_persistent"), true));
        assert_eq!(name(&FA3_VARIANTS[0], none), "fa3_prefill_d64_persistent");
        assert_eq!(name(&FA3_VARIANTS[2], none), "fa3_prefill_d192_128_persistent");
        // The 3-stage long-key d128 entry runs one CTA per tile (measured faster there).
        assert_eq!(fa3_entry(&FA3_D128_LONG, none), (("attention_fa3", "fa3_prefill_d128_long"), false));
        let tiles = Fa3Overrides { persistent: Some(false), ..none };
        assert_eq!(fa3_entry(&d128, tiles), (("attention_fa3", "fa3_prefill_d128"), false));
        let forced = Fa3Overrides { persistent: Some(true), ..none };
        assert_eq!(name(&FA3_D128_LONG, forced), "fa3_prefill_d128_long_persistent");
        let d256 = FA3_VARIANTS[3];
        assert_eq!(fa3_entry(&d256, none), (("attention_fa3", "fa3_prefill_d256"), false));
        assert!(!fa3_entry(&d256, forced).1, "d256 has no persistent entry");
        let nopp = Fa3Overrides { d256_no_pingpong: true, ..none };
        assert_eq!(name(&d256, nopp), "fa3_prefill_d256_nopp");
        assert_eq!(name(&d128, nopp), "fa3_prefill_d128_persistent");
    }

    #[test]
    fn sections_fit_l2() {
        // d128 MHA at 8192 keys: 4 MiB of K+V per head, 6 heads per 24 MiB section.
        assert_eq!(heads_per_section(8192, 128, 128, 1), 6);
        // GQA 8 q per kv head shares one head's K/V.
        assert_eq!(heads_per_section(8192, 128, 128, 8), 48);
        // A head larger than the section still gets one.
        assert_eq!(heads_per_section(1 << 20, 256, 256, 1), 1);
    }

    #[test]
    fn params_match_the_c_layout() {
        assert_eq!(std::mem::align_of::<Fa3PrefillParams>(), 128);
        assert_eq!(std::mem::offset_of!(Fa3PrefillParams, o), 512);
    }
}
