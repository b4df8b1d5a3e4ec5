//! `fwdbench analyze`: MFU and MBU of recorded latencies (seed logs and CSVs, fwdbench
//! CSVs) under two FLOP conventions side by side, so old results stay comparable:
//! - **ours**: the plan's cost model (plan/cost.rs), built for the row's model, deploy and
//!   shape on every rank: LM head on the last prefill position only, both attention
//!   matmuls over the visible (causal) pairs, routed experts as selected;
//! - **seed**: the seed pipeline's FlopCounter, reimplemented from its config keys: LM
//!   head on every prefill position, attention core as one GEMM `2·S·C·H·D` (for MHA/GQA
//!   decode half the real work), `top_k + shared` experts, a router GEMM.
//!
//! Both use the global batch, every GPU of the deployment and fwdbench's peaks (989 TFLOP/s
//! bf16, 4277 GB/s). The published Sigma V2 MFU figures reproduce at 989, not at the 989.5
//! of the seed's analysis.py (which also divides by `tp<N>` GPUs with Device 0's batch).

use serde_json::Value;

use super::compare::Measurement;
use super::{COPY_GBS, PEAK_TFLOPS};
use crate::config::model::ModelConfig;
use crate::model::{build_plan, PlanOptions};
use crate::plan::cost::PhaseCost;
use crate::plan::{Phase, RankLayout, Shape};

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error("config key `{0}` is missing or not a number; the seed's FLOP counter needs it")]
    MissingKey(&'static str),
    #[error("{phase} bsz {bsz} seq {seq} cannot be planned on this deployment: {source}")]
    Plan { phase: &'static str, bsz: usize, seq: usize, source: crate::model::PlanError },
}

/// The seed's ModelConfig fields, read with its aliases from a HF-style config.json.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedModel {
    pub layers: f64,
    pub dense_layers: f64,
    pub vocab: f64,
    pub hidden: f64,
    pub heads: f64,
    /// None: MHA (`3·hidden` QKV columns).
    pub kv_heads: Option<f64>,
    pub head_dim: f64,
    pub intermediate: f64,
    pub experts: f64,
    pub top_k: f64,
    pub shared_experts: f64,
    pub moe_intermediate: f64,
    pub q_lora_rank: f64,
    pub kv_lora_rank: f64,
    pub rope_dim: f64,
    pub nope_dim: f64,
}

fn key(cfg: &Value, names: &[&'static str]) -> Option<f64> {
    names.iter().find_map(|n| cfg.get(*n).and_then(Value::as_f64))
}

impl SeedModel {
    /// As the seed's `ModelConfig.from_dict` reads it; keys it treats as optional are 0.
    pub fn from_config(cfg: &Value) -> Result<Self, AnalyzeError> {
        let need = |names: &[&'static str]| key(cfg, names).ok_or(AnalyzeError::MissingKey(names[0]));
        let opt = |names: &[&'static str]| key(cfg, names).unwrap_or(0.0);
        let hidden = need(&["hidden_size", "n_embed"])?;
        let heads = need(&["num_attention_heads", "n_head"])?;
        Ok(SeedModel {
            layers: need(&["num_hidden_layers", "n_layer"])?,
            dense_layers: opt(&["first_k_dense_replace"]),
            vocab: need(&["vocab_size"])?,
            hidden,
            heads,
            kv_heads: key(cfg, &["num_key_value_heads"]),
            head_dim: key(cfg, &["head_dim", "v_head_dim"]).unwrap_or(hidden / heads),
            intermediate: opt(&["intermediate_size", "n_inner"]),
            experts: opt(&["n_routed_experts", "num_local_experts", "num_experts"]),
            top_k: opt(&["num_experts_per_tok"]),
            shared_experts: opt(&["n_shared_experts"]),
            moe_intermediate: opt(&["moe_intermediate_size"]),
            q_lora_rank: opt(&["q_lora_rank"]),
            kv_lora_rank: opt(&["kv_lora_rank"]),
            rope_dim: opt(&["qk_rope_head_dim"]),
            nope_dim: opt(&["qk_nope_head_dim"]),
        })
    }

    /// FLOPs of one sequence as the seed counts them. `seq_len` is what the seed logs:
    /// the prompt for prefill, the cache length (prompt + 1) for decode.
    pub fn flops_per_sequence(&self, phase: Phase, seq_len: usize) -> f64 {
        let gemm = |m: f64, n: f64, k: f64| 2.0 * m * n * k;
        let cache = seq_len as f64;
        let s = if phase == Phase::Prefill { cache } else { 1.0 };
        let (h, heads, d) = (self.hidden, self.heads, self.head_dim);
        let lm_head = gemm(s, h, self.vocab);
        let (qkv, attention_dim) = if self.rope_dim == 0.0 {
            let cols = self.kv_heads.map_or(3.0 * h, |kv| heads * d + 2.0 * kv * d);
            (gemm(s, h, cols), heads * d)
        } else {
            let (q_lora, kv_lora, rope, nope) = (self.q_lora_rank, self.kv_lora_rank, self.rope_dim, self.nope_dim);
            let mut f = gemm(s, h, q_lora + kv_lora + rope) + gemm(s, q_lora, heads * (rope + nope));
            let dim = if phase == Phase::Prefill {
                f += gemm(s, kv_lora, heads * (d + nope));
                heads * (2.0 * nope + rope)
            } else {
                f += gemm(s, heads, kv_lora * nope) + gemm(s, heads, kv_lora * d);
                heads * (2.0 * kv_lora + rope)
            };
            (f, dim)
        };
        let attention = qkv + gemm(s, cache, attention_dim) + gemm(s, heads * d, h);
        let mlp = |inter: f64, tokens: f64| gemm(tokens, h, 2.0 * inter) + gemm(tokens, inter, h) + tokens * inter;
        let mut total = lm_head + attention * self.layers + mlp(self.intermediate, s) * self.dense_layers;
        if self.experts > 0.0 {
            let routed = s * (self.top_k + self.shared_experts);
            total +=
                (gemm(s, h, self.experts) + mlp(self.moe_intermediate, routed)) * (self.layers - self.dense_layers);
        }
        total
    }
}

/// One row's utilisation under both conventions.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub row: Measurement,
    pub world: usize,
    /// Every rank's plan together.
    pub ours_flops: f64,
    pub ours_mfu: f64,
    pub ours_mbu: f64,
    pub seed_flops: f64,
    pub seed_mfu: f64,
}

/// `row` (fwdbench conventions) against the plans of `layouts` (every rank) and the seed's
/// counter on `seed`.
pub fn analyze(
    row: &Measurement,
    cfg: &ModelConfig,
    seed: &SeedModel,
    layouts: &[RankLayout],
) -> Result<Analysis, AnalyzeError> {
    let shape = Shape { phase: row.phase, batch: row.bsz, seq: row.seq };
    let (mut flops, mut bytes) = (0.0, 0.0);
    for layout in layouts {
        let plan = build_plan(cfg, *layout, shape, PlanOptions::default()).map_err(|source| AnalyzeError::Plan {
            phase: row.phase.name(),
            bsz: row.bsz,
            seq: row.seq,
            source,
        })?;
        let cost = PhaseCost::of(&plan, cfg);
        flops += cost.flops;
        bytes += cost.mbu_bytes();
    }
    let world = layouts.len().max(1);
    let secs = row.latency_ms / 1e3;
    let seed_seq = if row.phase == Phase::Decode { row.seq + 1 } else { row.seq };
    let seed_flops = seed.flops_per_sequence(row.phase, seed_seq) * row.bsz as f64;
    let mfu = |f: f64| f / secs / (world as f64 * PEAK_TFLOPS * 1e12);
    Ok(Analysis {
        row: row.clone(),
        world,
        ours_flops: flops,
        ours_mfu: mfu(flops),
        ours_mbu: bytes / secs / (world as f64 * COPY_GBS * 1e9),
        seed_flops,
        seed_mfu: mfu(seed_flops),
    })
}

/// What the two conventions are, for the head of `analyze`'s output.
pub const CONVENTIONS: [&str; 3] = [
    "ours: fwdbench's cost model on every rank's plan: LM head on the last prefill position only, QK^T and PV over causal pairs, routed experts as selected; MFU over world x 989 TFLOP/s, MBU = weights + KV read over world x 4277 GB/s",
    "seed: the seed pipeline's FLOP counter: LM head on every prefill position, attention core as one GEMM 2*S*C*H*D (half of MHA/GQA decode attention), top_k + shared experts; global batch, world x 989 TFLOP/s (the published Sigma V2 MFUs use 989)",
    "recorded: the file's own MFU column (seed CSV: analysis.py with tp<N> GPUs and a 989.5 peak; kept only where the batch needed no DP conversion)",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn qwen_sigma() -> SeedModel {
        let text = std::fs::read_to_string("tests/data/reports/model_conf/qwen_sigma/config_full.json").unwrap();
        SeedModel::from_config(&serde_json::from_str(&text).unwrap()).unwrap()
    }

    #[test]
    fn seed_counter_gives_the_published_sigma_flops() {
        let m = qwen_sigma();
        // seed-pipeline.md §2: 23.98 TFLOP at 1x500, 0.04796 TFLOP decode at a 500-token cache.
        assert!((m.flops_per_sequence(Phase::Prefill, 500) / 1e12 - 23.98).abs() < 0.005);
        assert!((m.flops_per_sequence(Phase::Decode, 500) / 1e12 - 0.04796).abs() < 0.000005);
        let lm_head_rest: f64 = 2.0 * 499.0 * 5120.0 * 200064.0;
        assert!((lm_head_rest / 1e12 - 1.02).abs() < 0.005, "the LM head on 499 more positions");
    }

    #[test]
    fn missing_keys_are_named() {
        let e = SeedModel::from_config(&serde_json::json!({"hidden_size": 8})).unwrap_err().to_string();
        assert!(e.contains("num_attention_heads"), "{e}");
    }
}
