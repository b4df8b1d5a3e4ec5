//! FP8 plan weights from any source: e4m3 codes and 128x128 block scales.
//!
//! A checkpoint already in FP8 (HF: `weight` as F8_E4M3, `weight_scale_inv` as fp32 per
//! block) is copied code for code, each plan block taking its file block's scale, so the
//! values are exactly the checkpoint's. That needs every plan block to lie inside one file
//! block: pieces start on block boundaries in both tensors and end on one or at the plan
//! weight's edge (true for DeepSeek-V3 and Qwen3 under their deployments; TP slices of
//! heads and expert halves are multiples of 128). Anything else (random weights, bf16
//! checkpoints under `--quant fp8`) is materialized in f32 and quantized per block here.

use super::{materialize_f32, WeightError, WeightSource};
use crate::plan::{WeightInfo, WeightPiece};
use crate::quant::{quantize_blocks, BLOCK};

/// One piece of an FP8 checkpoint tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Fp8Piece {
    /// The piece's codes, `[rows, cols]` row-major.
    pub codes: Vec<u8>,
    /// The whole HF tensor's block scales, row-major with `scale_cols` per row.
    pub scales: Vec<f32>,
    pub scale_cols: usize,
}

/// HF's name of the scales of FP8 tensor `name` (`...proj.weight` -> `...proj.weight_scale_inv`).
pub fn scale_name(name: &str) -> String {
    format!("{name}_scale_inv")
}

/// Why a piece cannot keep its file's blocks, if it cannot.
fn misaligned(p: &WeightPiece, info: &WeightInfo) -> Option<String> {
    if p.transposed_in_file {
        return Some("an FP8 tensor stored transposed (Conv1D) is not supported".into());
    }
    let starts = [p.src_row, p.src_col, p.dst_row, p.dst_col];
    let rows_end = p.rows.is_multiple_of(BLOCK) || p.dst_row + p.rows == info.rows;
    let cols_end = p.cols.is_multiple_of(BLOCK) || p.dst_col + p.cols == info.cols;
    if starts.iter().all(|s| s.is_multiple_of(BLOCK)) && rows_end && cols_end {
        return None;
    }
    Some(format!(
        "rows {}..{} x cols {}..{} of it go to rows {}..{} x cols {}..{} of plan weight {}, which does not keep its 128x128 scale blocks whole; this sharding cannot load the FP8 checkpoint (use a deployment whose splits are multiples of 128, or --quant bf16)",
        p.src_row,
        p.src_row + p.rows,
        p.src_col,
        p.src_col + p.cols,
        p.dst_row,
        p.dst_row + p.rows,
        p.dst_col,
        p.dst_col + p.cols,
        info.name
    ))
}

/// Plan weight `info` as e4m3 codes `[count, rows, cols]` and compact block scales
/// `[count, row_blocks, col_blocks]`.
pub fn materialize_fp8(info: &WeightInfo, src: &dyn WeightSource) -> Result<(Vec<u8>, Vec<f32>), WeightError> {
    let native: Vec<Option<Fp8Piece>> = info.pieces.iter().map(|p| src.fp8_piece(p)).collect::<Result<_, _>>()?;
    if native.iter().all(Option::is_none) {
        let values = materialize_f32(info, src, false)?;
        return Ok(quantize_blocks(&values, info.count, info.rows, info.cols));
    }
    let (rb, cb) = (info.rows.div_ceil(BLOCK), info.cols.div_ceil(BLOCK));
    let mut codes = vec![0u8; info.numel()];
    // Blocks no piece covers hold zeros; any finite scale will do.
    let mut scales = vec![1f32; info.count * rb * cb];
    for (p, piece) in info.pieces.iter().zip(native) {
        let Some(piece) = piece else {
            return Err(WeightError::Fp8Layout {
                name: p.hf_name.clone(),
                reason: format!("is not FP8 while other tensors of plan weight {} are", info.name),
            });
        };
        if let Some(reason) = misaligned(p, info) {
            return Err(WeightError::Fp8Layout { name: p.hf_name.clone(), reason });
        }
        let base = p.dst_index * info.rows * info.cols;
        for r in 0..p.rows {
            let dst = base + (p.dst_row + r) * info.cols + p.dst_col;
            codes[dst..dst + p.cols].copy_from_slice(&piece.codes[r * p.cols..(r + 1) * p.cols]);
        }
        for br in 0..p.rows.div_ceil(BLOCK) {
            for bc in 0..p.cols.div_ceil(BLOCK) {
                let file = (p.src_row / BLOCK + br) * piece.scale_cols + p.src_col / BLOCK + bc;
                let plan = (p.dst_index * rb + p.dst_row / BLOCK + br) * cb + p.dst_col / BLOCK + bc;
                scales[plan] = piece.scales[file];
            }
        }
    }
    Ok((codes, scales))
}
