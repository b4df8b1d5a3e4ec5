//! Where weight values come from: the counter-based random generator (default) or HF
//! safetensors checkpoints, assembled into plan weights piece by piece (see
//! `plan::WeightPiece`), so every executor and every rank sees the same values.

pub mod fp8;
pub mod rng;
pub mod safetensors;
pub use self::safetensors::SafetensorsWeights;

use thiserror::Error;

use crate::plan::{WeightInfo, WeightPiece};

#[derive(Debug, Error)]
pub enum WeightError {
    #[error("{file}: cannot read the checkpoint: {reason}")]
    Unreadable { file: String, reason: String },
    #[error("{file}: tensor '{name}' is missing; the model config expects it (check that the checkpoint matches config.json)")]
    Missing { file: String, name: String },
    #[error("{file}: tensor '{name}' has shape {found:?}, the model config implies {expected:?}")]
    Shape { file: String, name: String, found: Vec<usize>, expected: Vec<usize> },
    #[error("{file}: tensor '{name}' has dtype {dtype}; supported are F32, BF16, F16 and F8_E4M3 (with its weight_scale_inv)")]
    DType { file: String, name: String, dtype: String },
    #[error("tensor '{name}': {reason}")]
    Fp8Layout { name: String, reason: String },
}

/// Something that can produce the values of HF tensor blocks.
pub trait WeightSource: Sync {
    /// Writes piece `p`'s block, row by row, into `dst` (row stride `dst_ld`).
    fn fill(&self, p: &WeightPiece, dst: &mut [f32], dst_ld: usize) -> Result<(), WeightError>;
    /// Piece `p`'s e4m3 codes and its tensor's block scales when the checkpoint stores the
    /// tensor in FP8 (None: the values come from `fill` and are quantized here).
    fn fp8_piece(&self, _p: &WeightPiece) -> Result<Option<fp8::Fp8Piece>, WeightError> {
        Ok(None)
    }
    /// True when values are exactly representable in bf16 only after rounding (random
    /// weights are rounded so that CPU and GPU compute from identical bf16 weights).
    fn describe(&self) -> String;
}

/// Random weights keyed by (seed, HF name, element index).
#[derive(Debug, Clone, Copy)]
pub struct RandomWeights {
    pub seed: u64,
}

impl WeightSource for RandomWeights {
    fn fill(&self, p: &WeightPiece, dst: &mut [f32], dst_ld: usize) -> Result<(), WeightError> {
        let seed = rng::tensor_seed(self.seed, &p.hf_name);
        for r in 0..p.rows {
            let row = &mut dst[r * dst_ld..r * dst_ld + p.cols];
            for (c, v) in row.iter_mut().enumerate() {
                *v = rng::value(seed, p.file_index(p.src_row + r, p.src_col + c), p.init.mean, p.init.std);
            }
        }
        Ok(())
    }
    fn describe(&self) -> String {
        format!("random (seed {})", self.seed)
    }
}

/// The plan weight `info` as a dense f32 array `[count, rows, cols]`; elements no piece
/// covers are zero. With `round_bf16`, every value is rounded to bf16 (what the GPU holds).
pub fn materialize(info: &WeightInfo, src: &dyn WeightSource, round_bf16: bool) -> Result<Vec<f32>, WeightError> {
    if info.dtype == crate::plan::DType::F8E4M3 {
        // Exactly the values the codes stand for (code x scale is exact in f32).
        let (codes, scales) = fp8::materialize_fp8(info, src)?;
        return Ok(crate::quant::dequantize_blocks(&codes, &scales, info.count, info.rows, info.cols));
    }
    materialize_f32(info, src, round_bf16)
}

/// The pieces' values in f32, without quantization.
fn materialize_f32(info: &WeightInfo, src: &dyn WeightSource, round_bf16: bool) -> Result<Vec<f32>, WeightError> {
    let mut data = vec![0f32; info.numel()];
    for p in &info.pieces {
        let start = (p.dst_index * info.rows + p.dst_row) * info.cols + p.dst_col;
        src.fill(p, &mut data[start..], info.cols)?;
    }
    if round_bf16 && info.dtype == crate::plan::DType::BF16 {
        data.iter_mut().for_each(|v| *v = half::bf16::from_f32(*v).to_f32());
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{build_plan, tests_support};
    use crate::plan::{RankLayout, Shape};

    /// A TP-sharded weight is exactly the matching block of the unsharded one.
    #[test]
    fn shards_are_blocks_of_the_whole() {
        let cfg = tests_support::tiny_dense();
        let whole = build_plan(&cfg, RankLayout::single(), Shape::prefill(1, 4), Default::default()).unwrap();
        let src = RandomWeights { seed: 7 };
        let find = |plan: &crate::plan::Plan, name: &str| {
            let w = plan.weights.iter().find(|w| w.name == name).unwrap().clone();
            (materialize(&w, &src, false).unwrap(), w)
        };
        let (full_down, fw) = find(&whole, "layers.1.mlp.down");
        for rank in 0..2 {
            let layout = RankLayout { world: 2, rank, attn_tp: 2, dp: 1, ep: 1, moe_tp: 2 };
            let shard = build_plan(&cfg, layout, Shape::prefill(1, 4), Default::default()).unwrap();
            let (part, pw) = find(&shard, "layers.1.mlp.down");
            assert_eq!(pw.cols * 2, fw.cols);
            for r in 0..pw.rows {
                for c in 0..pw.cols {
                    assert_eq!(part[r * pw.cols + c], full_down[r * fw.cols + rank * pw.cols + c]);
                }
            }
        }
    }
}
