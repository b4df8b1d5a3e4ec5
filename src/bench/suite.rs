//! `fwdbench kernel bench --suite seed`: the seed pipeline's per-layer microbenchmarks
//! (seed-pipeline.md §1: attention, linear, MLA, MoE), each a one-op plan of a real model
//! config at the seed's shapes. The lists below are the whole suite; they are kept short
//! enough to run in about three minutes on one H200 (fewer points rather than a longer run).

use std::path::Path;

use super::kernel::OpCase;
use crate::config::hf::load_model_config;
use crate::config::model::ModelConfig;
use crate::plan::{OpQuery, Shape};

/// Decode points: batch sizes at this context (the seed's attention and MLA decode).
pub const DECODE_CTX: usize = 4096;
pub const DECODE_BATCHES: [usize; 4] = [1, 8, 32, 64];
/// Sigma V2 attention (64 q / 8 kv heads, d128) at each attention-TP width.
pub const ATTN_TP: [usize; 3] = [1, 8, 16];
pub const ATTN_PREFILL_TOKENS: [usize; 4] = [128, 512, 2048, 8192];
/// The seed's linear.py: 7168 -> 4096, whole and split over `mp` ranks.
pub const LINEAR_IN_OUT: (usize, usize) = (7168, 4096);
pub const LINEAR_MP: [usize; 2] = [8, 16];
pub const LINEAR_M: [usize; 5] = [1, 16, 128, 1024, 4096];
/// DeepSeek-V3 MLA: 128 heads / mp; absorbed decode and the 192/128 MHA-form prefill.
pub const MLA_MP: [usize; 3] = [1, 8, 16];
pub const MLA_PREFILL_SEQ: [usize; 2] = [1024, 4096];
/// DeepSeek-V3 MoE (256 experts, top-8, H 7168, I 2048): all local, and the EP8 shard.
pub const MOE_TOKENS: [usize; 7] = [1, 8, 32, 64, 512, 4096, 16384];
pub const MOE_EP: [usize; 2] = [1, 8];
/// Qwen3-235B's MoE (128 experts, top-8, H 4096, I 1536) at this many tokens.
pub const QWEN_MOE_TOKENS: usize = 4096;

/// How to build one point; kept apart from building so `--list` and tests see the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Point {
    /// Op `op` of `model`'s full config on rank 0 of tp `tp`, ep `ep`, at `shape`.
    Model {
        model: &'static str,
        op: &'static str,
        tp: usize,
        ep: usize,
        shape: Shape,
    },
    Gemm {
        m: usize,
        n: usize,
        k: usize,
    },
}

fn shape_label(s: Shape) -> String {
    match s.phase {
        crate::plan::Phase::Prefill if s.batch == 1 => format!("prefill t{}", s.seq),
        crate::plan::Phase::Prefill => format!("prefill b{} s{}", s.batch, s.seq),
        crate::plan::Phase::Decode => format!("decode b{} ctx{}", s.batch, s.seq),
    }
}

/// Every point of the seed suite with its row key, in run order.
pub fn seed_points() -> Vec<(String, Point)> {
    let mut out = Vec::new();
    let decode = || DECODE_BATCHES.map(|b| Shape::decode(b, DECODE_CTX));
    for tp in ATTN_TP {
        for shape in ATTN_PREFILL_TOKENS.map(|t| Shape::prefill(1, t)).into_iter().chain(decode()) {
            let point = Point::Model { model: "sigma", op: "attention", tp, ep: 1, shape };
            out.push((format!("attention sigma tp{tp} {}", shape_label(shape)), point));
        }
    }
    let (k, n) = LINEAR_IN_OUT;
    let mut splits = vec![("whole".to_string(), n, k)];
    for mp in LINEAR_MP {
        splits.push((format!("col mp{mp}"), n / mp, k));
        splits.push((format!("row mp{mp}"), n, k / mp));
    }
    for (split, n, k) in splits {
        for m in LINEAR_M {
            out.push((format!("linear {}x{} {split} m{m}", LINEAR_IN_OUT.0, LINEAR_IN_OUT.1), Point::Gemm { m, n, k }));
        }
    }
    for mp in MLA_MP {
        for shape in decode() {
            let point = Point::Model { model: "deepseek", op: "mla_decode_attention", tp: mp, ep: 1, shape };
            out.push((format!("mla deepseek mp{mp} {}", shape_label(shape)), point));
        }
        for s in MLA_PREFILL_SEQ {
            let shape = Shape::prefill(1, s);
            let point = Point::Model { model: "deepseek", op: "mla_prefill_attention", tp: mp, ep: 1, shape };
            out.push((format!("mla deepseek mp{mp} {}", shape_label(shape)), point));
        }
    }
    for ep in MOE_EP {
        for t in MOE_TOKENS {
            let point = Point::Model { model: "deepseek", op: "moe", tp: ep, ep, shape: Shape::prefill(1, t) };
            out.push((format!("moe deepseek ep{ep} t{t}"), point));
        }
    }
    let point = Point::Model { model: "qwen", op: "moe", tp: 1, ep: 1, shape: Shape::prefill(1, QWEN_MOE_TOKENS) };
    out.push((format!("moe qwen ep1 t{QWEN_MOE_TOKENS}"), point));
    out
}

/// The full configs the suite reads, loaded once.
pub struct SuiteModels {
    models: Vec<(&'static str, ModelConfig)>,
}

impl SuiteModels {
    pub fn load(model_dir: &Path) -> anyhow::Result<Self> {
        let mut models = Vec::new();
        for name in ["sigma", "deepseek", "qwen"] {
            let path = model_dir.join(name).join("config_full.json");
            let mut cfg = load_model_config(&path, &[])
                .map_err(|e| anyhow::anyhow!("the seed suite reads {}: {e}", path.display()))?;
            // The seed's microbenchmarks are bf16, whatever format the checkpoint ships in.
            cfg.quant = crate::quant::Quant::Bf16;
            models.push((name, cfg));
        }
        Ok(SuiteModels { models })
    }

    /// The one-op plan of `point`.
    pub fn case(&self, key: &str, point: &Point) -> anyhow::Result<OpCase> {
        match point {
            Point::Gemm { m, n, k } => Ok(OpCase::gemm(key.to_string(), *m, *n, *k)),
            Point::Model { model, op, tp, ep, shape } => {
                let cfg = &self.models.iter().find(|(n, _)| n == model).expect("suite models are loaded").1;
                let layout = crate::dist::rank_layouts(*tp, *ep, 1)?[0];
                let query = OpQuery { name: op.to_string(), layer: None };
                OpCase::from_model(key.to_string(), model, cfg, layout, *shape, &query)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Op;

    #[test]
    fn every_seed_point_is_the_op_and_shape_it_names() {
        let models = SuiteModels::load(Path::new("model_conf")).unwrap();
        let points = seed_points();
        let keys: std::collections::BTreeSet<_> = points.iter().map(|(k, _)| k).collect();
        assert_eq!(keys.len(), points.len(), "row keys are unique");
        for (key, point) in &points {
            let case = models.case(key, point).unwrap();
            let dims = case.dims();
            match (case.op(), key.split(' ').next().unwrap()) {
                (Op::Attention { q_heads, k_heads, d_qk, .. }, "attention") => {
                    let tp = case.plan.layout.attn_tp;
                    assert_eq!((*q_heads, *k_heads, *d_qk), (64 / tp, (8 / tp).max(1), 128), "{key}");
                }
                (Op::MlaDecodeAttention { heads, kv_lora_rank, .. }, "mla") => {
                    assert_eq!((*heads * case.plan.layout.attn_tp, *kv_lora_rank), (128, 512), "{key}")
                }
                (Op::MlaPrefillAttention { heads, d_nope, d_rope, d_v, .. }, "mla") => {
                    assert_eq!((*heads * case.plan.layout.attn_tp, d_nope + d_rope, *d_v), (128, 192, 128), "{key}")
                }
                (Op::Moe { local_experts, experts_total, top_k, inter, .. }, "moe") => {
                    let want = if key.contains("qwen") {
                        (128, 128, 1536)
                    } else if key.contains("ep8") {
                        (32, 256, 2048)
                    } else {
                        (256, 256, 2048)
                    };
                    assert_eq!((*local_experts, *experts_total, *inter), want, "{key}");
                    assert_eq!(*top_k, 8);
                }
                (Op::Linear { .. }, "linear") => assert!(dims.starts_with("m="), "{key}: {dims}"),
                (op, _) => panic!("{key}: got {}", op.kind_name()),
            }
            // A lone MoE op is costed from its input ids: one token of an EP8 shard may route
            // to no local expert at all, and then does (and counts) no expert work.
            let idle_shard = case.expert_load().is_some_and(|l| {
                let Op::Moe { expert_start, local_experts, .. } = case.op() else { unreachable!() };
                l.layers[0][*expert_start..expert_start + local_experts].iter().all(|&c| c == 0)
            });
            assert!(!dims.is_empty() && (case.cost().flops > 0.0 || idle_shard), "{key}");
        }
        // The MoE's first layer: DeepSeek's first three layers are dense.
        let (key, moe) = points.iter().find(|(k, _)| k.starts_with("moe deepseek ep8 t4096")).unwrap();
        let case = models.case(key, moe).unwrap();
        assert_eq!(case.plan.ops[0].site.layer, Some(3));
        assert!(case.dims().contains("t=4096") && case.dims().contains("e=32 first=0"), "{}", case.dims());
    }
}
