//! One module per op family, named by the family's stem (`Op::family`): each holds the
//! `#[repr(C)]` parameter structs of `kernels/<stem>.cu`, the launch shapes and host
//! heuristics, and `prepare`, which turns one plan op into its prepared device calls.
//! The `#[repr(C)]` structs, `#[repr(i32)]` code enums and public integer constants here are
//! the single definition: build.rs generates the header the kernels include
//! (`fwdbench_params.h`) from these files with cbindgen. `linear` (cuBLASLt) and
//! `collective` (NCCL) have no .cu; attention's kernels live in `attention_prefill.cu` and
//! `attention_decode.cu`, joined by `attention.rs`.

pub mod act;
pub mod attention;
pub mod attention_decode;
pub mod attention_decode_tma;
pub mod attention_fa3;
pub mod attention_prefill;
pub mod collective;
pub mod embed;
pub mod gemm_fp8;
pub mod gemm_tma;
pub mod init;
pub mod linear;
pub mod misc;
pub mod mla;
pub mod mla_decode;
pub mod moe;
pub mod moe_fp8;
pub mod moe_wgmma;
pub mod norm;
pub mod prepare;
pub mod ptr;
pub mod quant;
pub mod rope;
pub mod route;

use crate::plan::memory::Target;
use crate::plan::{Op, Plan};

/// Scratch bytes `op`'s kernels need beyond its outputs on `target`, 256-byte aligned
/// (the memory planner takes the largest over the plan's ops).
pub fn scratch_bytes(plan: &Plan, op: &Op, target: Target) -> usize {
    let bytes = match op {
        Op::Attention { .. } => attention::scratch_bytes(plan, op, target),
        Op::MlaPrefillAttention { .. } | Op::MlaDecodeAttention { .. } => mla::scratch_bytes(plan, op, target),
        Op::Moe { .. } => moe::MoeScratch::of(plan, op).1,
        Op::Linear { .. } => quant::linear_scratch_bytes(plan, op),
        Op::Collective { .. } => collective::scratch_bytes(plan, op, target),
        _ => 0,
    };
    bytes.div_ceil(256) * 256
}

/// `op`'s prepared calls, from its family's `prepare`.
pub fn prepare(cx: &mut prepare::Prep, op: &Op) -> anyhow::Result<Vec<prepare::Call>> {
    match op {
        Op::Embed { .. } => embed::prepare(cx, op),
        Op::Norm { .. } | Op::HeadNorm { .. } => norm::prepare(cx, op),
        Op::Linear { .. } | Op::HeadMatmul { .. } => linear::prepare(cx, op),
        Op::BiasAct { .. } | Op::ActMul { .. } | Op::Add { .. } => act::prepare(cx, op),
        Op::Rope { .. } => rope::prepare(cx, op),
        Op::Attention { .. } => attention::prepare(cx, op),
        Op::KvCacheWrite { .. } => attention::prepare_cache_write(cx, op),
        Op::MlaCacheWrite { .. } | Op::MlaPrefillAttention { .. } | Op::MlaDecodeAttention { .. } => {
            mla::prepare(cx, op)
        }
        Op::Route { .. } => route::prepare(cx, op),
        Op::Moe { .. } => moe::prepare(cx, op),
        Op::GatherRows { .. } => misc::prepare(cx, op),
        Op::Collective { .. } => collective::prepare(cx, op),
    }
}
