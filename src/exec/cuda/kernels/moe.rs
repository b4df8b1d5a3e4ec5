//! Launch parameters and sizes for `kernels/moe.cu` (and, for prefill-sized batches,
//! `kernels/moe_wgmma.cu`, see [`super::moe_wgmma`]): the routed experts a rank owns, as a
//! fused-MoE pipeline of grouped GEMMs (bf16 in and out, fp32 accumulation).
//!
//! # Call sequence (one stream, graph-capturable)
//!
//! Sizes are worst cases fixed by the captured batch size `T`, never by the routing, so
//! nothing is read back to the host. With `k = top_k`, `E = num_local_experts`, `e0` the
//! first local expert id, `H` hidden, `I` the expert intermediate size (per rank, after any
//! moe_tp split) and `bm = choose_block_m(T, k, num_experts)`:
//!
//! | buffer | dtype | elements |
//! | --- | --- | --- |
//! | `sorted_slots` | i32 | `S = moe_max_sorted(T, k, E, bm)` |
//! | `block_expert` | i32 | `moe_max_blocks(T, k, E, bm)` = `S / bm` |
//! | `slot_to_sorted` | i32 | `T * k` |
//! | `total_padded`, then the GEMMs' tile counters | i32 | 1 + `MOE_TILE_COUNTERS` |
//! | `h13` (gate ‖ up) | bf16 | `S * 2I` for `bm = 16`, else none |
//! | `act` | bf16 | `S * I` |
//! | `c2` (expert outputs, sorted; `xs` before the down GEMM) | bf16 | `S * H` |
//!
//! `bm` 64 and 128 run the TMA + wgmma path instead of steps 2-4 below: `moe_permute` gathers
//! x into `xs` (c2's space), one GEMM writes `act` with the activation in its epilogue, the
//! down GEMM writes `c2` (module [`super::moe_wgmma`]); align and combine are shared.
//!
//! 1. `moe_align` ([`MOE_ALIGN`], [`moe_align_launch`]): `topk_ids [T, k]` → the slots
//!    `t*k + j` grouped by local expert in slot order, each group padded to a multiple of
//!    `bm` (`sorted_slots`, `-1` for padding), `block_expert`, `slot_to_sorted`,
//!    `total_padded`. Under `FWDBENCH_MOE_ALIGN=v2` ([`align_v2_requested`]) the same from
//!    two launches, `moe_align_count` and `moe_align_place` ([`moe_align_v2_launch`]), over
//!    per-chunk expert counts (`align_counts`).
//! 2. `moe_gemm_m16` ([`moe_gemm_entry`], [`moe_gemm_launch`]) with `a = x` (`a_ld` = x's
//!    row stride), `a_rows_are_tokens = 1`, `w = W13 [E, 2I, H]`, `w_expert_stride = 2I*H`,
//!    `n = 2I`, `k = H`, `c = h13`, `c_ld = 2I`.
//! 3. `act_mul` (kernels/act.cu) over all `S` rows of `h13` → `act`: `act(h13[r, 0:I]) *
//!    h13[r, I:2I]` (SiLU for DeepSeek/Qwen/Sigma, GELU for Grok). Padding rows hold garbage
//!    and produce garbage; nothing downstream reads them.
//! 4. `moe_gemm_m16` with `a = act`, `a_ld = I`, `a_rows_are_tokens = 0`,
//!    `w = W2 [E, H, I]`, `w_expert_stride = H*I`, `n = H`, `k = I`, `c = c2`, `c_ld = H`.
//! 5. `moe_combine` ([`MOE_COMBINE`], [`moe_combine_launch`]): `y[t] = (accumulate ? y[t] :
//!    0) + Σ_j w[t,j] · c2[slot_to_sorted[t*k+j]]` over the local choices; under expert
//!    parallelism the engine then all-reduces `y`.
//!
//! Both GEMMs must use the entry whose `block_m` was given to `moe_align`. On the `bm = 16`
//! path padding rows of `h13`, `act` and `c2` are never written; the GEMM zero-fills padding
//! rows of A instead of reading them, so poisoned (NaN) buffers are fine. The wgmma path
//! writes zeros there instead.
//!
//! Before the first launch of a GEMM entry, raise its dynamic shared memory limit
//! (`CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`) to [`MoeGemmTile::smem_bytes`].

use cudarc::driver::LaunchConfig;

use super::act::act_mul_call;
use super::moe_fp8::{order_requested, smem_scales_requested, Fp8Pairs, MoeFp8Pipeline};
use super::moe_wgmma::{self, MoePermuteParams, MoeWgmmaGemm, MoeWgmmaProblem};
use super::prepare::{kernel, Call, Prep};
use super::ptr::{Bf16Ptr, ConstBf16Ptr, ConstF32Ptr, ConstI32Ptr, I32Ptr};
use crate::config::model::Activation;
use crate::plan::{Op, Plan};

/// Threads per CTA of the align kernels (their launch bounds in moe.cu).
pub const MOE_ALIGN_THREADS: u32 = 512;
/// Consecutive slots one warp of the v2 align kernels counts and places (a row of
/// `align_counts`).
pub const MOE_ALIGN_CHUNK: u32 = 1024;
/// Threads per CTA of `moe_combine`.
pub const MOE_COMBINE_THREADS: u32 = 256;
/// Largest `top_k` `moe_combine` accepts (its shared arrays are this long).
pub const MOE_MAX_TOP_K: usize = 32;
/// CUDA's limit on `gridDim.y`, which carries the m-blocks of the GEMM.
const MAX_GRID_Y: usize = 65_535;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MoeAlignParams {
    /// `[tokens, top_k]` global expert ids.
    pub topk_ids: ConstI32Ptr,
    pub tokens: i32,
    pub top_k: i32,
    /// First global expert id this rank owns.
    pub expert_start: i32,
    pub num_local_experts: i32,
    /// 16, 64 or 128: the `block_m` of the GEMM entry that follows.
    pub block_m: i32,
    /// `[max_sorted]` out: slot index `t*k + j`, or -1 for padding.
    pub sorted_slots: I32Ptr,
    /// `[max_sorted / block_m]` out: local expert of each m-block, or -1.
    pub block_expert: I32Ptr,
    /// `[tokens * top_k]` out: sorted position, or -1 when not local.
    pub slot_to_sorted: I32Ptr,
    /// `[1]` out: sorted rows in use (a multiple of block_m).
    pub total_padded: I32Ptr,
    /// [`moe_max_sorted`] for this batch.
    pub max_sorted: i32,
    /// `[align_chunks(tokens * top_k), num_local_experts]` (v2 only): `moe_align_count`
    /// writes each warp chunk's slots per local expert, `moe_align_place` reads them.
    pub counts: I32Ptr,
    /// v2, 1: `moe_align_place` counts the chunks itself (one CTA of them, no
    /// `moe_align_count` launch; [`moe_align_v2_launch`] gives `None` for it).
    pub fused_count: i32,
}
unsafe impl cudarc::driver::DeviceRepr for MoeAlignParams {}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MoeGemmParams {
    /// A rows: tokens (`a_rows_are_tokens = 1`: sorted row r reads row
    /// `sorted_slots[r] / top_k`) or sorted rows (0).
    pub a: ConstBf16Ptr,
    /// Row stride of `a` in elements, a multiple of 8.
    pub a_ld: i32,
    pub a_rows_are_tokens: i32,
    pub top_k: i32,
    pub sorted_slots: ConstI32Ptr,
    pub block_expert: ConstI32Ptr,
    pub total_padded: ConstI32Ptr,
    /// `[E_local, n, k]` row-major (`[out, in]` per expert).
    pub w: ConstBf16Ptr,
    /// Elements between consecutive experts in `w` (int64).
    pub w_expert_stride: i64,
    /// Output features; any value (masked).
    pub n: i32,
    /// Input features; a multiple of 8.
    pub k: i32,
    /// `[max_sorted, c_ld]`, sorted order; padding rows untouched.
    pub c: Bf16Ptr,
    pub c_ld: i32,
    /// Grid height: [`moe_max_blocks`].
    pub max_blocks_m: i32,
}
unsafe impl cudarc::driver::DeviceRepr for MoeGemmParams {}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MoeCombineParams {
    /// `[max_sorted, c2_ld]`, expert outputs in sorted order.
    pub c2: ConstBf16Ptr,
    pub c2_ld: i32,
    /// `[tokens * top_k]`.
    pub slot_to_sorted: ConstI32Ptr,
    /// `[tokens, top_k]`.
    pub topk_weights: ConstF32Ptr,
    pub tokens: i32,
    /// At most [`MOE_MAX_TOP_K`].
    pub top_k: i32,
    pub hidden: i32,
    /// `[tokens, y_ld]`.
    pub y: Bf16Ptr,
    pub y_ld: i32,
    /// 1: `y += routed sum`; 0: `y = routed sum`.
    pub accumulate: i32,
}
unsafe impl cudarc::driver::DeviceRepr for MoeCombineParams {}

pub const MOE_ALIGN: (&str, &str) = ("moe", "moe_align");
pub const MOE_ALIGN_COUNT: (&str, &str) = ("moe", "moe_align_count");
pub const MOE_ALIGN_PLACE: (&str, &str) = ("moe", "moe_align_place");
pub const MOE_GEMM_M16: (&str, &str) = ("moe", "moe_gemm_m16");
pub const MOE_COMBINE: (&str, &str) = ("moe", "moe_combine");

/// Shape errors caught before a launch (the kernels assume them and would read out of
/// bounds or misalign their 16-byte copies otherwise).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoeShapeError {
    #[error("MoE GEMM block_m {0} has no mma.sync kernel; use 16 (64 and 128 run on moe_wgmma)")]
    UnsupportedBlockM(usize),
    #[error("MoE GEMM {what} = {value} must be a multiple of 8 (16-byte rows); pad the buffer or the model dimension")]
    NotMultipleOf8 { what: &'static str, value: usize },
    #[error(
        "MoE GEMM needs {blocks} m-blocks, over CUDA's grid limit of 65535; split the batch or use a larger block_m"
    )]
    TooManyBlocks { blocks: usize },
    #[error("MoE top_k {0} is over the kernels' limit of 32")]
    TopKTooLarge(usize),
}

/// K per pipeline stage of every GEMM entry.
pub const MOE_GEMM_BLOCK_K: i32 = 64;

/// Compile-time shape of one GEMM entry: moe.cu instantiates its `MoeGemmConfig` from these
/// constants (through the generated header), [`moe_gemm_entry`] sizes the launch from them.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeGemmShape {
    pub block_m: i32,
    pub block_n: i32,
    /// Warp grid over (M, N, K); K-split warps reduce through shared memory.
    pub warps_m: i32,
    pub warps_n: i32,
    pub warps_k: i32,
    /// cp.async pipeline depth.
    pub stages: i32,
}
pub const MOE_TILE_M16: MoeGemmShape =
    MoeGemmShape { block_m: 16, block_n: 32, warps_m: 1, warps_n: 1, warps_k: 4, stages: 8 };

/// One GEMM entry's tile and launch shape, from its [`MoeGemmShape`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeGemmTile {
    pub entry: (&'static str, &'static str),
    pub block_m: usize,
    pub block_n: usize,
    pub threads: u32,
    /// Dynamic shared memory per CTA (above 48 KiB: raise the function's limit first).
    pub smem_bytes: u32,
}

impl MoeGemmTile {
    /// Shared memory is the bf16 pipeline, `stages * (BM + BN) * BK * 2` bytes (moe.cu asserts
    /// that the K-split reduction fits inside it).
    const fn new(entry: (&'static str, &'static str), s: MoeGemmShape) -> Self {
        MoeGemmTile {
            entry,
            block_m: s.block_m as usize,
            block_n: s.block_n as usize,
            threads: (32 * s.warps_m * s.warps_n * s.warps_k) as u32,
            smem_bytes: (s.stages * (s.block_m + s.block_n) * MOE_GEMM_BLOCK_K * 2) as u32,
        }
    }
}

/// The mma.sync GEMM entry for `block_m` (only 16, decode's weight streaming).
pub fn moe_gemm_entry(block_m: usize) -> Result<MoeGemmTile, MoeShapeError> {
    match block_m {
        16 => Ok(MoeGemmTile::new(MOE_GEMM_M16, MOE_TILE_M16)),
        other => Err(MoeShapeError::UnsupportedBlockM(other)),
    }
}

/// Rows of the sorted buffers: every local (token, choice) pair plus, per expert that can be
/// non-empty, up to `block_m - 1` padding rows. At most `min(E, T*k)` experts are non-empty,
/// which keeps decode buffers (and the GEMM grid) small; at least one block so grids are
/// never empty.
pub fn moe_max_sorted(tokens: usize, top_k: usize, num_local_experts: usize, block_m: usize) -> usize {
    let slots = tokens * top_k;
    let nonempty_groups = num_local_experts.min(slots);
    let rows = slots + nonempty_groups * (block_m - 1);
    rows.div_ceil(block_m).max(1) * block_m
}

/// m-blocks of the sorted buffers (`block_expert` length, GEMM grid height).
pub fn moe_max_blocks(tokens: usize, top_k: usize, num_local_experts: usize, block_m: usize) -> usize {
    moe_max_sorted(tokens, top_k, num_local_experts, block_m) / block_m
}

/// `block_m` for a batch, from the expected rows per expert `T*k/num_experts`.
/// `num_experts` is the model's routed expert count (not the local count: under expert
/// parallelism an expert's expected load is the same, the rank just owns fewer experts).
/// Few rows: 16, the weight-streaming decode kernel (its padding costs no HBM bytes, only
/// tensor-core time that is free there). Up to ~96 rows: 64. More: 128, the prefill tile
/// (64 and 128 are the wgmma kernels of moe_wgmma.cu).
pub fn choose_block_m(tokens: usize, top_k: usize, num_experts: usize) -> usize {
    let rows_per_expert = (tokens * top_k) as f64 / num_experts.max(1) as f64;
    if rows_per_expert <= 8.0 {
        16
    } else if rows_per_expert <= 96.0 {
        64
    } else {
        128
    }
}

/// [`choose_block_m`] for FP8 experts: at least 64, since moe_fp8.cu has no decode tile (its
/// quantized operands fit in the bf16 buffers, see moe_fp8.rs).
pub fn choose_block_m_fp8(tokens: usize, top_k: usize, num_experts: usize) -> usize {
    choose_block_m(tokens, top_k, num_experts).max(64)
}

/// One CTA per local expert (each counts all slots, then places its own group).
pub fn moe_align_launch(num_local_experts: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (num_local_experts.max(1) as u32, 1, 1),
        block_dim: (MOE_ALIGN_THREADS, 1, 1),
        shared_mem_bytes: (4 * num_local_experts) as u32,
    }
}

/// `FWDBENCH_MOE_ALIGN=v2`: the align in two launches over warp chunks (moe.cu, "moe_align
/// v2"; one launch up to 16 chunks). Off by default: checked on the GPU (one CTA and several),
/// faster than v1 from 4096 tokens, but as first measured its code (160 KB, fetched cold
/// after each L2 flush) cost decode ~45 us a layer; the 29 KB version is yet to be timed
/// (docs/perf.md, session 16).
pub fn align_v2_requested() -> bool {
    std::env::var("FWDBENCH_MOE_ALIGN").as_deref() == Ok("v2")
}

/// Warp chunks of [`MOE_ALIGN_CHUNK`] slots (rows of `align_counts`) for `slots` slots.
pub fn align_chunks(slots: usize) -> usize {
    slots.div_ceil(MOE_ALIGN_CHUNK as usize).max(1)
}

/// The v2 align launches for `slots` slots over `num_local_experts`: one warp per chunk,
/// [`MOE_ALIGN_THREADS`] / 32 a CTA; shared memory is a row of counts (then positions) per
/// warp, and for `moe_align_place` the group offsets and counts. With one CTA of chunks the
/// count launch is `None`: the placing CTA counts first (`fused_count`), one launch as v1.
pub fn moe_align_v2_launch(slots: usize, num_local_experts: usize) -> (Option<LaunchConfig>, LaunchConfig) {
    let warps = (MOE_ALIGN_THREADS / 32) as usize;
    let grid = (align_chunks(slots).div_ceil(warps) as u32, 1, 1);
    let e = num_local_experts.max(1);
    let cfg = |ints: usize| LaunchConfig {
        grid_dim: grid,
        block_dim: (MOE_ALIGN_THREADS, 1, 1),
        shared_mem_bytes: (4 * ints) as u32,
    };
    let count = (grid.0 > 1).then(|| cfg(warps * e));
    (count, cfg(warps * e + 2 * e + 1))
}

/// Checks what the GEMM assumes: `k`, `a_ld` multiples of 8 and a grid height CUDA accepts.
pub fn check_moe_gemm(k: usize, a_ld: usize, max_blocks_m: usize) -> Result<(), MoeShapeError> {
    if !k.is_multiple_of(8) {
        return Err(MoeShapeError::NotMultipleOf8 { what: "k", value: k });
    }
    if !a_ld.is_multiple_of(8) {
        return Err(MoeShapeError::NotMultipleOf8 { what: "a_ld", value: a_ld });
    }
    if max_blocks_m > MAX_GRID_Y {
        return Err(MoeShapeError::TooManyBlocks { blocks: max_blocks_m });
    }
    Ok(())
}

/// Grid `(ceil(n / BN), max_blocks_m)`; blocks past `total_padded` exit at once.
pub fn moe_gemm_launch(block_m: usize, n: usize, max_blocks_m: usize) -> Result<LaunchConfig, MoeShapeError> {
    let tile = moe_gemm_entry(block_m)?;
    if max_blocks_m > MAX_GRID_Y {
        return Err(MoeShapeError::TooManyBlocks { blocks: max_blocks_m });
    }
    Ok(LaunchConfig {
        grid_dim: (n.div_ceil(tile.block_n) as u32, max_blocks_m.max(1) as u32, 1),
        block_dim: (tile.threads, 1, 1),
        shared_mem_bytes: tile.smem_bytes,
    })
}

/// One CTA per token.
pub fn moe_combine_launch(tokens: usize, top_k: usize) -> Result<LaunchConfig, MoeShapeError> {
    if top_k > MOE_MAX_TOP_K {
        return Err(MoeShapeError::TopKTooLarge(top_k));
    }
    Ok(LaunchConfig {
        grid_dim: (tokens.max(1) as u32, 1, 1),
        block_dim: (MOE_COMBINE_THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Byte offsets of the MoE pipeline's buffers in the plan's scratch (the table above), each
/// 256-byte aligned. The memory planner sizes the scratch with [`MoeScratch::layout`] and
/// `prepare` carves it with the same call, so the two cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeScratch {
    pub sorted: usize,
    /// `moe_align_count`'s per-chunk expert counts.
    pub align_counts: usize,
    pub block_expert: usize,
    pub slot_to_sorted: usize,
    pub total: usize,
    /// Gate/up outputs of the `block_m = 16` path (zero bytes on the wgmma path, whose
    /// gate/up GEMM writes `hact` directly).
    pub h13: usize,
    pub hact: usize,
    pub c2: usize,
    /// The permuted tokens of the wgmma path: c2's bytes, which hold nothing until the down
    /// GEMM writes c2, after the gate/up GEMM has read `xs`.
    pub xs: usize,
    /// `block_m` the layout was sized for, `moe_max_sorted` rows and `moe_max_blocks` blocks.
    pub block_m: usize,
    pub max_sorted: usize,
    pub blocks: usize,
}

impl MoeScratch {
    /// The layout for `tokens` tokens with `top_k` choices over `local_experts` of
    /// `experts_total` experts, expert intermediate size `inter`; returns it and its bytes.
    pub fn layout(
        tokens: usize,
        top_k: usize,
        local_experts: usize,
        experts_total: usize,
        inter: usize,
        hidden: usize,
    ) -> (Self, usize) {
        let block_m = choose_block_m(tokens, top_k, experts_total.max(1));
        Self::with_block_m(block_m, tokens, top_k, local_experts, inter, hidden)
    }

    /// The layout for a given `block_m` (what [`Self::layout`] and, for FP8, [`Self::of`] use).
    pub fn with_block_m(
        block_m: usize,
        tokens: usize,
        top_k: usize,
        local_experts: usize,
        inter: usize,
        hidden: usize,
    ) -> (Self, usize) {
        let max_sorted = moe_max_sorted(tokens, top_k, local_experts, block_m);
        let blocks = moe_max_blocks(tokens, top_k, local_experts, block_m);
        let h13_rows = if uses_wgmma(block_m) { 0 } else { max_sorted };
        let mut end = 0;
        let mut carve = |bytes: usize| {
            let at = end;
            end += bytes.div_ceil(SCRATCH_ALIGN) * SCRATCH_ALIGN;
            at
        };
        let layout = MoeScratch {
            sorted: carve(max_sorted * 4),
            align_counts: carve(align_chunks(tokens * top_k) * local_experts * 4),
            block_expert: carve(blocks * 4),
            slot_to_sorted: carve(tokens * top_k * 4),
            // total_padded, then the GEMMs' tile counters (moe_wgmma::MOE_TILE_COUNTERS).
            total: carve(4 * (1 + moe_wgmma::MOE_TILE_COUNTERS as usize)),
            h13: carve(h13_rows * 2 * inter * 2),
            hact: carve(max_sorted * inter * 2),
            c2: carve(max_sorted * hidden * 2),
            xs: 0,
            block_m,
            max_sorted,
            blocks,
        };
        (MoeScratch { xs: layout.c2, ..layout }, end)
    }

    /// The layout an `Op::Moe` of `plan` uses.
    pub fn of(plan: &Plan, op: &Op) -> (Self, usize) {
        let Op::Moe { x, w13, w2, local_experts, top_k, inter, experts_total, .. } = op else {
            unreachable!("MoeScratch::of got {op:?}")
        };
        let (t, hidden) = (plan.rows(*x), plan.weight(*w2).rows);
        if plan.weight(*w13).dtype != crate::plan::DType::F8E4M3 {
            return Self::layout(t, *top_k, *local_experts, *experts_total, *inter, hidden);
        }
        let block_m = choose_block_m_fp8(t, *top_k, *experts_total);
        Self::with_block_m(block_m, t, *top_k, *local_experts, *inter, hidden)
    }
}

const SCRATCH_ALIGN: usize = 256;

/// Whether the GEMMs for `block_m` are moe_wgmma.cu's (64, 128) rather than moe.cu's (16).
pub fn uses_wgmma(block_m: usize) -> bool {
    block_m != 16
}

/// Device addresses and dimensions both GEMM paths of one `Op::Moe` read.
struct MoeGemms {
    x: u64,
    x_ld: usize,
    tokens: usize,
    slot_to_sorted: u64,
    w13: u64,
    w2: u64,
    experts: usize,
    /// The model's routed experts (all ranks): with `tokens * top_k` the rows per expert.
    experts_total: usize,
    top_k: usize,
    hidden: usize,
    inter: usize,
    act: Activation,
    sorted: u64,
    block_expert: u64,
    total: u64,
    h13: u64,
    hact: u64,
    c2: u64,
    xs: u64,
    s: MoeScratch,
    sm_count: usize,
}

impl MoeGemms {
    /// `bm = 16`: moe.cu's gathered gate/up GEMM, act_mul, down GEMM.
    fn mma(&self) -> anyhow::Result<Vec<Call>> {
        let (bm, blocks) = (self.s.block_m, self.s.blocks);
        let tile = moe_gemm_entry(bm)?;
        let (hidden, inter) = (self.hidden, self.inter);
        let params = |a, a_ld: usize, gathered: bool, w, n: usize, k: usize, c| MoeGemmParams {
            a,
            a_ld: a_ld as i32,
            a_rows_are_tokens: gathered as i32,
            top_k: self.top_k as i32,
            sorted_slots: self.sorted,
            block_expert: self.block_expert,
            total_padded: self.total,
            w,
            w_expert_stride: (n * k) as i64,
            n: n as i32,
            k: k as i32,
            c,
            c_ld: n as i32,
            max_blocks_m: blocks as i32,
        };
        let gate_up = params(self.x, self.x_ld, true, self.w13, 2 * inter, hidden, self.h13);
        let gate_up = kernel(tile.entry, moe_gemm_launch(bm, 2 * inter, blocks)?, gate_up);
        let h13_ld = (2 * inter) as i32;
        let activate = act_mul_call(self.h13, h13_ld, self.hact, inter as i32, self.s.max_sorted, inter, self.act);
        let down = params(self.hact, inter, false, self.w2, hidden, inter, self.c2);
        let down = kernel(tile.entry, moe_gemm_launch(bm, hidden, blocks)?, down);
        Ok(vec![gate_up, activate, down])
    }

    /// FP8 weights (any batch; `bm` >= 64): moe_fp8.cu's quantizing permute and GEMMs.
    fn fp8(&self) -> anyhow::Result<Vec<Call>> {
        MoeFp8Pipeline {
            x: self.x,
            x_ld: self.x_ld,
            tokens: self.tokens,
            slot_to_sorted: self.slot_to_sorted,
            top_k: self.top_k,
            w13: self.w13,
            w2: self.w2,
            experts: self.experts,
            hidden: self.hidden,
            inter: self.inter,
            act: self.act,
            sorted: self.sorted,
            block_expert: self.block_expert,
            total: self.total,
            xs: self.xs,
            hact: self.hact,
            c2: self.c2,
            block_m: self.s.block_m,
            max_sorted: self.s.max_sorted,
            blocks: self.s.blocks,
            sm_count: self.sm_count,
            pairs: Fp8Pairs::requested(),
            order: order_requested(),
            smem_scales: smem_scales_requested(),
        }
        .calls()
    }

    /// `bm` 64 and 128: moe_wgmma.cu's permute, gate/up GEMM with the activation in its
    /// epilogue, down GEMM.
    fn wgmma(&self) -> anyhow::Result<Vec<Call>> {
        anyhow::ensure!(
            self.x.is_multiple_of(16),
            "the MoE input rows must start on 16-byte boundaries for moe_permute (x at {:#x})",
            self.x
        );
        let s = &self.s;
        let permute = MoePermuteParams {
            x: self.x,
            x_ld: self.x_ld as i32,
            top_k: self.top_k as i32,
            sorted_slots: self.sorted,
            total_padded: self.total,
            xs: self.xs,
            hidden: self.hidden as i32,
            tokens: self.tokens as i32,
            slot_to_sorted: self.slot_to_sorted,
            tile_counters: moe_wgmma::tile_counters(self.total),
            block_m: s.block_m as i32,
        };
        let problem = |gemm, a, w, n, k, c| MoeWgmmaProblem {
            gemm,
            block_m: s.block_m,
            a,
            rows: s.max_sorted,
            w,
            experts: self.experts,
            n,
            k,
            c,
            sorted_slots: self.sorted,
            block_expert: self.block_expert,
            total_padded: self.total,
            max_blocks: s.blocks,
            tile_counter: moe_wgmma::tile_counter(self.total, matches!(gemm, MoeWgmmaGemm::Down)),
            sm_count: self.sm_count,
            expected_rows: self.tokens * self.top_k / self.experts_total.max(1),
        };
        let gate_up = MoeWgmmaGemm::GateUp(self.act);
        let gate_up = problem(gate_up, self.xs, self.w13, self.inter, self.hidden, self.hact);
        let down = problem(MoeWgmmaGemm::Down, self.hact, self.w2, self.hidden, self.inter, self.c2);
        Ok(vec![
            moe_wgmma::permute_call(permute, s.blocks),
            moe_wgmma::gemm_call(&gate_up)?,
            moe_wgmma::gemm_call(&down)?,
        ])
    }
}

/// `Op::Moe`: align, the grouped GEMMs (see [`MoeGemms`]), combine.
pub fn prepare(cx: &mut Prep, op: &Op) -> anyhow::Result<Vec<Call>> {
    let Op::Moe {
        x, ids, weights, w13, w2, expert_start, local_experts, top_k, inter, act, out, experts_total, ..
    } = op
    else {
        unreachable!("moe::prepare got {op:?}")
    };
    let t = cx.rows(*x) as usize;
    let hidden = cx.plan.weight(*w2).rows;
    let (s, _) = MoeScratch::of(cx.plan, op);
    let at = |offset: usize| cx.scratch + offset as u64;
    let (bm, blocks, max_sorted) = (s.block_m, s.blocks, s.max_sorted);
    let (sorted, block_expert, total) = (at(s.sorted), at(s.block_expert), at(s.total));
    let slot_to_sorted = at(s.slot_to_sorted);
    check_moe_gemm(hidden, cx.ld(*x) as usize, blocks)?;
    check_moe_gemm(*inter, *inter, blocks)?;
    let p = MoeAlignParams {
        topk_ids: cx.ptr(*ids),
        tokens: t as i32,
        top_k: *top_k as i32,
        expert_start: *expert_start as i32,
        num_local_experts: *local_experts as i32,
        block_m: bm as i32,
        sorted_slots: sorted,
        block_expert,
        slot_to_sorted,
        total_padded: total,
        max_sorted: max_sorted as i32,
        counts: at(s.align_counts),
        fused_count: 0,
    };
    let align = if align_v2_requested() {
        match moe_align_v2_launch(t * *top_k, *local_experts) {
            (Some(count), place) => vec![kernel(MOE_ALIGN_COUNT, count, p), kernel(MOE_ALIGN_PLACE, place, p)],
            (None, place) => vec![kernel(MOE_ALIGN_PLACE, place, MoeAlignParams { fused_count: 1, ..p })],
        }
    } else {
        vec![kernel(MOE_ALIGN, moe_align_launch(*local_experts), p)]
    };
    let gemms = MoeGemms {
        x: cx.ptr(*x),
        x_ld: cx.ld(*x) as usize,
        tokens: t,
        slot_to_sorted,
        w13: cx.w(*w13),
        w2: cx.w(*w2),
        experts: *local_experts,
        experts_total: *experts_total,
        top_k: *top_k,
        hidden,
        inter: *inter,
        act: *act,
        sorted,
        block_expert,
        total,
        h13: at(s.h13),
        hact: at(s.hact),
        c2: at(s.c2),
        xs: at(s.xs),
        s,
        sm_count: cx.sm_count().max(1) as usize,
    };
    let mut calls = align;
    calls.extend(if cx.plan.weight(*w13).dtype == crate::plan::DType::F8E4M3 {
        gemms.fp8()?
    } else if uses_wgmma(bm) {
        gemms.wgmma()?
    } else {
        gemms.mma()?
    });
    let p = MoeCombineParams {
        c2: gemms.c2,
        c2_ld: hidden as i32,
        slot_to_sorted,
        topk_weights: cx.ptr(*weights),
        tokens: t as i32,
        top_k: *top_k as i32,
        hidden: hidden as i32,
        y: cx.ptr(*out),
        y_ld: cx.ld(*out),
        accumulate: 0,
    };
    calls.push(kernel(MOE_COMBINE, moe_combine_launch(t, *top_k)?, p));
    Ok(calls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decode_gemm_tile_follows_its_shape() {
        // Counted by hand: 8 * (16 + 32) * 64 * 2 bytes, 4 K-split warps.
        let tile = moe_gemm_entry(16).unwrap();
        assert_eq!((tile.smem_bytes, tile.threads, tile.block_n), (49_152, 128, 32));
        // The prefill sizes are moe_wgmma's; moe.cu no longer has them.
        assert!(moe_gemm_entry(64).is_err() && moe_gemm_entry(128).is_err());
        assert!(uses_wgmma(64) && uses_wgmma(128) && !uses_wgmma(16));
    }

    #[test]
    fn block_m_follows_rows_per_expert() {
        // DeepSeek-V3 (256 experts, k 8): decode, mid, prefill.
        assert_eq!(choose_block_m(1, 8, 256), 16);
        assert_eq!(choose_block_m(64, 8, 256), 16);
        assert_eq!(choose_block_m(1024, 8, 256), 64);
        assert_eq!(choose_block_m(4096, 8, 256), 128);
        // Grok-1 (8 experts, k 2): even a small batch fills blocks.
        assert_eq!(choose_block_m(512, 2, 8), 128);
    }

    #[test]
    fn align_launches_one_warp_per_chunk() {
        // DeepSeek-V3 at 16384 tokens: 131072 slots, 128 chunks, 8 CTAs of 16 warps.
        assert_eq!(align_chunks(16384 * 8), 128);
        let (count, place) = moe_align_v2_launch(16384 * 8, 256);
        let count = count.expect("8 CTAs of chunks: a count launch");
        assert_eq!((count.grid_dim.0, place.grid_dim.0), (8, 8));
        assert_eq!((count.shared_mem_bytes, place.shared_mem_bytes), (16 * 256 * 4, (16 * 256 + 2 * 256 + 1) * 4));
        // One token still gets a chunk and a CTA, which counts it itself (one launch); so do
        // 16384 slots, and one more slot needs a second CTA and the count launch.
        let (count, place) = moe_align_v2_launch(8, 32);
        assert_eq!((align_chunks(8), count.is_none(), place.grid_dim.0), (1, true, 1));
        assert!(moe_align_v2_launch(16384, 256).0.is_none());
        assert_eq!(moe_align_v2_launch(16385, 256).0.map(|c| c.grid_dim.0), Some(2));
        assert_eq!(moe_align_launch(256).grid_dim.0, 256);
        assert_eq!(align_chunks(1025), 2);
    }

    #[test]
    fn decode_buffers_stay_small() {
        // T = 1, k = 8, 256 experts: at most 8 non-empty groups of one 16-row block.
        assert_eq!(moe_max_sorted(1, 8, 256, 16), 128);
        assert_eq!(moe_max_blocks(1, 8, 256, 16), 8);
    }

    #[test]
    fn scratch_layout_is_aligned_disjoint_and_sized() {
        // DeepSeek-V3 decode on one rank: T 1, k 8, 256 experts, I 2048, H 7168.
        let (s, bytes) = MoeScratch::layout(1, 8, 256, 256, 2048, 7168);
        assert_eq!((s.block_m, s.max_sorted, s.blocks), (16, 128, 8));
        let parts = [
            (s.sorted, 128 * 4),
            (s.align_counts, 256 * 4),
            (s.block_expert, 8 * 4),
            (s.slot_to_sorted, 8 * 4),
            (s.total, 4),
            (s.h13, 128 * 2 * 2048 * 2),
            (s.hact, 128 * 2048 * 2),
            (s.c2, 128 * 7168 * 2),
        ];
        for w in parts.windows(2) {
            assert_eq!(w[0].0 % 256, 0);
            assert!(w[0].0 + w[0].1 <= w[1].0, "buffers overlap: {s:?}");
        }
        assert_eq!(bytes, s.c2 + 128 * 7168 * 2);
        // The global expert count, not the local one, picks the tile (expert parallelism).
        assert_eq!(MoeScratch::layout(1024, 8, 32, 256, 256, 512).0.block_m, 64);
    }

    #[test]
    fn wgmma_scratch_has_no_h13_and_puts_xs_in_c2() {
        // DeepSeek-V3 prefill, 4096 tokens: block_m 128 (the wgmma path).
        let (s, bytes) = MoeScratch::layout(4096, 8, 256, 256, 2048, 7168);
        assert_eq!(s.block_m, 128);
        assert_eq!(s.h13, s.hact, "no h13 bytes on the wgmma path");
        assert_eq!(s.xs, s.c2);
        assert_eq!(bytes, s.c2 + s.max_sorted * 7168 * 2);
        // The decode path keeps its h13.
        let (d, _) = MoeScratch::layout(1, 8, 256, 256, 2048, 7168);
        assert_eq!(d.hact - d.h13, 128 * 2 * 2048 * 2);
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert_eq!(moe_gemm_entry(32), Err(MoeShapeError::UnsupportedBlockM(32)));
        assert_eq!(moe_gemm_entry(128), Err(MoeShapeError::UnsupportedBlockM(128)));
        assert!(check_moe_gemm(7168, 7168, 100).is_ok());
        assert_eq!(check_moe_gemm(100, 104, 1), Err(MoeShapeError::NotMultipleOf8 { what: "k", value: 100 }));
        assert!(matches!(moe_gemm_launch(16, 4096, 70_000), Err(MoeShapeError::TooManyBlocks { .. })));
        assert!(moe_combine_launch(4, 33).is_err());
    }

    #[test]
    fn gemm_launch_covers_n() {
        let cfg = moe_gemm_launch(16, 7168 + 8, 40).unwrap();
        assert_eq!(cfg.grid_dim, (225, 40, 1));
        assert_eq!(cfg.block_dim, (128, 1, 1));
        assert_eq!(cfg.shared_mem_bytes, 49_152);
    }

    proptest! {
        /// The sorted length the routing actually needs never exceeds the bound, and the
        /// bound is a whole number of blocks.
        #[test]
        fn max_sorted_bounds_any_routing(
            ids in proptest::collection::vec(0usize..40, 1..300),
            num_local in 1usize..40,
            block_m in prop_oneof![Just(16usize), Just(64), Just(128)],
        ) {
            let top_k = 1;
            let mut counts = vec![0usize; num_local];
            for &id in &ids {
                if id < num_local { counts[id] += 1; }
            }
            let used: usize = counts.iter().map(|c| c.div_ceil(block_m) * block_m).sum();
            let bound = moe_max_sorted(ids.len(), top_k, num_local, block_m);
            prop_assert!(used <= bound);
            prop_assert_eq!(bound % block_m, 0);
        }
    }
}
