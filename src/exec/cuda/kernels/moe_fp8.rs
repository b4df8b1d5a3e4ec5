//! Launch parameters for `kernels/moe_fp8.cu`: the FP8 experts (e4m3 weights with 128x128
//! block scales) over moe_align's sorted rows, for every batch size (`block_m` 64 or 128;
//! moe.rs never picks 16 for FP8 weights).
//!
//! With `S` sorted rows, `E` local experts, `H` hidden, `I` intermediate (both multiples of
//! 128), after `moe_align`:
//!
//! 1. `moe_fp8_quant_permute` ([`MOE_FP8_PERMUTE`]): `xq[r] = quant(x[t])` per 128-column group
//!    for each local choice `r = slot_to_sorted[t * k + j]` (x quantized once per token), zero
//!    for padding rows; codes and scales as `Fp8Layout::new(1, S, H)` in the `xs` scratch (c2's
//!    bytes: c2 is written only by the down GEMM, after the gate/up GEMM read `xq`).
//! 2. `moe_fp8_gate_up_m{128,64}`: `h = act(xq . W13[e][:I]^T) * (xq . W13[e][I:]^T)` in fp32,
//!    quantized per row and 128 channels into `Fp8Layout::new(1, S, I)` in the `hact` scratch.
//! 3. `moe_fp8_down_m{128,64}`: `c2 = aq . W2[e]^T` (bf16), then moe_combine as for bf16.
//!
//! CTA tiles are one M-block: 128 x 256 weight rows at `block_m` 128, 64 x 512 at 64 (each
//! consumer warpgroup 64 rows x 256). The GEMMs are persistent (one CTA per SM claiming tiles
//! from the op's tile counters, kernels/moe_sched.cuh), which the permute zeroes. Padding rows come out as zero codes and zero products;
//! 64-row slabs of padding only are skipped by both GEMMs (combine never reads their rows).

use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::super::tma::{encode_u8, matrix_u8, TensorLayout, BOX_INNER_U8};
use super::act::{activation_code, Act};
use super::moe_wgmma::{pairs_default, tile_counter, tile_counters};
use super::prepare::{kernel, Call};
use super::ptr::{ConstBf16Ptr, ConstF32Ptr, ConstI32Ptr, F32Ptr, I32Ptr, TensorMap, VoidPtr};
use crate::config::model::Activation;
use crate::quant::{Fp8Layout, BLOCK};

/// Threads of a GEMM CTA: a producer warpgroup and two consumer warpgroups.
pub const MOE_FP8_THREADS: u32 = 384;
/// Threads of a `moe_fp8_quant_permute` CTA (one token or M-block, a warp per 128-column group).
pub const MOE_FP8_PERMUTE_THREADS: u32 = 128;
/// TMA ring depth at block_m 128: 4 stages of 16 KiB of A and 32 KiB of B.
pub const MOE_FP8_STAGES_M128: i32 = 4;
/// TMA ring depth at block_m 64: 3 stages of 8 KiB of A and 64 KiB of B.
pub const MOE_FP8_STAGES_M64: i32 = 3;
/// Rows of one CTA tile (one m64 wgmma slab).
const SLAB: usize = 64;
/// Weight rows of one consumer unit: two 128-row halves (gate and up, or 256 rows of W2).
const UNIT_ROWS: u32 = 256;

/// (rows, halves) of the one weight box per consumer unit and stage (kernels/moe_fp8.cu, v5):
/// gate/up 128 channel rows of both halves (gate and up), down 256 rows of W2. v3 loaded the
/// unit as four boxes of 64 rows, five TMA boxes per stage where the dense FP8 GEMM's stage
/// takes two (docs/perf.md, FP8 MoE v5).
pub const fn b_box(gate_up: bool) -> (u32, u32) {
    if gate_up {
        (UNIT_ROWS / 2, 2)
    } else {
        (UNIT_ROWS, 1)
    }
}

/// Tensor maps first (128-byte aligned, as in C).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MoeFp8Params {
    /// Sorted A codes `[rows, k]`, boxes of 128 bytes x `block_m` rows (64 for pairs).
    pub a: TensorMap,
    /// Expert weight codes as `(k, rows per half, halves, experts)` bytes, one box per consumer
    /// unit ([`b_box`]): W13 is `(H, I, 2, E)` with boxes 128 x 128 x 2 x 1, W2 `(I, H, 1, E)`
    /// with 128 x 256 x 1 x 1.
    pub b: TensorMap,
    /// `[k / 128, rows]` A group scales.
    pub sa: ConstF32Ptr,
    /// `[E, w_row_blocks, sw_ld]` weight block scales.
    pub sw: ConstF32Ptr,
    pub block_expert: ConstI32Ptr,
    pub total_padded: ConstI32Ptr,
    /// `[rows]` from moe_align (-1 for padding).
    pub sorted_slots: ConstI32Ptr,
    /// Gate/up: e4m3 codes `[rows, n]`; down: bf16 `[rows, n]`.
    pub c: VoidPtr,
    /// Gate/up: `[n / 128, rows]` scales of `c`; unused by down.
    pub c_scales: F32Ptr,
    /// Sorted rows of the buffers (`moe_max_sorted`), the stride of every scale column.
    pub rows: i32,
    pub block_m: i32,
    /// Output columns: `I` (gate/up channels) or `H`; depth `H` or `I`.
    pub n: i32,
    pub k: i32,
    pub n_tiles: i32,
    /// `Act` code of the gate/up epilogue.
    pub act: i32,
    pub sw_ld: i32,
    pub w_row_blocks: i32,
    /// This GEMM's tile counter (`moe_wgmma::tile_counter`), zero at launch.
    pub tile_counter: I32Ptr,
    /// Local experts: the raster groups `total blocks / experts` M-blocks (moe_sched.cuh).
    pub experts: i32,
    /// 1: block_m 128's two consumers take turns issuing their wgmma groups (fp8_block.cuh,
    /// Fp8Turns; [`order_requested`]).
    pub order: i32,
    /// 1: a K block's scales come into shared memory with its ring stage (bulk copies of the
    /// M-block's `block_m` A scales and of each weight row's 16 bytes holding the block); 0:
    /// each consumer thread loads its four a block ahead ([`smem_scales_requested`]).
    pub smem_scales: i32,
}
unsafe impl DeviceRepr for MoeFp8Params {}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MoeFp8PermuteParams {
    /// `[tokens, x_ld]` bf16.
    pub x: ConstBf16Ptr,
    pub x_ld: i32,
    pub top_k: i32,
    pub sorted_slots: ConstI32Ptr,
    pub total_padded: ConstI32Ptr,
    /// `[rows, hidden]` e4m3 out.
    pub codes: VoidPtr,
    /// `[hidden / 128, rows]` out.
    pub scales: F32Ptr,
    pub rows: i32,
    /// A multiple of 128.
    pub hidden: i32,
    /// The op's `MOE_TILE_COUNTERS` tile counters, zeroed by the first CTA.
    pub tile_counters: I32Ptr,
    /// `[tokens * top_k]` from moe_align: a choice's sorted row, -1 when not local.
    pub slot_to_sorted: ConstI32Ptr,
    /// Tokens of x: CTAs below quantize a token's row, the others zero padding rows.
    pub tokens: i32,
    /// Rows per M-block: the padding CTAs' unit.
    pub block_m: i32,
}
unsafe impl DeviceRepr for MoeFp8PermuteParams {}

pub const MOE_FP8_PERMUTE: (&str, &str) = ("moe_fp8", "moe_fp8_quant_permute");

/// The gate/up or down GEMM entry for a `block_m` (64 or 128, checked by the caller); `pairs`
/// (block_m 128 only) picks the 2-CTA cluster entries that multicast the operand two tiles
/// share (kernels/moe_fp8.cu, PAIR).
pub fn gemm_entry(gate_up: bool, block_m: usize, pairs: bool) -> (&'static str, &'static str) {
    let name = match (gate_up, block_m, pairs) {
        (true, 128, true) => "moe_fp8_gate_up_m128_pair",
        (false, 128, true) => "moe_fp8_down_m128_pair",
        (true, 128, _) => "moe_fp8_gate_up_m128",
        (true, _, _) => "moe_fp8_gate_up_m64",
        (false, 128, _) => "moe_fp8_down_m128",
        (false, _, _) => "moe_fp8_down_m64",
    };
    ("moe_fp8", name)
}

/// Which FP8 GEMMs run as CTA pairs (`FWDBENCH_MOE_FP8_PAIRS`): `0` none, `1` every block_m
/// 128 launch (pairs along M where the routing gives two or more M-blocks per expert, along N
/// otherwise: the kernel decides from the live block count), `m` only launches whose expected
/// rows per expert fill two M-blocks (so the kernel pairs along M).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fp8Pairs {
    Off,
    All,
    AlongM,
}

impl Fp8Pairs {
    /// The knob's setting; unset or unrecognised: the default.
    pub fn requested() -> Self {
        Self::parse(std::env::var("FWDBENCH_MOE_FP8_PAIRS").ok().as_deref())
    }

    fn parse(value: Option<&str>) -> Self {
        match value {
            Some("1") => Self::All,
            Some("m") => Self::AlongM,
            Some("0") => Self::Off,
            _ => Self::DEFAULT,
        }
    }

    /// Off until measured (docs/perf.md, "FP8 MoE v4").
    const DEFAULT: Self = Self::Off;

    /// Whether a launch of `rows` routed (token, choice) pairs over `experts` local experts at
    /// `block_m` takes the pair entries.
    pub fn applies(self, block_m: usize, rows: usize, experts: usize) -> bool {
        block_m == 128
            && match self {
                Self::Off => false,
                Self::All => true,
                // Two M-blocks per expert expected: the bf16 kernel's rule for its M pairs.
                Self::AlongM => pairs_default(block_m, rows / experts.max(1)),
            }
    }
}

/// Weight rows a consumer warpgroup covers (two 128-row scale blocks).
const CONSUMER_ROWS: usize = 256;

/// Consumer warpgroups side by side along N: two at `block_m` 64, one column of two stacked
/// along M at 128.
const fn n_parts(block_m: usize) -> usize {
    2 * SLAB / block_m
}

/// The A and B ring at a `block_m`, its barriers, 1 KiB of alignment slack and each stage's
/// scales (kernels/moe_fp8.cu, `sx`): `block_m` of A, and at `block_m` 128 4 of each of the
/// tile's two weight-scale rows.
pub const fn moe_fp8_smem_bytes(block_m: usize) -> u32 {
    let stages = if block_m == 128 { MOE_FP8_STAGES_M128 } else { MOE_FP8_STAGES_M64 } as usize;
    let rows = block_m + n_parts(block_m) * CONSUMER_ROWS;
    let scales = block_m + if block_m == 128 { 8 } else { 0 };
    (rows * BOX_INNER_U8 as usize * stages + 16 * stages + 1024 + stages * scales * 4) as u32
}

/// Device addresses and dimensions of one FP8 `Op::Moe` after moe_align (moe.rs's scratch).
#[derive(Debug, Clone, Copy)]
pub struct MoeFp8Pipeline {
    pub x: u64,
    pub x_ld: usize,
    pub tokens: usize,
    /// moe_align's `[tokens * top_k]` sorted rows (-1: not local).
    pub slot_to_sorted: u64,
    pub top_k: usize,
    /// `Fp8Layout::new(E, 2I, H)` and `Fp8Layout::new(E, H, I)` buffers.
    pub w13: u64,
    pub w2: u64,
    pub experts: usize,
    pub hidden: usize,
    pub inter: usize,
    pub act: Activation,
    pub sorted: u64,
    pub block_expert: u64,
    pub total: u64,
    /// Scratch for `xq` (at least [`quantized_bytes`] of `(S, H)`), for the quantized
    /// activation (of `(S, I)`), and c2 `[S, H]` bf16.
    pub xs: u64,
    pub hact: u64,
    pub c2: u64,
    pub block_m: usize,
    pub max_sorted: usize,
    /// M-blocks of the worst case (`moe_max_blocks`).
    pub blocks: usize,
    /// The device's SMs: the persistent grid's size.
    pub sm_count: usize,
    /// Whether the GEMMs run as CTA pairs ([`Fp8Pairs::requested`] by default).
    pub pairs: Fp8Pairs,
    /// Whether the consumers take turns on the tensor cores ([`order_requested`] by default).
    pub order: bool,
    /// Whether the scales arrive in shared memory with each stage ([`smem_scales_requested`]).
    pub smem_scales: bool,
}

/// Bytes of a quantized `[rows, cols]` activation: codes, then `[cols / 128, rows]` scales.
pub fn quantized_bytes(rows: usize, cols: usize) -> usize {
    Fp8Layout::new(1, rows, cols).activation_bytes()
}

/// Whether `FWDBENCH_MOE_FP8_ORDER` asks the block_m 128 GEMMs' two consumers to take turns
/// issuing their wgmma groups (`1` on, `0` off; off by default until measured, docs/perf.md
/// "FP8 MoE v4").
pub fn order_requested() -> bool {
    std::env::var("FWDBENCH_MOE_FP8_ORDER").is_ok_and(|v| v == "1")
}

/// Whether the A and weight scales travel with the ring stages into shared memory
/// (`FWDBENCH_MOE_FP8_SMEM_SCALES`, `0` off, on otherwise: docs/perf.md "FP8 MoE v6").
pub fn smem_scales_requested() -> bool {
    std::env::var("FWDBENCH_MOE_FP8_SMEM_SCALES").map_or(true, |v| v != "0")
}

/// Persistent grid: one CTA per SM, never more than the worst case's tiles (M-blocks times
/// n-tiles); CTA `b` takes live tile `b`, then claims tiles until none is left. Pairs: clusters
/// of two CTAs over units of two tiles, an even grid of at most the SMs.
pub fn gemm_launch(block_m: usize, max_blocks: usize, n_tiles: usize, sm_count: usize, pairs: bool) -> LaunchConfig {
    let grid = if pairs {
        2 * (n_tiles * max_blocks.div_ceil(2).max(1)).min((sm_count / 2).max(1))
    } else {
        (max_blocks * n_tiles).clamp(1, sm_count.max(1))
    };
    LaunchConfig {
        grid_dim: (grid as u32, 1, 1),
        block_dim: (MOE_FP8_THREADS, 1, 1),
        shared_mem_bytes: moe_fp8_smem_bytes(block_m),
    }
}

impl MoeFp8Pipeline {
    /// What the kernels assume, checked before any driver call.
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.block_m == 64 || self.block_m == 128,
            "the FP8 MoE GEMMs take block_m 64 or 128, not {}",
            self.block_m
        );
        anyhow::ensure!(
            self.hidden.is_multiple_of(BLOCK) && self.inter.is_multiple_of(BLOCK),
            "the FP8 MoE kernels need hidden ({}) and the per-rank expert intermediate size ({}) to be multiples of \
             {BLOCK} (one scale block); run this model with --quant bf16 or a split that keeps them so",
            self.hidden,
            self.inter
        );
        Ok(())
    }

    /// A GEMM's parameters: `a` the quantized A of `(rows, k)`, weights `w` as
    /// `(k, n_half, halves, E)` with `n_w = halves * n_half` rows per expert.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        a: u64,
        w: u64,
        n: usize,
        k: usize,
        halves: usize,
        c: u64,
        act: i32,
        pairs: bool,
    ) -> anyhow::Result<MoeFp8Params> {
        let s = self.max_sorted;
        let wl = Fp8Layout::new(self.experts, halves * n, k);
        let (k64, n64, h64) = (k as u64, n as u64, halves as u64);
        let layout = TensorLayout {
            base: w,
            dims: vec![k64, n64, h64, self.experts as u64],
            strides: vec![k64, n64 * k64, h64 * n64 * k64],
        };
        let gate_up = halves == 2;
        let (box_rows, box_halves) = b_box(gate_up);
        let sa = a + Fp8Layout::new(1, s, k).scale_offset() as u64;
        let sw = w + wl.scale_offset() as u64;
        // The per-stage bulk copies read 16-byte aligned runs: block_m A scales, 4 weight scales.
        anyhow::ensure!(
            !self.smem_scales
                || (sa.is_multiple_of(16)
                    && s.is_multiple_of(4)
                    && sw.is_multiple_of(16)
                    && wl.weight_scale_ld().is_multiple_of(4)),
            "the FP8 MoE scales (A at {sa:#x}, stride {s} rows; weights at {sw:#x}) are not 16-byte aligned for \
             the per-stage copies; set FWDBENCH_MOE_FP8_SMEM_SCALES=0"
        );
        Ok(MoeFp8Params {
            // Pairs load A as two 64-row boxes (one of them multicast when the pair shares it).
            a: matrix_u8(a, s, k, k, if pairs { SLAB as u32 } else { self.block_m as u32 })?,
            b: encode_u8(&layout, &[BOX_INNER_U8, box_rows, box_halves, 1])?,
            sa,
            sw,
            block_expert: self.block_expert,
            total_padded: self.total,
            sorted_slots: self.sorted,
            c,
            c_scales: if gate_up { c + Fp8Layout::new(1, s, n).scale_offset() as u64 } else { 0 },
            rows: s as i32,
            block_m: self.block_m as i32,
            n: n as i32,
            k: k as i32,
            n_tiles: self.n_tiles(gate_up) as i32,
            act,
            sw_ld: wl.weight_scale_ld() as i32,
            w_row_blocks: wl.row_blocks() as i32,
            tile_counter: tile_counter(self.total, !gate_up),
            experts: self.experts as i32,
            order: self.order as i32,
            smem_scales: self.smem_scales as i32,
        })
    }

    /// A consumer covers 128 channels (their gate and up rows) or 256 columns; a tile one or
    /// two consumers' worth along N.
    pub fn n_tiles(&self, gate_up: bool) -> usize {
        let per_tile = n_parts(self.block_m) * CONSUMER_ROWS / 2;
        if gate_up {
            self.inter.div_ceil(per_tile)
        } else {
            self.hidden.div_ceil(2 * per_tile)
        }
    }

    /// The three calls (quantizing permute, gate/up, down), tensor maps encoded now.
    pub fn calls(&self) -> anyhow::Result<Vec<Call>> {
        self.check()?;
        let permute = MoeFp8PermuteParams {
            x: self.x,
            x_ld: self.x_ld as i32,
            top_k: self.top_k as i32,
            sorted_slots: self.sorted,
            total_padded: self.total,
            codes: self.xs,
            scales: self.xs + Fp8Layout::new(1, self.max_sorted, self.hidden).scale_offset() as u64,
            rows: self.max_sorted as i32,
            hidden: self.hidden as i32,
            tile_counters: tile_counters(self.total),
            slot_to_sorted: self.slot_to_sorted,
            tokens: self.tokens as i32,
            block_m: self.block_m as i32,
        };
        // One CTA per token, then one per M-block of the worst case.
        let cfg = LaunchConfig {
            grid_dim: ((self.tokens + self.blocks).max(1) as u32, 1, 1),
            block_dim: (MOE_FP8_PERMUTE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let (h, i, bm) = (self.hidden, self.inter, self.block_m);
        let pairs = self.pairs.applies(bm, self.tokens * self.top_k, self.experts);
        let gate_up = self.gemm(self.xs, self.w13, i, h, 2, self.hact, activation_code(self.act), pairs)?;
        let down = self.gemm(self.hact, self.w2, h, i, 1, self.c2, Act::None as i32, pairs)?;
        let launch = |gate_up| gemm_launch(bm, self.blocks, self.n_tiles(gate_up), self.sm_count, pairs);
        Ok(vec![
            kernel(MOE_FP8_PERMUTE, cfg, permute),
            kernel(gemm_entry(true, bm, pairs), launch(true), gate_up),
            kernel(gemm_entry(false, bm, pairs), launch(false), down),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::cuda::kernels::moe::{choose_block_m_fp8, MoeScratch};

    #[test]
    fn params_match_the_c_layout() {
        // Two 128-byte maps, seven pointers, eight i32, a pointer, three i32.
        assert_eq!(std::mem::align_of::<MoeFp8Params>(), 128);
        assert_eq!(std::mem::offset_of!(MoeFp8Params, sa), 256);
        assert_eq!(std::mem::offset_of!(MoeFp8Params, rows), 312);
        assert_eq!(std::mem::offset_of!(MoeFp8Params, w_row_blocks), 340);
        assert_eq!(std::mem::offset_of!(MoeFp8Params, tile_counter), 344);
        assert_eq!(std::mem::offset_of!(MoeFp8Params, experts), 352);
        assert_eq!(std::mem::offset_of!(MoeFp8Params, order), 356);
        assert_eq!(std::mem::offset_of!(MoeFp8Params, smem_scales), 360);
        assert_eq!(std::mem::size_of::<MoeFp8Params>(), 384);
        assert_eq!(std::mem::offset_of!(MoeFp8PermuteParams, tile_counters), 56);
        assert_eq!(std::mem::offset_of!(MoeFp8PermuteParams, tokens), 72);
        assert_eq!(std::mem::size_of::<MoeFp8PermuteParams>(), 80);
    }

    #[test]
    fn rings_fit() {
        // Counted by hand: 4 * (16 KiB + 32 KiB) and 3 * (8 KiB + 64 KiB), barriers, 1 KiB,
        // 4 * (512 + 32) bytes of A and weight scales, 3 * 256 of A scales.
        assert_eq!(moe_fp8_smem_bytes(128), 4 * 49_152 + 64 + 1024 + 2176);
        assert_eq!(moe_fp8_smem_bytes(64), 3 * 73_728 + 48 + 1024 + 768);
        assert!(moe_fp8_smem_bytes(64) <= 227 * 1024);
    }

    #[test]
    fn quantized_operands_fit_in_the_bf16_scratch() {
        // xq lives in c2's bytes ([S, H] bf16), the quantized activation in hact's ([S, I]).
        for (t, k, local, total, inter, hidden) in [
            (4096, 8, 256, 256, 2048, 7168),
            (1, 8, 256, 256, 2048, 7168),
            (37, 8, 16, 16, 2048, 7168),
            (517, 8, 128, 128, 1536, 4096),
            (1, 1, 1, 1, 128, 128),
        ] {
            let block_m = choose_block_m_fp8(t, k, total);
            assert!(block_m >= 64, "FP8 never takes the decode tile");
            let (s, _) = MoeScratch::with_block_m(block_m, t, k, local, inter, hidden);
            let rows = s.max_sorted;
            assert!(quantized_bytes(rows, hidden) <= rows * hidden * 2, "xq of {t} tokens");
            assert!(quantized_bytes(rows, inter) <= rows * inter * 2, "act of {t} tokens");
        }
    }

    fn pipeline(block_m: usize, hidden: usize, inter: usize) -> MoeFp8Pipeline {
        MoeFp8Pipeline {
            x: 0,
            x_ld: hidden,
            tokens: 4096,
            slot_to_sorted: 0,
            top_k: 8,
            w13: 0,
            w2: 0,
            experts: 256,
            hidden,
            inter,
            act: Activation::Silu,
            sorted: 0,
            block_expert: 0,
            total: 0,
            xs: 0,
            hact: 0,
            c2: 0,
            block_m,
            max_sorted: 4096 * 8 + 256 * 127,
            blocks: (4096 * 8 + 256 * 127) / block_m,
            sm_count: 132,
            pairs: Fp8Pairs::Off,
            order: false,
            smem_scales: true,
        }
    }

    #[test]
    fn shapes_without_a_kernel_are_refused_before_any_driver_call() {
        let message = |p: MoeFp8Pipeline| p.calls().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message(pipeline(16, 7168, 2048)).contains("block_m 64 or 128"));
        // Qwen3-235B's 1536 split over 8 ranks is 192: not whole scale blocks.
        assert!(message(pipeline(128, 4096, 192)).contains("multiples of 128"));
        assert!(message(pipeline(128, 4160, 2048)).contains("multiples of 128"));
    }

    #[test]
    fn tiles_cover_channels_and_columns() {
        // DeepSeek-V3 at block_m 128: 2048 channels in tiles of 128, 7168 columns in tiles of 256.
        let p = pipeline(128, 7168, 2048);
        assert_eq!((p.n_tiles(true), p.n_tiles(false)), (16, 28));
        // block_m 64: tiles twice as wide; odd channel blocks (I 1408) and H 4096 round up.
        assert_eq!((pipeline(64, 7168, 2048).n_tiles(true), pipeline(64, 7168, 2048).n_tiles(false)), (8, 14));
        let narrow = pipeline(64, 4096, 1408);
        assert_eq!((narrow.n_tiles(true), narrow.n_tiles(false)), (6, 8));
        // Persistent: one CTA per SM, fewer when the worst case has fewer tiles.
        let cfg = gemm_launch(128, 400, 28, 132, false);
        assert_eq!((cfg.grid_dim, cfg.block_dim), ((132, 1, 1), (384, 1, 1)));
        assert_eq!(gemm_launch(64, 5, 14, 132, false).grid_dim, (5 * 14, 1, 1));
        assert_eq!(gemm_launch(64, 0, 14, 132, false).grid_dim, (1, 1, 1));
        assert_eq!(gemm_entry(false, 64, false), ("moe_fp8", "moe_fp8_down_m64"));
        // Pairs: an even grid of at most the SMs, the cluster entries at block_m 128 only.
        assert_eq!(gemm_launch(128, 400, 28, 132, true).grid_dim, (132, 1, 1));
        assert_eq!(gemm_launch(128, 3, 1, 133, true).grid_dim, (4, 1, 1));
        assert_eq!(gemm_entry(true, 128, true), ("moe_fp8", "moe_fp8_gate_up_m128_pair"));
        assert_eq!(gemm_entry(false, 128, true), ("moe_fp8", "moe_fp8_down_m128_pair"));
    }

    #[test]
    fn one_weight_box_is_one_consumer_unit() {
        // 256 rows of 128 bytes (32 KiB), within TMA's 256-per-dimension limit; the down
        // GEMM's map has one half.
        for gate_up in [true, false] {
            let (rows, halves) = b_box(gate_up);
            assert_eq!(rows * halves, UNIT_ROWS);
            assert!(rows <= 256 && (gate_up || halves == 1));
        }
    }

    #[test]
    fn pairs_follow_the_knob_and_the_expected_blocks_per_expert() {
        assert_eq!(Fp8Pairs::parse(None), Fp8Pairs::DEFAULT);
        assert_eq!(Fp8Pairs::parse(Some("1")), Fp8Pairs::All);
        assert_eq!(Fp8Pairs::parse(Some("m")), Fp8Pairs::AlongM);
        assert_eq!(Fp8Pairs::parse(Some("0")), Fp8Pairs::Off);
        // Qwen3-235B at 4096 tokens: 256 rows per expert, two M-blocks; DeepSeek-V3: one.
        assert!(Fp8Pairs::AlongM.applies(128, 4096 * 8, 128));
        assert!(!Fp8Pairs::AlongM.applies(128, 4096 * 8, 256));
        assert!(Fp8Pairs::All.applies(128, 4096 * 8, 256));
        assert!(!Fp8Pairs::All.applies(64, 4096 * 8, 256), "block_m 64 has no pair entry");
        assert!(!Fp8Pairs::Off.applies(128, 4096 * 8, 128));
    }
}
