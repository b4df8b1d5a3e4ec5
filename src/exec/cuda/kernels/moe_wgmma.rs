//! Launch parameters for `kernels/moe_wgmma.cu`: the prefill-sized MoE grouped GEMMs on TMA +
//! wgmma (`block_m` 64 and 128; decode's `block_m` 16 stays on moe.cu's weight-streaming
//! kernel), and `moe_permute`, which gathers the tokens into the sorted order TMA needs.
//!
//! With `S` sorted rows (see moe.rs), `E` local experts, `H` hidden, `I` intermediate:
//!
//! 1. `moe_permute` ([`MOE_PERMUTE`], [`permute_call`]): `xs[slot_to_sorted[t * k + j]] = x[t]`
//!    for each local choice (x read once per token), zero for padding rows below `total_padded`. `xs` is `[S, H]` and lives in c2's scratch (c2 is
//!    written only by the down GEMM, after the gate/up GEMM has read `xs`).
//! 2. gate/up ([`gemm_call`] with [`MoeWgmmaGemm::GateUp`]): `act[r, c] = act(xs[r] . W13[e][c])
//!    * (xs[r] . W13[e][I + c])`, `c < I`, the activation applied to the fp32 accumulators, one
//!    rounding; no `h13`, no separate act_mul.
//! 3. down ([`MoeWgmmaGemm::Down`]): `c2[r] = act[r] . W2[e]^T`.
//!
//! Padding rows come out as zeros (act(0) * 0 = 0 for every activation), so every row the
//! GEMMs write is defined and poisoned scratch never leaks.

use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::super::tma::{encode_bf16, matrix_bf16, TensorLayout, BOX_INNER};
use super::act::{activation_code, Act};
use super::prepare::{kernel, Call};
use super::ptr::{Bf16Ptr, ConstBf16Ptr, ConstI32Ptr, I32Ptr, TensorMap};
use crate::config::model::Activation;

/// Threads of a GEMM CTA: a producer warpgroup and two consumer warpgroups.
pub const MOE_WGMMA_THREADS: u32 = 384;
/// Threads of a `moe_permute` CTA (one CTA per token or M-block, 16 bytes per thread per step).
pub const MOE_PERMUTE_THREADS: u32 = 128;
/// Tile counters of one `Op::Moe` (gate/up, then down; kernels/moe_sched.cuh): i32s in
/// moe.rs's scratch right after `total_padded`, zeroed by the permute kernel (bf16 or FP8)
/// that runs before both GEMMs.
pub const MOE_TILE_COUNTERS: i32 = 2;

/// The counters' address, given `total_padded`'s (see [`MOE_TILE_COUNTERS`]).
pub fn tile_counters(total_padded: u64) -> u64 {
    total_padded + 4
}

/// The counter of the gate/up GEMM (`false`) or the down GEMM (`true`).
pub fn tile_counter(total_padded: u64, down: bool) -> u64 {
    tile_counters(total_padded) + 4 * down as u64
}

/// Compile-time shape of one GEMM entry (the kernel instantiates from these through the
/// generated header). K per stage is 64, one 128-byte swizzle span.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeWgmmaTile {
    /// Rows per M-block, the `block_m` of moe_align: 128 (two consumer warpgroups of 64
    /// rows) or 64 (both consumers on the same 64 rows, each half of the N tile).
    pub block_m: i32,
    /// Columns of B per CTA tile (for gate/up: half gate rows, half the matching up rows).
    pub block_n: i32,
    /// TMA ring depth.
    pub stages: i32,
}
pub const MOE_WGMMA_TILE_M128: MoeWgmmaTile = MoeWgmmaTile { block_m: 128, block_n: 256, stages: 4 };
pub const MOE_WGMMA_TILE_M64: MoeWgmmaTile = MoeWgmmaTile { block_m: 64, block_n: 256, stages: 5 };

impl MoeWgmmaTile {
    /// Consumer warpgroups side by side along N (2 when one M-block is a single m64 slab).
    pub const fn groups_n(&self) -> i32 {
        2 / (self.block_m / 64)
    }
    /// Rows of one B box: each consumer's N slab is two boxes (gate then up for gate/up).
    pub const fn box_rows(&self) -> i32 {
        self.block_n / (2 * self.groups_n())
    }
    /// The A and B ring, its full/empty barriers, 1 KiB of alignment slack.
    pub const fn smem_bytes(&self) -> u32 {
        ((self.block_m + self.block_n) * BOX_INNER as i32 * 2 * self.stages + 16 * self.stages + 1024) as u32
    }
}

/// Tensor maps first (128-byte aligned, as in C).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MoeWgmmaParams {
    /// Sorted A `[rows, k]`, boxes of 64 columns x `block_m` rows.
    pub a: TensorMap,
    /// Expert weights as `(k, rows_per_half, halves, experts)`, boxes of 64 x box_rows x 1 x 1:
    /// W13 is `(H, I, 2, E)` (gate half, up half), W2 `(I, H, 1, E)`.
    pub b: TensorMap,
    pub block_expert: ConstI32Ptr,
    pub total_padded: ConstI32Ptr,
    /// `[S, c_ld]` output in sorted order, every row of each live M-block written.
    pub c: Bf16Ptr,
    pub c_ld: i32,
    /// Output columns: `I` for gate/up (activated channels), `H` for down. A multiple of 8.
    pub n: i32,
    pub k: i32,
    /// N tiles of the raster (`ceil(n / columns per tile)`).
    pub n_tiles: i32,
    /// `Act` code of the gate/up epilogue (unused by the down entries).
    pub act: i32,
    /// `[S]` from moe_align (-1 for padding): with `block_m` 128, a consumer whose 64 rows
    /// are all padding skips its wgmma and writes zeros.
    pub sorted_slots: ConstI32Ptr,
    /// This GEMM's tile counter ([`tile_counter`]), zero at launch.
    pub tile_counter: I32Ptr,
    /// Local experts: the raster groups `total blocks / experts` M-blocks (moe_sched.cuh).
    pub experts: i32,
    /// 1: A boxes evict-last in L2 (evict-first from the M-block's last n-tile), kept for the
    /// other n-tiles that re-read them; 0: the normal policy ([`a_hint_requested`]).
    pub a_hint: i32,
    /// K-tiles past the ring's loads at which the producer prefetches the next boxes into L2
    /// (0: none; [`prefetch_requested`]).
    pub prefetch: i32,
}
unsafe impl DeviceRepr for MoeWgmmaParams {}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MoePermuteParams {
    /// `[tokens, x_ld]`.
    pub x: ConstBf16Ptr,
    pub x_ld: i32,
    pub top_k: i32,
    pub sorted_slots: ConstI32Ptr,
    pub total_padded: ConstI32Ptr,
    /// `[S, hidden]` out.
    pub xs: Bf16Ptr,
    /// A multiple of 8.
    pub hidden: i32,
    /// Tokens of x: CTAs below copy a token's row, the others zero padding rows.
    pub tokens: i32,
    /// `[tokens * top_k]` from moe_align: a choice's sorted row, -1 when not local.
    pub slot_to_sorted: ConstI32Ptr,
    /// The op's [`MOE_TILE_COUNTERS`] counters, zeroed by the first CTA.
    pub tile_counters: I32Ptr,
    /// Rows per M-block (64 or 128): the padding CTAs' unit.
    pub block_m: i32,
}
unsafe impl DeviceRepr for MoePermuteParams {}

pub const MOE_PERMUTE: (&str, &str) = ("moe_wgmma", "moe_permute");

/// Which of the two expert GEMMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoeWgmmaGemm {
    /// `xs . W13^T` with act-and-multiply in the epilogue.
    GateUp(Activation),
    /// `act . W2^T`.
    Down,
}

/// The entry and tile for `block_m` (64 or 128; moe.rs routes 16 to moe.cu).
/// `pairs` (block_m 128 only) picks the 2-CTA cluster entries that multicast one expert
/// weight tile to two M-blocks (kernels/moe_sched.cuh, "CTA pairs").
pub fn entry(block_m: usize, gemm: MoeWgmmaGemm, pairs: bool) -> Option<((&'static str, &'static str), MoeWgmmaTile)> {
    let gate_up = matches!(gemm, MoeWgmmaGemm::GateUp(_));
    let name = match (block_m, gate_up, pairs) {
        (128, true, false) => "moe_wgmma_gate_up_m128",
        (128, false, false) => "moe_wgmma_down_m128",
        (128, true, true) => "moe_wgmma_gate_up_m128_pair",
        (128, false, true) => "moe_wgmma_down_m128_pair",
        (64, true, _) => "moe_wgmma_gate_up_m64",
        (64, false, _) => "moe_wgmma_down_m64",
        _ => return None,
    };
    let tile = if block_m == 128 { MOE_WGMMA_TILE_M128 } else { MOE_WGMMA_TILE_M64 };
    Some((("moe_wgmma", name), tile))
}

/// One expert GEMM over the sorted rows: the operands as device addresses and dimensions.
#[derive(Debug, Clone, Copy)]
pub struct MoeWgmmaProblem {
    pub gemm: MoeWgmmaGemm,
    pub block_m: usize,
    /// Sorted A `[rows, k]`, row stride `k`.
    pub a: u64,
    pub rows: usize,
    /// `[experts, n_w, k]` with `n_w = 2I` (gate/up) or `H` (down).
    pub w: u64,
    pub experts: usize,
    /// Output columns (`I` or `H`) and depth (`H` or `I`).
    pub n: usize,
    pub k: usize,
    pub c: u64,
    pub sorted_slots: u64,
    pub block_expert: u64,
    pub total_padded: u64,
    /// M-blocks of the worst case (`moe_max_blocks`).
    pub max_blocks: usize,
    /// This GEMM's tile counter ([`tile_counter`]).
    pub tile_counter: u64,
    /// The device's SMs: the persistent grid's size (one CTA per SM).
    pub sm_count: usize,
    /// Routed rows per local expert under balanced routing (`tokens * top_k / experts_total`):
    /// picks the CTA pairs ([`pairs_chosen`]).
    pub expected_rows: usize,
}

impl MoeWgmmaProblem {
    /// Output columns one CTA covers: gate/up tiles hold `block_n / 2` channels (their gate
    /// and up rows), down tiles `block_n` columns.
    pub fn columns_per_tile(&self, tile: MoeWgmmaTile) -> usize {
        match self.gemm {
            MoeWgmmaGemm::GateUp(_) => tile.block_n as usize / 2,
            MoeWgmmaGemm::Down => tile.block_n as usize,
        }
    }

    /// The weight's tensor map: `(k, rows per half, halves, experts)`.
    fn weight_map(&self, tile: MoeWgmmaTile) -> anyhow::Result<TensorMap> {
        let halves = if matches!(self.gemm, MoeWgmmaGemm::GateUp(_)) { 2 } else { 1 };
        let (k, n) = (self.k as u64, self.n as u64);
        let layout = TensorLayout {
            base: self.w,
            dims: vec![k, n, halves, self.experts as u64],
            strides: vec![k, n * k, halves * n * k],
        };
        encode_bf16(&layout, &[BOX_INNER, tile.box_rows() as u32, 1, 1])
    }
}

/// Persistent grid: one CTA per SM (the ring takes most of an SM's shared memory), never more
/// CTAs than the worst case has tiles. CTA `b` takes live tile `b` (of `total_padded` rows'
/// M-blocks times `n_tiles`), then claims the next from the tile counter until none is left;
/// CTAs without a first tile exit at once.
/// Pairs: clusters of two CTAs over units of two M-blocks, an even grid of at most the SMs.
pub fn gemm_launch(
    tile: MoeWgmmaTile,
    n_tiles: usize,
    max_blocks: usize,
    sm_count: usize,
    pairs: bool,
) -> LaunchConfig {
    let grid = if pairs {
        2 * (n_tiles * max_blocks.div_ceil(2).max(1)).min((sm_count / 2).max(1))
    } else {
        (n_tiles * max_blocks.max(1)).min(sm_count.max(1))
    };
    LaunchConfig {
        grid_dim: (grid as u32, 1, 1),
        block_dim: (MOE_WGMMA_THREADS, 1, 1),
        shared_mem_bytes: tile.smem_bytes(),
    }
}

/// The default choice of the 2-CTA pair entries: at block_m 128 with at least two M-blocks
/// per local expert expected, where the pairs share the weight tile (M pairs: Qwen3 4096
/// -4.1%, EP8 -2.7%, session 8); with one block per expert they would pair n-tiles on the A
/// rows instead, which measured +0.5% (DeepSeek 4096), so those rows stay unpaired.
pub fn pairs_default(block_m: usize, expected_rows: usize) -> bool {
    block_m == 128 && expected_rows >= 2 * 128
}

/// `FWDBENCH_MOE_PAIRS=1` / `=0` forces the pair entries on / off (block_m 128 only);
/// otherwise [`pairs_default`].
pub fn pairs_chosen(block_m: usize, expected_rows: usize) -> bool {
    match std::env::var("FWDBENCH_MOE_PAIRS").as_deref() {
        Ok("1") => block_m == 128,
        Ok("0") => false,
        _ => pairs_default(block_m, expected_rows),
    }
}

/// The L2 prefetch distance in K-tiles ([`MoeWgmmaParams::prefetch`]): 0 (off) unless
/// `FWDBENCH_MOE_PREFETCH=<k>` sets it. Off by measurement: at distance 2 (weights and A
/// prefetched 2 K-tiles past the ring's loads) DeepSeek 4096 ran 26% slower and Qwen3 4096
/// 13% slower than with it off, same binary, same call (docs/perf.md, MoE v4b outcome).
pub fn prefetch_requested() -> i32 {
    std::env::var("FWDBENCH_MOE_PREFETCH").ok().and_then(|v| v.parse().ok()).unwrap_or(0).clamp(0, 64)
}

/// The A boxes' evict-last hint ([`MoeWgmmaParams::a_hint`]); `FWDBENCH_MOE_A_HINT=0` turns
/// it off (an A/B knob).
pub fn a_hint_requested() -> bool {
    std::env::var("FWDBENCH_MOE_A_HINT").map_or(true, |v| v != "0")
}

/// The prepared GEMM call (tensor maps encoded now, at bind time).
pub fn gemm_call(pr: &MoeWgmmaProblem) -> anyhow::Result<Call> {
    let pairs = pairs_chosen(pr.block_m, pr.expected_rows);
    let (name, tile) = entry(pr.block_m, pr.gemm, pairs)
        .ok_or_else(|| anyhow::anyhow!("no wgmma MoE GEMM for block_m {} (64 or 128)", pr.block_m))?;
    anyhow::ensure!(
        pr.n.is_multiple_of(8) && pr.k.is_multiple_of(8),
        "MoE GEMM n = {} and k = {} must be multiples of 8",
        pr.n,
        pr.k
    );
    let n_tiles = pr.n.div_ceil(pr.columns_per_tile(tile));
    let act = match pr.gemm {
        MoeWgmmaGemm::GateUp(a) => activation_code(a),
        MoeWgmmaGemm::Down => Act::None as i32,
    };
    let p = MoeWgmmaParams {
        // Pairs load A as two 64-row boxes (one of them multicast when the pair shares it).
        a: matrix_bf16(pr.a, pr.rows, pr.k, pr.k, if pairs { 64 } else { tile.block_m as u32 })?,
        b: pr.weight_map(tile)?,
        block_expert: pr.block_expert,
        total_padded: pr.total_padded,
        c: pr.c,
        c_ld: pr.n as i32,
        n: pr.n as i32,
        k: pr.k as i32,
        n_tiles: n_tiles as i32,
        act,
        sorted_slots: pr.sorted_slots,
        tile_counter: pr.tile_counter,
        experts: pr.experts as i32,
        a_hint: a_hint_requested() as i32,
        prefetch: prefetch_requested(),
    };
    Ok(kernel(name, gemm_launch(tile, n_tiles, pr.max_blocks, pr.sm_count, pairs), p))
}

/// `moe_permute`: one CTA per token, then one per M-block of the worst case (`max_blocks`;
/// blocks past `total_padded` exit).
pub fn permute_call(p: MoePermuteParams, max_blocks: usize) -> Call {
    let cfg = LaunchConfig {
        grid_dim: ((p.tokens.max(0) as usize + max_blocks).max(1) as u32, 1, 1),
        block_dim: (MOE_PERMUTE_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    kernel(MOE_PERMUTE, cfg, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_match_the_c_layout() {
        // Two 128-byte maps, three pointers, five i32, two pointers, an i32, padded to 128.
        assert_eq!(std::mem::align_of::<MoeWgmmaParams>(), 128);
        assert_eq!(std::mem::offset_of!(MoeWgmmaParams, block_expert), 256);
        assert_eq!(std::mem::offset_of!(MoeWgmmaParams, c), 272);
        assert_eq!(std::mem::offset_of!(MoeWgmmaParams, act), 296);
        assert_eq!(std::mem::offset_of!(MoeWgmmaParams, sorted_slots), 304);
        assert_eq!(std::mem::offset_of!(MoeWgmmaParams, tile_counter), 312);
        assert_eq!(std::mem::offset_of!(MoeWgmmaParams, experts), 320);
        assert_eq!(std::mem::offset_of!(MoeWgmmaParams, a_hint), 324);
        assert_eq!(std::mem::offset_of!(MoeWgmmaParams, prefetch), 328);
        assert_eq!(std::mem::size_of::<MoeWgmmaParams>(), 384);
        assert_eq!(std::mem::offset_of!(MoePermuteParams, tokens), 44);
        assert_eq!(std::mem::offset_of!(MoePermuteParams, slot_to_sorted), 48);
        assert_eq!(std::mem::offset_of!(MoePermuteParams, tile_counters), 56);
        assert_eq!(std::mem::size_of::<MoePermuteParams>(), 72);
    }

    #[test]
    fn tiles_split_n_between_consumers_and_fit_in_smem() {
        let (m128, m64) = (MOE_WGMMA_TILE_M128, MOE_WGMMA_TILE_M64);
        // m128: each consumer owns 64 rows and all 256 columns: two boxes of 128 rows.
        assert_eq!((m128.groups_n(), m128.box_rows()), (1, 128));
        // m64: both consumers share the 64 rows, each 128 columns: four boxes of 64 rows.
        assert_eq!((m64.groups_n(), m64.box_rows()), (2, 64));
        // Counted by hand: 4 * (128 + 256) * 128 + 64 + 1024; 5 * 320 * 128 + 80 + 1024.
        assert_eq!(m128.smem_bytes(), 197_696);
        assert_eq!(m64.smem_bytes(), 205_904);
        assert!(m128.smem_bytes().max(m64.smem_bytes()) <= 227 * 1024);
    }

    #[test]
    fn entries_by_block_m_and_gemm() {
        let silu = MoeWgmmaGemm::GateUp(Activation::Silu);
        assert_eq!(entry(128, silu, false).unwrap().0 .1, "moe_wgmma_gate_up_m128");
        assert_eq!(entry(128, silu, true).unwrap().0 .1, "moe_wgmma_gate_up_m128_pair");
        assert_eq!(entry(128, MoeWgmmaGemm::Down, true).unwrap().0 .1, "moe_wgmma_down_m128_pair");
        assert_eq!(entry(64, MoeWgmmaGemm::Down, false).unwrap().0 .1, "moe_wgmma_down_m64");
        // block_m 64 has no pair entry: its tile is one M-block across both consumers.
        assert_eq!(entry(64, MoeWgmmaGemm::Down, true).unwrap().0 .1, "moe_wgmma_down_m64");
        assert_eq!(entry(64, MoeWgmmaGemm::Down, false).unwrap().1, MOE_WGMMA_TILE_M64);
        assert!(entry(16, silu, false).is_none());
    }

    fn problem(gemm: MoeWgmmaGemm, block_m: usize, n: usize, k: usize) -> MoeWgmmaProblem {
        MoeWgmmaProblem {
            gemm,
            block_m,
            a: 0,
            rows: 0,
            w: 0,
            experts: 256,
            n,
            k,
            c: 0,
            sorted_slots: 0,
            block_expert: 0,
            total_padded: 0,
            max_blocks: 0,
            tile_counter: 0,
            sm_count: 132,
            expected_rows: 128,
        }
    }

    #[test]
    fn pairs_by_default_only_where_an_expert_has_two_blocks() {
        // DeepSeek-V3 4096 x 8 / 256 = 128 rows per expert: one block, no pairs; Qwen3-235B
        // 4096 x 8 / 128 = 256: M pairs; 16384 tokens: 512 / 1024; block_m 64 never.
        assert!(!pairs_default(128, 128));
        assert!(pairs_default(128, 256) && pairs_default(128, 1024));
        assert!(!pairs_default(64, 1024));
    }

    #[test]
    fn shapes_without_a_kernel_are_refused_before_any_driver_call() {
        let message = |pr: MoeWgmmaProblem| gemm_call(&pr).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message(problem(MoeWgmmaGemm::Down, 16, 512, 512)).contains("block_m 16"));
        assert!(message(problem(MoeWgmmaGemm::Down, 128, 100, 512)).contains("multiples of 8"));
        assert!(message(problem(MoeWgmmaGemm::Down, 64, 512, 36)).contains("multiples of 8"));
    }

    #[test]
    fn gate_up_tiles_cover_channels_and_down_tiles_columns() {
        // DeepSeek-V3: I 2048 channels in tiles of 128, H 7168 columns in tiles of 256.
        let up = problem(MoeWgmmaGemm::GateUp(Activation::Silu), 128, 2048, 7168);
        assert_eq!(2048usize.div_ceil(up.columns_per_tile(MOE_WGMMA_TILE_M128)), 16);
        let down = problem(MoeWgmmaGemm::Down, 128, 7168, 2048);
        assert_eq!(7168usize.div_ceil(down.columns_per_tile(MOE_WGMMA_TILE_M128)), 28);
        // Persistent: one CTA per SM, fewer when the worst case has fewer tiles.
        let cfg = gemm_launch(MOE_WGMMA_TILE_M128, 28, 400, 132, false);
        assert_eq!(cfg.grid_dim, (132, 1, 1));
        assert_eq!(cfg.block_dim, (384, 1, 1));
        assert_eq!(gemm_launch(MOE_WGMMA_TILE_M64, 3, 5, 132, false).grid_dim, (15, 1, 1));
        assert_eq!(gemm_launch(MOE_WGMMA_TILE_M64, 3, 0, 132, false).grid_dim, (3, 1, 1));
        // Pairs: whole clusters, at most the SMs, at most two CTAs per unit tile (5 blocks
        // make 3 units).
        assert_eq!(gemm_launch(MOE_WGMMA_TILE_M128, 28, 400, 132, true).grid_dim, (132, 1, 1));
        assert_eq!(gemm_launch(MOE_WGMMA_TILE_M128, 28, 400, 131, true).grid_dim, (130, 1, 1));
        assert_eq!(gemm_launch(MOE_WGMMA_TILE_M128, 3, 5, 132, true).grid_dim, (18, 1, 1));
        assert_eq!(gemm_launch(MOE_WGMMA_TILE_M128, 3, 0, 132, true).grid_dim, (6, 1, 1));
    }
}
