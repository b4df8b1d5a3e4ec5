//! Weight descriptions: what each rank holds and where every element comes from.
//!
//! A plan weight is assembled from pieces of HF checkpoint tensors (by Hub name), so the
//! same description drives the random generator (keyed by HF name and element index),
//! the safetensors loader and the GPU fill kernel. Fused projections (qkv, gate|up),
//! tensor-parallel slices, stacked experts and MLA's per-head absorbed matrices are all
//! just pieces placed at different offsets.

use serde::Serialize;

use super::{DType, Op, Plan};
use crate::quant::Fp8Layout;

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
    /// Device bytes: the values, plus the padded block scales of an FP8 weight.
    pub fn bytes(&self) -> usize {
        match self.dtype {
            DType::F8E4M3 => self.fp8_layout().weight_bytes(),
            _ => self.numel() * self.dtype.bytes(),
        }
    }
    /// Bytes a forward reads: the values and, for FP8, one fp32 scale per block.
    pub fn read_bytes(&self) -> usize {
        match self.dtype {
            DType::F8E4M3 => self.numel() + self.fp8_layout().real_scale_count() * 4,
            _ => self.numel() * self.dtype.bytes(),
        }
    }
    /// Where an FP8 weight's codes and scales sit in its buffer.
    pub fn fp8_layout(&self) -> Fp8Layout {
        Fp8Layout::new(self.count, self.rows, self.cols)
    }
    /// Elements that come from the checkpoint (excludes padding).
    pub fn real_numel(&self) -> usize {
        self.pieces.iter().map(|p| p.rows * p.cols).sum()
    }
}

/// Linear sites whose weights the FP8 checkpoints keep in bf16: the LM head, and
/// Qwen2-MoE's one-row shared-expert gate (a router gate).
const BF16_LINEAR_SITES: &[&str] = &["lm_head", "moe.shared_gate"];

/// Stores the plan's projection and expert weights as FP8 e4m3 with 128x128 block scales,
/// as DeepSeek-V3's and Qwen3's FP8 checkpoints do: every Linear but the LM head and
/// router gates, and both expert matrices of every MoE op. Embeddings, norms, routers,
/// biases and MLA's absorbed per-head matrices (`HeadMatmul`, dequantized from kv_b as
/// SGLang does) stay as they are.
pub fn quantize_linear_weights(plan: &mut Plan) {
    let mut fp8 = Vec::new();
    for p in &plan.ops {
        match &p.op {
            Op::Linear { weight, .. } if !BF16_LINEAR_SITES.contains(&p.site.name.as_str()) => fp8.push(*weight),
            Op::Moe { w13, w2, .. } => fp8.extend([*w13, *w2]),
            _ => {}
        }
    }
    for id in fp8 {
        let w = &mut plan.weights[id.0];
        if w.dtype == DType::BF16 {
            w.dtype = DType::F8E4M3;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests_support::tiny_mla_moe;
    use crate::model::{build_plan, PlanOptions};
    use crate::plan::{RankLayout, Shape};

    #[test]
    fn fp8_covers_projections_and_experts_only() {
        let mut cfg = tiny_mla_moe();
        cfg.quant = crate::quant::Quant::Fp8;
        for shape in [Shape::prefill(2, 5), Shape::decode(2, 5)] {
            let plan = build_plan(&cfg, RankLayout::single(), shape, PlanOptions::default()).unwrap();
            let dtype = |suffix: &str| {
                plan.weights
                    .iter()
                    .find(|w| w.name.ends_with(suffix))
                    .map(|w| w.dtype)
                    .unwrap_or_else(|| panic!("{suffix}"))
            };
            for name in ["attn.qkv_a", "attn.o_proj", "moe.experts_w13", "moe.experts_w2"] {
                assert_eq!(dtype(name), DType::F8E4M3, "{name}");
            }
            for name in ["embed.tokens", "lm_head", "moe.router", "input_norm", "attn.kv_a_norm"] {
                assert_ne!(dtype(name), DType::F8E4M3, "{name}");
            }
            if shape.phase == crate::plan::Phase::Decode {
                assert_eq!(dtype("attn.w_uk"), DType::BF16, "absorbed MLA stays bf16");
            } else {
                assert_eq!(dtype("attn.kv_b"), DType::F8E4M3);
            }
            let w = plan.weights.iter().find(|w| w.name.ends_with("moe.experts_w13")).unwrap();
            let blocks = w.count * w.rows.div_ceil(128) * w.cols.div_ceil(128);
            assert_eq!(w.read_bytes(), w.numel() + 4 * blocks);
            assert!(w.bytes() >= w.read_bytes());
        }
    }
}
