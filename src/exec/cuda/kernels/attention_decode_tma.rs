//! Launch parameters for `kernels/attention_decode_tma.cu`, the fa3 backend's decode
//! attention: GQA/MHA over the KV cache with a TMA ring per CTA, `s_q >= 1` new tokens per
//! sequence (causal among them), split-KV, and the combine, both launched with PDL.
//! [`supports`] says which shapes it takes; the rest (Sigma v1's DiffQKV) stays on
//! `attention_decode.rs`.

use anyhow::Context;
use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::super::tma::{encode_bf16, TensorLayout, BOX_INNER};
use super::attention_decode::{choose_splits, decode_scratch_bytes, DecodeCombineParams};
use super::attention_fa3::HeadsOperand;
use super::prepare::Call;
use super::ptr::{Bf16Ptr, ConstBf16Ptr, F32Ptr, TensorMap};

/// Keys per ring stage: one consumer warp's m16n8k16 slice.
pub const DECODE_TMA_BLOCK_N: i32 = 16;
/// Consumer warps per CTA (plus one producer warp).
pub const DECODE_TMA_CONSUMER_WARPS: i32 = 4;
/// Packed (token, q head) rows per CTA: the M of one mma.sync tile.
pub const DECODE_TMA_ROWS: i32 = 16;
/// Resident CTAs per SM the entries are built for (`__launch_bounds__(160, 2)`, smem <= 113 KiB).
const CTAS_PER_SM: i32 = 2;

/// Compile-time shape of one entry (instantiated from these constants through the header).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeTmaTile {
    /// Head dim bucket (a multiple of 64: whole TMA boxes).
    pub d: i32,
    /// Ring stages each consumer warp has in flight (stages of one head tile at one head per
    /// CTA; a stage spans all the CTA's heads, so the ring holds this many per warp in any case).
    pub stages_per_warp: i32,
    /// Most K heads one CTA reads per key ([`heads_per_cta`]): 4 streams a 1 KiB run of the
    /// `[batch, seq, heads, d]` cache per key at d128. d256 keeps 1, since its 4-tile ring
    /// would otherwise be a single stage.
    pub max_heads_per_cta: i32,
    /// q's mma fragments stay in registers (d256's would spill: it reads them from shared
    /// memory each tile, `max_heads_per_cta` q tiles of smem).
    pub q_in_regs: bool,
}
// One K head per CTA at d64/d128: four heads per CTA (one contiguous cache run per key)
// checked correct on the H200 but measured 7-25% slower at b32/b64 than one head with splits
// (same call, docs/perf.md "GQA decode v3"), so the mechanism stays, capped at one.
pub const DECODE_TMA_TILE_D64: DecodeTmaTile =
    DecodeTmaTile { d: 64, stages_per_warp: 6, max_heads_per_cta: 1, q_in_regs: true };
pub const DECODE_TMA_TILE_D128: DecodeTmaTile =
    DecodeTmaTile { d: 128, stages_per_warp: 3, max_heads_per_cta: 1, q_in_regs: true };
pub const DECODE_TMA_TILE_D256: DecodeTmaTile =
    DecodeTmaTile { d: 256, stages_per_warp: 1, max_heads_per_cta: 1, q_in_regs: false };

impl DecodeTmaTile {
    /// The kernel's `Layout`: ring of head tiles (or the warps' fp32 O at the merge, if
    /// larger), the padded q tiles unless q is in registers, per-warp m and l, full and empty
    /// barriers (one pair per head tile: the stage count at one head per CTA), 1 KiB of
    /// alignment slack.
    pub const fn smem_bytes(&self) -> u32 {
        let (d, warps, rows) = (self.d, DECODE_TMA_CONSUMER_WARPS, DECODE_TMA_ROWS);
        let head_tiles = warps * self.stages_per_warp;
        let ring = head_tiles * 2 * DECODE_TMA_BLOCK_N * d * 2;
        let merge = warps * rows * d * 4;
        let area = if ring > merge { ring } else { merge };
        let q = if self.q_in_regs { 0 } else { self.max_heads_per_cta * rows * (d + 8) * 2 };
        (area + q + 2 * warps * rows * 4 + 16 * head_tiles + 1024) as u32
    }
}

/// Tensor maps first (128-byte aligned, as in C).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DecodeTmaParams {
    /// K cache (d, k_heads, n_kv, batch), boxes of 64 x 1 x 16 x 1.
    pub k: TensorMap,
    /// V cache, same extents and boxes.
    pub v: TensorMap,
    /// q [batch * s_q token rows, q_heads * d] with row stride `q_row_stride`.
    pub q: ConstBf16Ptr,
    /// o [batch * s_q token rows, q_heads * d], same row order as q.
    pub o: Bf16Ptr,
    /// Partials when `num_splits > 1` (`decode_scratch_bytes(batch * s_q, ..)`).
    pub scratch: F32Ptr,
    pub q_row_stride: i32,
    pub q_head_stride: i32,
    pub o_row_stride: i32,
    pub o_head_stride: i32,
    pub batch: i32,
    pub q_heads: i32,
    pub k_heads: i32,
    pub d: i32,
    pub n_kv: i32,
    /// New tokens per sequence (1 for plain decode).
    pub s_q: i32,
    pub num_splits: i32,
    /// K heads per CTA ([`heads_per_cta`]): divides `k_heads` and the consumer warps.
    pub heads_per_cta: i32,
    /// WS > 0: v5's stages of 16 x WS keys shared by WS warps of each head ([`stage_warps`];
    /// `k`/`v` are the 5-D maps of [`DecodeTmaProblem::stage_map`]); 0: v4's per-warp 16-key
    /// stages (4-D maps).
    pub stage_warps: i32,
    /// 1: with splits, the last split of each (sequence, head block, row tile) to finish merges
    /// them (v5b's tickets, [`fused_combine`]) and no combine kernel runs.
    pub fused: i32,
    pub scale: f32,
    /// `<= 0` disables the tanh soft cap.
    pub softcap: f32,
    /// 1 (v6): in v5's layout, every consumer warp fills its own tiles with 16-byte `cp.async`
    /// copies (LDGSTS) from `k_cache` / `v_cache` and waits on its own copy groups, no
    /// producer and no barriers ([`async_copy`]); 0: the producer's TMA boxes. Unused by v4's
    /// stages.
    pub async_copy: i32,
    /// Row stride of the cache in sequences: `max_seq` keys of `k_heads * d` elements.
    pub max_seq: i32,
    /// The caches `[batch, max_seq, k_heads, d]` themselves, for v6's `cp.async` copies.
    pub k_cache: ConstBf16Ptr,
    pub v_cache: ConstBf16Ptr,
}
unsafe impl DeviceRepr for DecodeTmaParams {}

pub const DECODE_TMA_COMBINE: (&str, &str) = ("attention_decode_tma", "decode_tma_combine");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeTmaVariant {
    /// The entry that serves every path (v4, v5, v6, the fused merge).
    pub kernel: (&'static str, &'static str),
    /// The same tile compiled for v6 launches only ([`v6_entry`]); d256 has none (v5's layout
    /// needs two stages per group, which its ring does not hold).
    pub v6_kernel: Option<(&'static str, &'static str)>,
    pub tile: DecodeTmaTile,
}

pub const DECODE_TMA_VARIANTS: [DecodeTmaVariant; 3] = [
    DecodeTmaVariant {
        kernel: ("attention_decode_tma", "decode_tma_d64"),
        v6_kernel: Some(("attention_decode_tma", "decode_tma_d64_v6")),
        tile: DECODE_TMA_TILE_D64,
    },
    DecodeTmaVariant {
        kernel: ("attention_decode_tma", "decode_tma_d128"),
        v6_kernel: Some(("attention_decode_tma", "decode_tma_d128_v6")),
        tile: DECODE_TMA_TILE_D128,
    },
    DecodeTmaVariant {
        kernel: ("attention_decode_tma", "decode_tma_d256"),
        v6_kernel: None,
        tile: DECODE_TMA_TILE_D256,
    },
];

/// The smallest bucket holding head dim `d` (a positive multiple of 8, at most 256).
pub fn select_variant(d: i32) -> Option<DecodeTmaVariant> {
    if d <= 0 || d % 8 != 0 {
        return None;
    }
    DECODE_TMA_VARIANTS.iter().copied().find(|v| d <= v.tile.d)
}

/// Whether this kernel computes these heads: GQA or MHA (each K head serves a whole number of
/// q heads, with the V head of the same index) and one head dim for q/k and v, at least one
/// 64-column TMA box wide (smaller heads, as in the tiny test fixtures, stay on fa2's kernel
/// rather than rely on a box wider than the tensor).
pub fn supports(q_heads: usize, k_heads: usize, v_heads: usize, d_qk: usize, d_v: usize) -> bool {
    let gqa = k_heads > 0 && k_heads == v_heads && q_heads.is_multiple_of(k_heads);
    gqa && d_qk == d_v && d_qk >= 64 && select_variant(d_qk as i32).is_some()
}

/// Split tickets in the kernel module (`g_split_tickets`): the most (sequence, head block x
/// row tile) pairs a fused-combine launch may have.
pub const DECODE_TMA_TICKETS: i32 = 16384;

/// Device A/B switches, read from the environment at bind time (docs/perf.md "GQA decode
/// v5"): `FWDBENCH_DECODE_BOX=old` runs v4's per-warp stages of 16-key, 64-column boxes;
/// `FWDBENCH_DECODE_HEADS=1|2|4` caps the K heads per CTA at that instead of the tile's
/// `max_heads_per_cta` (d64/d128 only: d256's ring would be one stage);
/// `FWDBENCH_DECODE_COMBINE=fused` merges splits in their last CTA (v5b; measured slower, so
/// the combine kernel stays the default); `FWDBENCH_DECODE_KEYS=16|32|64` sets v5's keys per
/// stage (at most 64 / heads per CTA) and runs v5 also with splits; `FWDBENCH_DECODE_LOAD=tma`
/// fills v5's stages with TMA boxes instead of `cp.async` ([`async_copy`]);
/// `FWDBENCH_DECODE_ENTRY=v6` launches v6 calls on the entry compiled for v6 alone
/// ([`v6_entry`]); `FWDBENCH_DECODE_COMBINE=warm` has the combine kernel run its merge once
/// with every load and store predicated off before it waits on the decode, so the merge's code
/// is fetched while the decode runs (`DecodeCombineParams::warm`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeOverrides {
    pub old_box: bool,
    pub tma_stages: bool,
    pub max_heads: Option<i32>,
    pub fused_combine: bool,
    pub stage_keys: Option<i32>,
    /// `FWDBENCH_DECODE_SPLITS=N` (1..=128): the split count instead of [`num_splits`]'s, for
    /// A/B runs on how finer work units change the end-of-launch imbalance.
    pub splits: Option<i32>,
    pub v6_entry: bool,
    pub warm_combine: bool,
}

impl DecodeOverrides {
    pub fn from_env() -> Self {
        let var = |key: &str| std::env::var(key).ok();
        DecodeOverrides {
            old_box: var("FWDBENCH_DECODE_BOX").as_deref() == Some("old"),
            tma_stages: var("FWDBENCH_DECODE_LOAD").as_deref() == Some("tma"),
            max_heads: var("FWDBENCH_DECODE_HEADS")
                .and_then(|v| v.parse::<i32>().ok())
                .filter(|h| [1, 2, 4].contains(h)),
            fused_combine: var("FWDBENCH_DECODE_COMBINE").as_deref() == Some("fused"),
            stage_keys: var("FWDBENCH_DECODE_KEYS")
                .and_then(|v| v.parse::<i32>().ok())
                .filter(|k| [16, 32, 64].contains(k)),
            splits: var("FWDBENCH_DECODE_SPLITS").and_then(|v| v.parse::<i32>().ok()).filter(|s| (1..=128).contains(s)),
            v6_entry: var("FWDBENCH_DECODE_ENTRY").as_deref() == Some("v6"),
            warm_combine: var("FWDBENCH_DECODE_COMBINE").as_deref() == Some("warm"),
        }
    }

    /// `tile` with the head cap applied.
    pub fn tile(&self, tile: DecodeTmaTile) -> DecodeTmaTile {
        match self.max_heads {
            Some(h) if tile.stages_per_warp >= 2 => DecodeTmaTile { max_heads_per_cta: h, ..tile },
            _ => tile,
        }
    }
}

/// Warps of each head that share one of v5's stages (0: v4's per-warp stages): a stage is
/// `16 x WS` keys of all the CTA's heads, one 5-D TMA box for K and one for V (both 64-column
/// halves of a d128 row in one op). By default WS = 4 / heads_per_cta (all four warps, 2 ops
/// per 32 KiB stage instead of 16), or `FWDBENCH_DECODE_KEYS / 16`. Needs a ring of at least
/// two such stages per group (not d256), a head dim that is exactly the bucket (the chunk dim
/// reads whole 64-column halves, no zero fill past d) and a context of at least one stage.
///
/// Under v6 (the default, [`async_copy`]) every launch takes this layout: each warp waits only
/// for its own 16-key tile, and split launches gained 2.7-3.3% on it (b1, the tp8 shard, Qwen3
/// b32; docs/perf.md session 14, call E). With the TMA boxes (`FWDBENCH_DECODE_LOAD=tma`) only
/// unsplit launches take it: there a short split's consumers wait for a whole 32 KiB stage
/// before their first tile (tp8 b32 -5%), while unsplit ones gained 1.3-2% (Qwen3 b34 with
/// about one CTA per SM 8.5%; docs/perf.md "GQA decode v5").
pub fn stage_warps(
    tile: &DecodeTmaTile,
    d: i32,
    n_kv: i32,
    heads_per_cta: i32,
    splits: i32,
    ov: DecodeOverrides,
) -> i32 {
    let wph = DECODE_TMA_CONSUMER_WARPS / heads_per_cta.clamp(1, DECODE_TMA_CONSUMER_WARPS);
    let ws = ov.stage_keys.map_or(wph, |k| (k / DECODE_TMA_BLOCK_N).clamp(1, wph));
    let wanted = splits <= 1 || ov.stage_keys.is_some() || !ov.tma_stages;
    let eligible = wanted && !ov.old_box && tile.stages_per_warp >= 2 && d == tile.d && n_kv >= DECODE_TMA_BLOCK_N * ws;
    if eligible {
        ws
    } else {
        0
    }
}

/// Whether v5's stages (`stage_warps > 0`) are filled by the consumer warps' own `cp.async`
/// copies (v6) rather than the producer's TMA boxes. Session 14's stream probe
/// (`scripts/probes/gqa_stream_probe.cu`, docs/perf.md) read Sigma b32's token-major cache
/// with no compute at ~4.08 TB/s through the 5-D boxes and ~4.3-4.39 TB/s through 16-byte
/// `cp.async` copies into the same swizzled layout (the cuDNN peer's kernel is an LDGSTS one,
/// at 90% of DRAM peak); per-key 256-byte bulk copies managed 2.2 TB/s.
pub fn async_copy(stage_warps: i32, ov: DecodeOverrides) -> bool {
    stage_warps > 0 && !ov.tma_stages
}

/// Whether a split launch merges in its own last CTA per (sequence, head block, row tile)
/// instead of launching the combine: only under `FWDBENCH_DECODE_COMBINE=fused`, while the
/// pairs fit the module's tickets. Measured (call C): Sigma b1 0.0223 ms against 0.0180 with
/// the combine kernel, Qwen3 b32 -5.5%, tp8 b32 -4.5%: one CTA per pair reading every split's
/// partials in dependent L2 trips is slower than the combine kernel's launch it saves.
pub fn fused_combine(splits: i32, batch: i32, grid_y: i32, ov: DecodeOverrides) -> bool {
    splits > 1 && ov.fused_combine && batch as i64 * grid_y as i64 <= DECODE_TMA_TICKETS as i64
}

/// The entry a launch of `p` runs: `variant`'s v6-only one (compiled for v6 at its default
/// layout: the producer, barriers and fused merge left out, one K head per CTA and
/// [`DECODE_TMA_CONSUMER_WARPS`] warps per stage as constants; a third of the code, which a launch
/// after an L2 flush fetches cold) when `p` is exactly that launch and
/// `FWDBENCH_DECODE_ENTRY=v6` asks for it; else the entry of every path. Off by default until
/// checked and timed on the GPU (docs/perf.md, session 16).
pub fn v6_entry(variant: &DecodeTmaVariant, p: &DecodeTmaParams, ov: DecodeOverrides) -> (&'static str, &'static str) {
    let v6_default_layout = p.async_copy != 0
        && p.fused == 0
        && p.heads_per_cta == 1
        && p.stage_warps == DECODE_TMA_CONSUMER_WARPS
        && p.d == variant.tile.d;
    match variant.v6_kernel {
        Some(k) if v6_default_layout && ov.v6_entry => k,
        _ => variant.kernel,
    }
}

/// Fewest keys per split ([`num_splits`]).
const MIN_SPLIT_KEYS: i32 = 128;

/// The most splits `n_kv` keys allow, [`MIN_SPLIT_KEYS`] each (unclamped).
fn max_splits(n_kv: i32) -> i32 {
    (n_kv + MIN_SPLIT_KEYS - 1) / MIN_SPLIT_KEYS
}

/// K heads one CTA of `tile` serves: the most (up to its `max_heads_per_cta`, a power of two
/// no more than the consumer warps) that divide `k_heads` and still leave enough CTAs, split
/// down to [`MIN_SPLIT_KEYS`], to fill the `2 x sm_count` slots. A CTA requests each key's K
/// and V of all its heads together: one contiguous run of the `[batch, seq, heads, d]` cache
/// instead of `d * 2` bytes at a `heads * d * 2` stride, so the DRAM pages it opens serve the
/// whole run. Small batches (b1) keep one head per CTA: their bound is latency, not DRAM.
pub fn heads_per_cta(tile: &DecodeTmaTile, k_heads: i32, batch: i32, row_tiles: i32, n_kv: i32, sm_count: i32) -> i32 {
    let max_splits = max_splits(n_kv).clamp(1, 128) as i64;
    let fills = |hb: i32| {
        batch as i64 * (k_heads / hb) as i64 * row_tiles as i64 * max_splits >= (CTAS_PER_SM * sm_count) as i64
    };
    let mut hb = tile.max_heads_per_cta.clamp(1, DECODE_TMA_CONSUMER_WARPS);
    while hb > 1 && (k_heads % hb != 0 || !fills(hb)) {
        hb /= 2;
    }
    hb
}

/// CTAs per K head: the group's `q_heads / k_heads * s_q` packed rows, 16 per CTA.
pub fn row_tiles(q_heads: i32, k_heads: i32, s_q: i32) -> i32 {
    (q_heads / k_heads * s_q + DECODE_TMA_ROWS - 1) / DECODE_TMA_ROWS
}

/// Split count for `batch * head_blocks * row_tiles` CTAs per split on `sm_count` SMs at two
/// CTAs each (attention_decode.rs's cost: waves x keys per split + a per-CTA overhead), at
/// least 128 keys per split.
pub fn num_splits(batch: i32, head_blocks: i32, row_tiles: i32, n_kv: i32, sm_count: i32) -> i32 {
    let ctas = batch as i64 * head_blocks as i64 * row_tiles as i64;
    choose_splits(ctas, CTAS_PER_SM as i64 * sm_count as i64, n_kv, MIN_SPLIT_KEYS, 128)
}

/// One call: q and o `[batch * s_q, q_heads * d]` token rows (strides in elements), the K/V
/// cache `[batch, max_seq, heads, d]` with keys `0..n_kv` of each sequence valid.
#[derive(Debug, Clone, Copy)]
pub struct DecodeTmaProblem {
    pub q: u64,
    pub q_row_stride: usize,
    pub o: u64,
    pub o_row_stride: usize,
    pub k_cache: u64,
    pub v_cache: u64,
    pub max_seq: usize,
    pub batch: usize,
    pub s_q: usize,
    pub n_kv: usize,
    pub q_heads: usize,
    pub k_heads: usize,
    pub d: usize,
    pub scale: f32,
    pub softcap: f32,
    pub scratch: u64,
    pub sm_count: i32,
}

impl DecodeTmaProblem {
    pub fn row_tiles(&self) -> i32 {
        row_tiles(self.q_heads as i32, self.k_heads as i32, self.s_q as i32)
    }
    /// K heads per CTA for this shape's bucket (1 when no bucket holds `d`), under the
    /// environment's [`DecodeOverrides`].
    pub fn heads_per_cta(&self) -> i32 {
        let ov = DecodeOverrides::from_env();
        select_variant(self.d as i32).map_or(1, |v| {
            let (k_heads, batch, n_kv) = (self.k_heads as i32, self.batch as i32, self.n_kv as i32);
            heads_per_cta(&ov.tile(v.tile), k_heads, batch, self.row_tiles(), n_kv, self.sm_count)
        })
    }
    /// Warps per v5 stage for this call ([`stage_warps`]; 0: v4's stages).
    pub fn stage_warps(&self) -> i32 {
        select_variant(self.d as i32).map_or(0, |v| {
            let (d, n_kv) = (self.d as i32, self.n_kv as i32);
            stage_warps(&v.tile, d, n_kv, self.heads_per_cta(), self.num_splits(), DecodeOverrides::from_env())
        })
    }
    /// v5's map of K or V: dims (64 columns, n_kv keys, d / 64 chunks, heads, batch), the
    /// chunk's stride 64 elements (below the key's: legal, as long as each is a multiple of 16
    /// bytes), boxes of 64 x `keys` x d / 64 x `heads` x 1, i.e. one stage's K (or V) of the
    /// CTA's heads, K-head-major in shared memory as `[head][chunk][key][64]`.
    fn stage_map(&self, base: u64, keys: i32, heads: i32) -> anyhow::Result<TensorMap> {
        let per_token = (self.k_heads * self.d) as u64;
        let chunks = (self.d / 64) as u64;
        let layout = TensorLayout {
            base,
            dims: vec![64, self.n_kv as u64, chunks, self.k_heads as u64, self.batch as u64],
            strides: vec![per_token, 64, self.d as u64, self.max_seq as u64 * per_token],
        };
        encode_bf16(&layout, &[BOX_INNER, keys as u32, chunks as u32, heads as u32, 1])
    }
    /// CTAs per (row tile, split, sequence): the K heads in blocks of [`Self::heads_per_cta`].
    pub fn head_blocks(&self) -> i32 {
        self.k_heads as i32 / self.heads_per_cta()
    }
    pub fn num_splits(&self) -> i32 {
        if let Some(s) = DecodeOverrides::from_env().splits {
            return s.min(max_splits(self.n_kv as i32).max(1));
        }
        num_splits(self.batch as i32, self.head_blocks(), self.row_tiles(), self.n_kv as i32, self.sm_count)
    }
    /// The scratch [`decode_tma_calls`] needs (0 without splits).
    pub fn scratch_bytes(&self) -> usize {
        decode_scratch_bytes((self.batch * self.s_q) as i32, self.q_heads as i32, self.d as i32, self.num_splits())
    }
    /// The cache of one of K or V as a TMA operand: only keys `0..n_kv` are in bounds.
    fn cache_operand(&self, base: u64) -> HeadsOperand {
        let per_token = self.k_heads * self.d;
        HeadsOperand {
            base,
            d: self.d,
            heads: self.k_heads,
            tokens: self.n_kv,
            batch: self.batch,
            head_stride: self.d,
            token_stride: per_token,
            batch_stride: self.max_seq * per_token,
        }
    }
}

/// Grid (splits, head blocks * row tiles, batch), 160 threads.
pub fn decode_tma_launch(variant: &DecodeTmaVariant, pr: &DecodeTmaProblem) -> LaunchConfig {
    let grid_y = pr.head_blocks().max(0) as u32 * pr.row_tiles().max(0) as u32;
    LaunchConfig {
        grid_dim: (pr.num_splits() as u32, grid_y, pr.batch as u32),
        block_dim: (32 * (DECODE_TMA_CONSUMER_WARPS as u32 + 1), 1, 1),
        shared_mem_bytes: variant.tile.smem_bytes(),
    }
}

/// Splits the combine loads in one batch per lane (the kernel's `COMBINE_BATCH`).
const COMBINE_BATCH: i32 = 16;
/// Warps of the combine per (token row, q head) pair: one up to 16 splits, two up to 32,
/// four beyond, so every warp's share fits one batch of loads up to 64 splits. The kernel's
/// `combine_slices` is the same rule; blocks of 128 threads hold `4 / slices` pairs.
pub fn combine_slices(num_splits: i32) -> i32 {
    if num_splits <= COMBINE_BATCH {
        1
    } else if num_splits <= 2 * COMBINE_BATCH {
        2
    } else {
        4
    }
}

/// The combine's grid: `rows * q_heads` pairs, `4 / combine_slices` per 128-thread block (few
/// splits take few blocks: one wave where one block per pair took four at Qwen3 b32).
pub fn decode_tma_combine_launch(rows: i32, q_heads: i32, num_splits: i32) -> LaunchConfig {
    let pairs_per_block = (4 / combine_slices(num_splits)) as i64;
    let pairs = rows.max(0) as i64 * q_heads.max(0) as i64;
    LaunchConfig {
        grid_dim: (((pairs + pairs_per_block - 1) / pairs_per_block) as u32, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A kernel call launched with programmatic dependent launch (see `Gpu::launch_pdl`).
fn pdl_kernel<P: DeviceRepr + Copy + 'static>(k: (&'static str, &'static str), cfg: LaunchConfig, p: P) -> Call {
    Call::Kernel(k, cfg, Box::new(move |gpu, k, cfg| gpu.launch_pdl(k, cfg, p)))
}

/// The decode kernel and, with splits, its combine for `pr` (tensor maps encoded now, at bind
/// time). Unsplit, the decode writes o itself and no combine is launched: every PDL kernel of
/// ours waits on griddepcontrol before reading, so whatever follows is ordered behind the
/// decode directly (launching the combine anyway cost a grid of empty blocks per call).
pub fn decode_tma_calls(pr: &DecodeTmaProblem) -> anyhow::Result<Vec<Call>> {
    let variant =
        select_variant(pr.d as i32).with_context(|| format!("no fa3 decode attention kernel for head dim {}", pr.d))?;
    let splits = pr.num_splits();
    let rows = (pr.batch * pr.s_q) as i32;
    let hb = pr.heads_per_cta();
    let ws = pr.stage_warps();
    let launch = decode_tma_launch(&variant, pr);
    let ov = DecodeOverrides::from_env();
    let fused = fused_combine(splits, pr.batch as i32, launch.grid_dim.1 as i32, ov);
    let (k, v) = if ws > 0 {
        let keys = DECODE_TMA_BLOCK_N * ws;
        (pr.stage_map(pr.k_cache, keys, hb)?, pr.stage_map(pr.v_cache, keys, hb)?)
    } else {
        let box_keys = DECODE_TMA_BLOCK_N;
        (pr.cache_operand(pr.k_cache).tensor_map(box_keys)?, pr.cache_operand(pr.v_cache).tensor_map(box_keys)?)
    };
    let p = DecodeTmaParams {
        k,
        v,
        q: pr.q,
        o: pr.o,
        scratch: pr.scratch,
        q_row_stride: pr.q_row_stride as i32,
        q_head_stride: pr.d as i32,
        o_row_stride: pr.o_row_stride as i32,
        o_head_stride: pr.d as i32,
        batch: pr.batch as i32,
        q_heads: pr.q_heads as i32,
        k_heads: pr.k_heads as i32,
        d: pr.d as i32,
        n_kv: pr.n_kv as i32,
        s_q: pr.s_q as i32,
        num_splits: splits,
        heads_per_cta: hb,
        stage_warps: ws,
        fused: fused as i32,
        scale: pr.scale,
        softcap: pr.softcap,
        async_copy: async_copy(ws, ov) as i32,
        max_seq: pr.max_seq as i32,
        k_cache: pr.k_cache,
        v_cache: pr.v_cache,
    };
    let combine = DecodeCombineParams {
        scratch: pr.scratch,
        o: pr.o,
        o_batch_stride: pr.o_row_stride as i32,
        o_head_stride: pr.d as i32,
        batch: rows,
        q_heads: pr.q_heads as i32,
        d_v: pr.d as i32,
        num_splits: splits,
        warm: ov.warm_combine as i32,
    };
    let kernel = v6_entry(&variant, &p, ov);
    let mut calls = vec![pdl_kernel(kernel, launch, p)];
    if splits > 1 && !fused {
        let cfg = decode_tma_combine_launch(rows, pr.q_heads as i32, splits);
        calls.push(pdl_kernel(DECODE_TMA_COMBINE, cfg, combine));
    }
    Ok(calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(batch: usize, q_heads: usize, k_heads: usize, s_q: usize, n_kv: usize) -> DecodeTmaProblem {
        DecodeTmaProblem {
            q: 0,
            q_row_stride: q_heads * 128,
            o: 0,
            o_row_stride: q_heads * 128,
            k_cache: 0,
            v_cache: 0,
            max_seq: n_kv,
            batch,
            s_q,
            n_kv,
            q_heads,
            k_heads,
            d: 128,
            scale: 1.0,
            softcap: 0.0,
            scratch: 0,
            sm_count: 132,
        }
    }

    #[test]
    fn buckets_and_smem() {
        let pick = |d| select_variant(d).map(|v| v.kernel.1);
        assert_eq!(pick(32), Some("decode_tma_d64"));
        assert_eq!(pick(128), Some("decode_tma_d128"));
        assert_eq!(pick(136), Some("decode_tma_d256"));
        assert_eq!(pick(264), None);
        assert_eq!(pick(12), None);
        // The v6-only entry only when asked, and only for v6 launches at its compiled layout.
        let map = TensorMap { opaque: [0; 16] };
        let v6 = DecodeTmaParams {
            k: map,
            v: map,
            q: 0,
            o: 0,
            scratch: 0,
            q_row_stride: 1024,
            q_head_stride: 128,
            o_row_stride: 1024,
            o_head_stride: 128,
            batch: 1,
            q_heads: 8,
            k_heads: 1,
            d: 128,
            n_kv: 4096,
            s_q: 1,
            num_splits: 32,
            heads_per_cta: 1,
            stage_warps: DECODE_TMA_CONSUMER_WARPS,
            fused: 0,
            scale: 1.0,
            softcap: 0.0,
            async_copy: 1,
            max_seq: 4096,
            k_cache: 0,
            v_cache: 0,
        };
        let (d128, d256) = (select_variant(128).unwrap(), select_variant(256).unwrap());
        let ask = DecodeOverrides { v6_entry: true, ..Default::default() };
        let entry = |p: DecodeTmaParams, ov| v6_entry(&d128, &p, ov).1;
        assert_eq!(entry(v6, ask), "decode_tma_d128_v6");
        assert_eq!(entry(v6, DecodeOverrides::default()), "decode_tma_d128");
        assert_eq!(entry(DecodeTmaParams { async_copy: 0, ..v6 }, ask), "decode_tma_d128");
        assert_eq!(entry(DecodeTmaParams { fused: 1, ..v6 }, ask), "decode_tma_d128");
        assert_eq!(entry(DecodeTmaParams { heads_per_cta: 2, stage_warps: 2, ..v6 }, ask), "decode_tma_d128");
        assert_eq!(entry(DecodeTmaParams { stage_warps: 2, ..v6 }, ask), "decode_tma_d128");
        assert_eq!(entry(DecodeTmaParams { d: 120, ..v6 }, ask), "decode_tma_d128");
        assert_eq!(v6_entry(&d256, &DecodeTmaParams { d: 256, ..v6 }, ask).1, "decode_tma_d256");
        // d128: 12 head tiles of K + V (16 keys x 128 x 2 B each) = 96 KiB, q in registers,
        // m/l 512 B, 24 barriers, 1 KiB slack.
        assert_eq!(DECODE_TMA_TILE_D128.smem_bytes(), 98_304 + 512 + 192 + 1024);
        // d256's merge area (4 warps x 16 rows x 256 fp32) equals its 64 KiB ring; one q tile
        // of 16 x 264 bf16.
        assert_eq!(DECODE_TMA_TILE_D256.smem_bytes(), 65_536 + 8_448 + 512 + 64 + 1024);
        // Two CTAs per SM fit the H200's 228 KiB (1 KiB reserved per CTA).
        for v in DECODE_TMA_VARIANTS {
            assert!(2 * (v.tile.smem_bytes() + 1024) <= 228 * 1024, "{:?}", v.kernel);
        }
    }

    #[test]
    fn routing() {
        assert!(supports(64, 8, 8, 128, 128));
        assert!(supports(32, 32, 32, 64, 64));
        assert!(!supports(32, 4, 16, 128, 128), "DiffQKV");
        assert!(!supports(64, 8, 8, 192, 128), "d_qk != d_v");
        assert!(!supports(48, 32, 32, 128, 128), "K head serving a fraction of a group");
        assert!(!supports(8, 2, 2, 32, 32), "narrower than one box");
        assert!(supports(8, 2, 2, 72, 72));
    }

    #[test]
    fn rows_pack_tokens_and_heads() {
        assert_eq!(row_tiles(64, 8, 1), 1);
        assert_eq!(row_tiles(64, 8, 2), 1);
        assert_eq!(row_tiles(64, 8, 3), 2);
        assert_eq!(row_tiles(64, 4, 1), 1);
        assert_eq!(row_tiles(32, 32, 17), 2);
    }

    #[test]
    fn head_blocks_when_the_batch_fills_the_gpu() {
        // The shipped d64/d128 tiles serve one K head per CTA: four per CTA checked correct on
        // the H200 but ran 7-25% slower at b32/b64 (docs/perf.md, "GQA decode v3"). The
        // mechanism, with a tile that allows four:
        let four = DecodeTmaTile { max_heads_per_cta: 4, ..DECODE_TMA_TILE_D128 };
        let hpc = |k, b, rt, n| heads_per_cta(&four, k, b, rt, n, 132);
        // b1 (and Qwen's b3): too few CTAs even at 128 keys per split, one head per CTA.
        assert_eq!(hpc(8, 1, 1, 4097), 1);
        assert_eq!(hpc(4, 3, 1, 1000), 1);
        // b9 64q/8kv ctx 1000: 9 x 2 blocks x 8 splits < 264 slots, 9 x 4 x 8 fills them.
        assert_eq!(hpc(8, 9, 1, 1000), 2);
        assert_eq!(hpc(8, 32, 1, 4097), 4);
        // The tp8 shard has one K head; 6 K heads take pairs.
        assert_eq!(hpc(1, 64, 1, 4097), 1);
        assert_eq!(hpc(6, 64, 1, 4097), 2);
        for (b, k) in [(1, 8), (32, 8), (64, 4), (128, 8)] {
            assert_eq!(problem(b, 64, k, 1, 4097).heads_per_cta(), 1);
        }
        let d256 = DecodeTmaProblem { d: 256, ..problem(64, 64, 8, 1, 4097) };
        assert_eq!(d256.heads_per_cta(), 1);
        assert_eq!(d256.head_blocks(), 8);
        // The grid has one CTA per head block and row tile (the kernel reads its heads from
        // blockIdx.y / row_tiles * heads_per_cta).
        let variant = select_variant(128).unwrap();
        assert_eq!(decode_tma_launch(&variant, &problem(32, 64, 8, 1, 4097)).grid_dim, (1, 8, 32));
        assert_eq!(decode_tma_launch(&variant, &problem(2, 64, 8, 3, 4097)).grid_dim, (8, 16, 2));
        assert_eq!(decode_tma_launch(&variant, &problem(1, 64, 8, 1, 4097)).grid_dim, (33, 8, 1));
    }

    #[test]
    fn splits_from_latency_to_bandwidth_bound() {
        // b1 64q/8kv ctx 4097: fill the 264 CTA slots.
        assert_eq!(problem(1, 64, 8, 1, 4097).num_splits(), 33);
        // b32 and b64: 256 and 512 CTAs already fill them unsplit.
        assert_eq!(problem(32, 64, 8, 1, 4097).num_splits(), 1);
        assert_eq!(problem(64, 64, 8, 1, 4097).num_splits(), 1);
        // Qwen3 64q/4kv b32: 128 CTAs, 2 splits.
        assert_eq!(problem(32, 64, 4, 1, 4097).num_splits(), 2);
        // TP8 shard (8q/1kv) at b32: 32 CTAs per split.
        assert_eq!(problem(32, 8, 1, 1, 4097).num_splits(), 8);
        assert_eq!(problem(3, 64, 8, 1, 38).num_splits(), 1);
        assert_eq!(problem(1, 64, 8, 1, 4097).scratch_bytes(), 64 * 33 * 129 * 4);
        // s_q = 3: 24 packed rows, two row tiles per K head, 16 CTAs per split.
        assert_eq!(problem(2, 64, 8, 3, 4097).num_splits(), 8);
        assert_eq!(problem(2, 64, 8, 3, 4097).scratch_bytes(), 6 * 64 * 8 * 129 * 4);
    }

    #[test]
    fn combine_blocks_hold_pairs_by_split_count() {
        assert_eq!((combine_slices(2), combine_slices(16), combine_slices(17)), (1, 1, 2));
        assert_eq!((combine_slices(32), combine_slices(33), combine_slices(128)), (2, 4, 4));
        // Qwen3 b32 (2 splits): 32 rows x 64 heads, four pairs per block.
        assert_eq!(decode_tma_combine_launch(32, 64, 2).grid_dim, (512, 1, 1));
        // Sigma b1 (33 splits): one pair per block, four warps on its splits.
        assert_eq!(decode_tma_combine_launch(1, 64, 33).grid_dim, (64, 1, 1));
        // A partial last block: 3 x 7 pairs, two per block.
        assert_eq!(decode_tma_combine_launch(3, 7, 20).grid_dim, (11, 1, 1));
    }

    #[test]
    fn v5_stages_where_the_ring_and_head_dim_allow() {
        let ov = DecodeOverrides::default();
        let ws = |tile: &DecodeTmaTile, d, n_kv, hb, ov| stage_warps(tile, d, n_kv, hb, 1, ov);
        // d128 / d64 exactly: 64-key stages (four warps) at one head per CTA, 16 at four.
        assert_eq!(ws(&DECODE_TMA_TILE_D128, 128, 4097, 1, ov), 4);
        assert_eq!(ws(&DECODE_TMA_TILE_D64, 64, 1000, 1, ov), 4);
        assert_eq!(ws(&DECODE_TMA_TILE_D128, 128, 16, 4, ov), 1);
        assert_eq!(ws(&DECODE_TMA_TILE_D128, 128, 4097, 2, ov), 2);
        // The keys knob, capped by the warps of a head.
        let keys = |k| DecodeOverrides { stage_keys: Some(k), ..Default::default() };
        assert_eq!(ws(&DECODE_TMA_TILE_D128, 128, 4097, 1, keys(32)), 2);
        assert_eq!(ws(&DECODE_TMA_TILE_D128, 128, 4097, 1, keys(16)), 1);
        assert_eq!(ws(&DECODE_TMA_TILE_D128, 128, 4097, 4, keys(64)), 1);
        assert_eq!(ws(&DECODE_TMA_TILE_D128, 128, 37, 1, keys(32)), 2);
        // d256's ring would be one stage; d72 in the d128 bucket needs the zero fill past d;
        // a context shorter than one stage keeps v4's 16-key boxes; the A/B switch.
        assert_eq!(ws(&DECODE_TMA_TILE_D256, 256, 4097, 1, ov), 0);
        assert_eq!(ws(&DECODE_TMA_TILE_D128, 72, 4097, 1, ov), 0);
        assert_eq!(ws(&DECODE_TMA_TILE_D128, 128, 37, 1, ov), 0);
        let old = DecodeOverrides { old_box: true, ..Default::default() };
        assert_eq!(ws(&DECODE_TMA_TILE_D128, 128, 4097, 1, old), 0);
        // v6 (the default): split launches take v5's layout too, filled by cp.async; under
        // the TMA boxes they keep v4's stages unless the keys knob asks for v5.
        assert_eq!(stage_warps(&DECODE_TMA_TILE_D128, 128, 4097, 1, 8, ov), 4);
        assert!(async_copy(4, ov) && !async_copy(0, ov));
        let tma = DecodeOverrides { tma_stages: true, ..Default::default() };
        assert!(!async_copy(4, tma));
        assert_eq!(stage_warps(&DECODE_TMA_TILE_D128, 128, 4097, 1, 8, tma), 0);
        assert_eq!(
            stage_warps(&DECODE_TMA_TILE_D128, 128, 4097, 1, 8, DecodeOverrides { stage_keys: Some(32), ..tma }),
            2
        );
        assert_eq!(stage_warps(&DECODE_TMA_TILE_D128, 128, 4097, 1, 1, tma), 4, "unsplit");
        assert_eq!(problem(32, 64, 8, 1, 4097).stage_warps(), 4, "Sigma b32, unsplit");
        assert_eq!(problem(1, 64, 8, 1, 4097).stage_warps(), 4, "Sigma b1, 33 splits");
        assert_eq!(problem(32, 8, 1, 1, 4097).stage_warps(), 4, "tp8 b32, 8 splits");
        // The head cap applies to the ringed tiles only.
        let four = DecodeOverrides { max_heads: Some(4), ..Default::default() };
        assert_eq!(four.tile(DECODE_TMA_TILE_D128).max_heads_per_cta, 4);
        assert_eq!(four.tile(DECODE_TMA_TILE_D256).max_heads_per_cta, 1);
    }

    #[test]
    fn splits_merge_in_their_last_cta_while_tickets_last() {
        let ov = DecodeOverrides { fused_combine: true, ..Default::default() };
        assert!(fused_combine(33, 1, 8, ov), "Sigma b1");
        assert!(!fused_combine(1, 32, 8, ov), "unsplit: no merge at all");
        assert!(fused_combine(2, 2048, 8, ov));
        assert!(!fused_combine(2, 2049, 8, ov), "more pairs than tickets: the combine kernel");
        assert!(!fused_combine(33, 1, 8, DecodeOverrides::default()), "off by default");
    }

    #[test]
    fn params_match_the_c_layout() {
        assert_eq!(std::mem::align_of::<DecodeTmaParams>(), 128);
        assert_eq!(std::mem::offset_of!(DecodeTmaParams, q), 256);
        assert_eq!(std::mem::size_of::<DecodeTmaParams>(), 384);
    }
}
