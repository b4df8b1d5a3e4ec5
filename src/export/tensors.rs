//! Which Hub tensors a model has, read off its plans: every plan weight is assembled from
//! pieces of Hub tensors (by name, logical `[out, in]` shape, Conv1D flag and init), so
//! the union of the pieces of an unsharded prefill and decode plan is the checkpoint.

use std::collections::BTreeMap;

use crate::config::model::ModelConfig;
use crate::model::{build_plan, PlanError, PlanOptions};
use crate::plan::{DType, Init, Op, Plan, RankLayout, Shape, WeightPiece};
use crate::weights::{WeightError, WeightSource};

/// One tensor of the Hub checkpoint, as fwdbench reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct HubTensor {
    pub name: String,
    /// Logical `[out, in]` orientation (a 1-D tensor is one row).
    pub rows: usize,
    pub cols: usize,
    /// GPT-2's Conv1D: the file holds `[in, out]`.
    pub transposed_in_file: bool,
    /// Stored as a vector `[cols]` (norm weights, biases), not a `[1, cols]` matrix.
    pub vector: bool,
    /// The plan keeps it in f32 (DeepSeek's correction bias), so the file does too.
    pub f32_in_plan: bool,
    pub init: Init,
}

impl HubTensor {
    /// The shape written into the file.
    pub fn file_shape(&self) -> Vec<usize> {
        if self.vector {
            vec![self.cols]
        } else if self.transposed_in_file {
            vec![self.cols, self.rows]
        } else {
            vec![self.rows, self.cols]
        }
    }

    pub fn numel(&self) -> usize {
        self.rows * self.cols
    }

    /// A piece covering the whole tensor, what a weight source fills.
    fn whole(&self) -> WeightPiece {
        WeightPiece {
            hf_name: self.name.clone(),
            hf_rows: self.rows,
            hf_cols: self.cols,
            transposed_in_file: self.transposed_in_file,
            src_row: 0,
            src_col: 0,
            rows: self.rows,
            cols: self.cols,
            dst_index: 0,
            dst_row: 0,
            dst_col: 0,
            init: self.init,
        }
    }

    /// The values in the file's element order (Conv1D transposed), as `src` gives them.
    pub fn values(&self, src: &dyn WeightSource) -> Result<Vec<f32>, WeightError> {
        let mut logical = vec![0f32; self.numel()];
        src.fill(&self.whole(), &mut logical, self.cols)?;
        if !self.transposed_in_file {
            return Ok(logical);
        }
        let mut file = vec![0f32; logical.len()];
        for r in 0..self.rows {
            for c in 0..self.cols {
                file[c * self.rows + r] = logical[r * self.cols + c];
            }
        }
        Ok(file)
    }
}

/// Every Hub tensor of `cfg`, sorted by name.
pub fn hub_tensors(cfg: &ModelConfig) -> Result<Vec<HubTensor>, PlanError> {
    // Decode plans of MLA models read kv_b through per-head pieces, prefill through whole
    // rows; the union covers both (and any graph whose phases read different tensors).
    let mut by_name: BTreeMap<String, HubTensor> = BTreeMap::new();
    for shape in [Shape::prefill(1, 1), Shape::decode(1, 1)] {
        let plan = build_plan(cfg, RankLayout::single(), shape, PlanOptions::default())?;
        collect(&plan, &mut by_name);
    }
    Ok(by_name.into_values().collect())
}

fn collect(plan: &Plan, by_name: &mut BTreeMap<String, HubTensor>) {
    // A one-row Hub tensor is a matrix only where an op multiplies by it (Qwen2-MoE's
    // `[1, hidden]` shared-expert gate); norm weights and biases are vectors.
    let mut matrices = vec![false; plan.weights.len()];
    for p in &plan.ops {
        if let Op::Linear { weight, .. } = p.op {
            matrices[weight.0] = true;
        }
    }
    for (w, is_matrix) in plan.weights.iter().zip(matrices) {
        for p in &w.pieces {
            by_name.entry(p.hf_name.clone()).or_insert_with(|| HubTensor {
                name: p.hf_name.clone(),
                rows: p.hf_rows,
                cols: p.hf_cols,
                transposed_in_file: p.transposed_in_file,
                vector: p.hf_rows == 1 && !is_matrix,
                f32_in_plan: w.dtype == DType::F32,
                init: p.init,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::hf::load_model_config;
    use std::path::Path;

    fn tensors(fixture: &str) -> Vec<HubTensor> {
        let cfg = load_model_config(&Path::new("tests/fixtures").join(fixture).join("config.json"), &[]).unwrap();
        hub_tensors(&cfg).unwrap()
    }

    #[test]
    fn conv1d_vectors_and_one_row_matrices_get_hub_shapes() {
        let gpt = tensors("gpt2");
        let find = |ts: &[HubTensor], n: &str| ts.iter().find(|t| t.name == n).unwrap().file_shape();
        assert_eq!(find(&gpt, "transformer.h.0.attn.c_attn.weight"), vec![64, 192]);
        assert_eq!(find(&gpt, "transformer.h.0.mlp.c_fc.weight"), vec![64, 256]);
        assert_eq!(find(&gpt, "transformer.h.1.ln_2.bias"), vec![64]);
        assert!(!gpt.iter().any(|t| t.name == "lm_head.weight"), "a tied head is not stored");
        let moe = tensors("qwen2_moe");
        assert_eq!(find(&moe, "model.layers.0.mlp.shared_expert_gate.weight"), vec![1, 64]);
        assert_eq!(find(&moe, "model.layers.0.self_attn.q_proj.bias").len(), 1);
        let ds = tensors("deepseek_v3");
        assert!(ds.iter().any(|t| t.name.ends_with("kv_b_proj.weight")));
        assert!(ds.iter().find(|t| t.name.ends_with("e_score_correction_bias")).unwrap().f32_in_plan);
    }

    /// Transposition writes element (r, c) of the logical matrix at file index c*rows + r.
    #[test]
    fn conv1d_values_are_written_in_file_order() {
        struct Counter;
        impl WeightSource for Counter {
            fn fill(&self, p: &WeightPiece, dst: &mut [f32], ld: usize) -> Result<(), WeightError> {
                for r in 0..p.rows {
                    for c in 0..p.cols {
                        dst[r * ld + c] = (r * 10 + c) as f32;
                    }
                }
                Ok(())
            }
            fn describe(&self) -> String {
                "counter".into()
            }
        }
        let t = HubTensor {
            name: "w".into(),
            rows: 2,
            cols: 3,
            transposed_in_file: true,
            vector: false,
            f32_in_plan: false,
            init: Init::normal(1.0),
        };
        assert_eq!(t.values(&Counter).unwrap(), vec![0.0, 10.0, 1.0, 11.0, 2.0, 12.0]);
        let plain = HubTensor { transposed_in_file: false, ..t };
        assert_eq!(plain.values(&Counter).unwrap(), vec![0.0, 1.0, 2.0, 10.0, 11.0, 12.0]);
    }
}
