//! Weight descriptions: what each rank holds and where every element comes from.
//!
//! A plan weight is assembled from pieces of HF checkpoint tensors (by Hub name), so the
//! same description drives the random generator (keyed by HF name and element index),
//! the safetensors loader and the GPU fill kernel. Fused projections (qkv, gate|up),
//! tensor-parallel slices, stacked experts and MLA's per-head absorbed matrices are all
//! just pieces placed at different offsets.

use serde::Serialize;

use super::DType;

/// Random initialisation of one HF tensor (scaled like a trained model).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Init {
    pub mean: f32,
    pub std: f32,
}

impl Init {
    pub fn normal(std: f32) -> Self {
        Init { mean: 0.0, std }
    }
    pub fn around_one(std: f32) -> Self {
        Init { mean: 1.0, std }
    }
}

/// A block of one HF tensor copied into a block of the plan weight.
///
/// HF tensors are seen in their logical `[out, in]` orientation (`rows x cols`, a 1-D
/// tensor is one row); `transposed_in_file` marks GPT-2's Conv1D, stored `[in, out]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightPiece {
    pub hf_name: String,
    pub hf_rows: usize,
    pub hf_cols: usize,
    pub transposed_in_file: bool,
    pub src_row: usize,
    pub src_col: usize,
    pub rows: usize,
    pub cols: usize,
    /// Index along the leading dim of a 3-D plan weight (expert, head); 0 for 2-D.
    pub dst_index: usize,
    pub dst_row: usize,
    pub dst_col: usize,
    pub init: Init,
}

impl WeightPiece {
    /// Flat index, in the file's element order, of logical element `(r, c)`.
    pub fn file_index(&self, r: usize, c: usize) -> u64 {
        if self.transposed_in_file {
            (c * self.hf_rows + r) as u64
        } else {
            (r * self.hf_cols + c) as u64
        }
    }
}

/// One weight tensor as this rank holds it: `[count, rows, cols]` (count 1 for 2-D).
/// Elements no piece covers are zero (vocab padding, row-parallel biases off rank 0).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightInfo {
    pub name: String,
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub dtype: DType,
    pub pieces: Vec<WeightPiece>,
}

impl WeightInfo {
    pub fn numel(&self) -> usize {
        self.count * self.rows * self.cols
    }
    pub fn bytes(&self) -> usize {
        self.numel() * self.dtype.bytes()
    }
    /// Elements that come from the checkpoint (excludes padding).
    pub fn real_numel(&self) -> usize {
        self.pieces.iter().map(|p| p.rows * p.cols).sum()
    }
}
