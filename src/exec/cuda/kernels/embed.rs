//! `kernels/embed.cu`: token embedding lookup on a vocab-parallel shard, plus learned
//! positions (GPT).

use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::misc::chunked_launch;
use super::prepare::{kernel, Call, Prep};
use super::ptr::{Bf16Ptr, ConstBf16Ptr, ConstI32Ptr};
use crate::plan::Op;

/// `out[t,:] = scale * table[ids[t] - vocab_start,:]` for ids in this shard, else 0;
/// then `+ pos_table[positions[t],:]` when `pos_table` is set.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbedTokensParams {
    /// `[tokens, hidden]`, row stride `out_ld`.
    pub out: Bf16Ptr,
    pub out_ld: i32,
    /// `[vocab_rows, hidden]`, contiguous.
    pub table: ConstBf16Ptr,
    /// `[tokens]`, global vocabulary ids.
    pub ids: ConstI32Ptr,
    /// `[tokens]`, nullable (0): position t for token t.
    pub positions: ConstI32Ptr,
    /// `[max_positions, hidden]`, nullable (0): no learned positions.
    pub pos_table: ConstBf16Ptr,
    pub tokens: i32,
    pub hidden: i32,
    pub vocab_start: i32,
    pub vocab_rows: i32,
    pub scale: f32,
}
unsafe impl DeviceRepr for EmbedTokensParams {}
pub const EMBED_TOKENS: (&str, &str) = ("embed", "embed_tokens");
pub fn embed_tokens_launch(tokens: usize, hidden: usize) -> LaunchConfig {
    chunked_launch(tokens, hidden)
}

/// `Op::Embed`: one lookup over every token.
pub fn prepare(cx: &mut Prep, op: &Op) -> anyhow::Result<Vec<Call>> {
    let Op::Embed { out, table, vocab_start, pos_table, scale } = op else { unreachable!("embed::prepare got {op:?}") };
    let p = EmbedTokensParams {
        out: cx.ptr(*out),
        out_ld: cx.ld(*out),
        table: cx.w(*table),
        ids: cx.ids,
        positions: cx.positions,
        pos_table: cx.w_or_null(*pos_table),
        tokens: cx.rows(*out),
        hidden: out.cols as i32,
        vocab_start: *vocab_start as i32,
        vocab_rows: cx.plan.weight(*table).rows as i32,
        scale: *scale,
    };
    Ok(vec![kernel(EMBED_TOKENS, embed_tokens_launch(cx.rows(*out) as usize, out.cols), p)])
}
