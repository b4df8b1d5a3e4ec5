//! One-op plans: a single op of a model's plan, with only the tensors, weights and caches
//! it touches, so `fwdbench kernel check/bench` binds and launches exactly what `run`
//! would, at exactly the shape `run` plans, without the rest of the model.
//!
//! Weights keep their names (and HF pieces), so the counter RNG gives a one-op plan the
//! values a full run uses. The shape, layout and positions stay too: attention reads the
//! positions, MoE the layout's expert range, the cost model the shape's context.

use std::collections::{BTreeSet, HashMap};

use thiserror::Error;

use super::{
    CacheId, DType, IdRef, Init, Op, OpSite, Plan, PlannedOp, RankLayout, Shape, TensorId, TensorInfo, View, WeightId,
    WeightInfo, WeightPiece,
};

/// Which op of a plan: `name` is a family stem (`moe`), a kind (`mla_decode_attention`)
/// or a site (`attn.qkv`); `layer` picks the layer (default: the first that has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpQuery {
    pub name: String,
    pub layer: Option<usize>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum OpQueryError {
    #[error("--op {name}: {model} has no such op; op families: {families}; kinds: {kinds}; sites: {sites}")]
    Unknown { name: String, model: String, families: String, kinds: String, sites: String },
    #[error("--op {name} --layer {layer}: layer {layer} of {model} has none; layers with one: {layers}")]
    NotInLayer { name: String, layer: usize, model: String, layers: String },
    #[error(
        "--op {name}: a collective ({kind}) needs every rank of the deployment; time it inside a forward with `fwdbench run --deploy ...`"
    )]
    Collective { name: String, kind: &'static str },
}

fn matches(p: &PlannedOp, name: &str) -> bool {
    p.op.family() == name || p.op.kind_name() == name || p.site.name == name
}

/// A kind or site names an op more narrowly than a family does, so it wins: `--op attention`
/// is the attention kernel, not the cache write of the same family that runs before it.
fn matches_exactly(p: &PlannedOp, name: &str) -> bool {
    p.op.kind_name() == name || p.site.name == name
}

fn joined<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>().join(", ")
}

impl Plan {
    /// Index of the op `q` names.
    pub fn find_op(&self, q: &OpQuery) -> Result<usize, OpQueryError> {
        let exact: Vec<usize> = (0..self.ops.len()).filter(|&i| matches_exactly(&self.ops[i], &q.name)).collect();
        let hits = if exact.is_empty() {
            (0..self.ops.len()).filter(|&i| matches(&self.ops[i], &q.name)).collect()
        } else {
            exact
        };
        let Some(&first) = hits.first() else {
            return Err(OpQueryError::Unknown {
                name: q.name.clone(),
                model: self.model.clone(),
                families: joined(self.ops.iter().map(|p| p.op.family())),
                kinds: joined(self.ops.iter().map(|p| p.op.kind_name())),
                sites: joined(self.ops.iter().map(|p| p.site.name.as_str())),
            });
        };
        let index = match q.layer {
            None => first,
            Some(layer) => *hits.iter().find(|&&i| self.ops[i].site.layer == Some(layer)).ok_or_else(|| {
                let layers = hits.iter().filter_map(|&i| self.ops[i].site.layer).collect::<BTreeSet<_>>();
                OpQueryError::NotInLayer {
                    name: q.name.clone(),
                    layer,
                    model: self.model.clone(),
                    layers: layers.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(", "),
                }
            })?,
        };
        if let Op::Collective { .. } = self.ops[index].op {
            return Err(OpQueryError::Collective { name: q.name.clone(), kind: self.ops[index].op.kind_name() });
        }
        Ok(index)
    }

    /// A plan holding only op `index`: its tensors, weights and caches (ids renumbered in
    /// order of use), plus `input_ids` (tensor 0, which embedding reads) and a `logits`
    /// view on the op's first output (on `input_ids` for an op that writes only a cache).
    /// `logit_rows` is empty: a one-op plan's "logits" are not a model's.
    pub fn extract_op(&self, index: usize) -> Plan {
        let planned = &self.ops[index];
        let mut op = planned.op.clone();
        let mut tensors: HashMap<TensorId, TensorId> = HashMap::from([(self.input_ids, TensorId(0))]);
        let mut tensor_order = vec![self.input_ids];
        let mut weights: HashMap<WeightId, WeightId> = HashMap::new();
        let mut weight_order = Vec::new();
        let mut caches: HashMap<CacheId, CacheId> = HashMap::new();
        let mut cache_order = Vec::new();
        op.visit_ids_mut(&mut |r| match r {
            IdRef::Tensor(id) => {
                let n = tensors.len();
                *id = *tensors.entry(*id).or_insert_with(|| {
                    tensor_order.push(*id);
                    TensorId(n)
                });
            }
            IdRef::Weight(id) => {
                let n = weights.len();
                *id = *weights.entry(*id).or_insert_with(|| {
                    weight_order.push(*id);
                    WeightId(n)
                });
            }
            IdRef::Cache(id) => {
                let n = caches.len();
                *id = *caches.entry(*id).or_insert_with(|| {
                    cache_order.push(*id);
                    CacheId(n)
                });
            }
        });
        let tensors: Vec<TensorInfo> = tensor_order.iter().map(|id| self.tensor(*id).clone()).collect();
        let logits = match planned.op.outputs().first() {
            // The view itself, remapped: same window of the same (renumbered) tensor.
            Some(out) => {
                let new = TensorId(tensor_order.iter().position(|t| t == out).expect("outputs are visited"));
                View { id: new, col: 0, cols: tensors[new.0].cols }
            }
            None => View { id: TensorId(0), col: 0, cols: tensors[0].cols },
        };
        Plan {
            model: self.model.clone(),
            shape: self.shape,
            layout: self.layout,
            tensors,
            weights: weight_order.iter().map(|id| self.weight(*id).clone()).collect(),
            caches: cache_order.iter().map(|id| self.caches[id.0].clone()).collect(),
            ops: vec![PlannedOp { site: planned.site.clone(), op }],
            input_ids: TensorId(0),
            positions: self.positions.clone(),
            logits,
            logit_rows: Vec::new(),
            first_sequence: self.first_sequence,
            local_batch: self.local_batch,
        }
    }
}

/// A one-op plan of `out [m, n] = x [m, k] . W^T` (bf16), for GEMM shapes no model config
/// reaches (the seed's 7168 -> 4096 linear and its column/row-parallel slices). The weight
/// is one HF-like tensor `gemm.<n>x<k>.weight` (a GPU keeps weights by name, so each
/// shape has its own), scaled like a trained model's.
pub fn gemm_plan(m: usize, n: usize, k: usize) -> Plan {
    let name = format!("gemm.{n}x{k}.weight");
    let piece = WeightPiece {
        hf_name: name.clone(),
        hf_rows: n,
        hf_cols: k,
        transposed_in_file: false,
        src_row: 0,
        src_col: 0,
        rows: n,
        cols: k,
        dst_index: 0,
        dst_row: 0,
        dst_col: 0,
        init: Init::normal(0.02),
    };
    let tensor = |name: &str, rows, cols, dtype| TensorInfo { name: name.into(), rows, cols, dtype };
    let x = View { id: TensorId(1), col: 0, cols: k };
    let out = View { id: TensorId(2), col: 0, cols: n };
    Plan {
        model: format!("gemm m{m} n{n} k{k}"),
        shape: Shape::prefill(1, m),
        layout: RankLayout::single(),
        tensors: vec![
            tensor("input_ids", m, 1, DType::I32),
            tensor("x", m, k, DType::BF16),
            tensor("out", m, n, DType::BF16),
        ],
        weights: vec![WeightInfo { name, count: 1, rows: n, cols: k, dtype: DType::BF16, pieces: vec![piece] }],
        caches: Vec::new(),
        ops: vec![PlannedOp {
            site: OpSite { layer: None, name: "gemm".into() },
            op: Op::Linear { x, weight: WeightId(0), bias: None, alpha: 1.0, out },
        }],
        input_ids: TensorId(0),
        positions: (0..m).collect(),
        logits: out,
        logit_rows: Vec::new(),
        first_sequence: 0,
        local_batch: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::ModelConfig;
    use crate::exec::cpu::{load_weights, CpuRun, KvCaches};
    use crate::exec::cuda::kernels::scratch_bytes;
    use crate::model::tests_support::{tiny_dense, tiny_mla_moe};
    use crate::model::{build_plan, PlanOptions};
    use crate::plan::cost::op_cost;
    use crate::plan::memory::{plan_memory, Target};
    use crate::weights::RandomWeights;

    /// The ids an op refers to, in visit order: (0 tensor | 1 weight | 2 cache, index).
    fn ids(op: &Op) -> Vec<(u8, usize)> {
        let mut out = Vec::new();
        op.clone().visit_ids_mut(&mut |r| {
            out.push(match r {
                IdRef::Tensor(t) => (0, t.0),
                IdRef::Weight(w) => (1, w.0),
                IdRef::Cache(c) => (2, c.0),
            })
        });
        out
    }

    /// (extracted id -> full id) of each kind, input_ids included.
    fn id_map(full: &Plan, i: usize, ex: &Plan) -> [HashMap<usize, usize>; 3] {
        let mut maps: [HashMap<usize, usize>; 3] = Default::default();
        maps[0].insert(ex.input_ids.0, full.input_ids.0);
        for ((k, new), (k2, old)) in ids(&ex.ops[0].op).into_iter().zip(ids(&full.ops[i].op)) {
            assert_eq!(k, k2);
            assert_eq!(*maps[k as usize].entry(new).or_insert(old), old, "one id maps to one id");
        }
        maps
    }

    fn two_layer_configs() -> Vec<(String, ModelConfig)> {
        let mut out: Vec<_> = std::fs::read_dir("model_conf")
            .unwrap()
            .flatten()
            .map(|e| e.path().join("config_2l.json"))
            .filter(|p| p.is_file())
            .map(|p| (p.display().to_string(), crate::config::hf::load_model_config(&p, &[]).unwrap()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        assert!(out.len() >= 7, "every family's 2l config: {:?}", out.iter().map(|c| &c.0).collect::<Vec<_>>());
        out
    }

    #[test]
    fn every_op_of_every_2l_model_keeps_its_cost_and_memory() {
        let align = |b: usize| b.div_ceil(256) * 256;
        for (name, cfg) in two_layer_configs() {
            let experts = cfg.moe.as_ref().map(|m| m.num_experts).unwrap_or(0);
            let mut layouts = vec![RankLayout::single()];
            if experts > 0 {
                layouts.push(crate::dist::rank_layouts(2, 2, 1).unwrap()[1]);
            }
            for layout in layouts {
                for shape in [Shape::prefill(2, 5), Shape::decode(2, 5)] {
                    let full = build_plan(&cfg, layout, shape, PlanOptions::default()).unwrap();
                    for i in 0..full.ops.len() {
                        let ex = full.extract_op(i);
                        let (op, what) =
                            (&full.ops[i].op, format!("{name} {shape:?} op {i} {}", full.ops[i].site.name));
                        assert_eq!(ex.ops.len(), 1);
                        assert_eq!(op_cost(&ex, &ex.ops[0].op, experts), op_cost(&full, op, experts), "{what}");
                        let maps = id_map(&full, i, &ex);
                        for (new, old) in &maps[0] {
                            assert_eq!(ex.tensors[*new], full.tensors[*old], "{what}");
                        }
                        for (new, old) in &maps[1] {
                            assert_eq!(ex.weights[*new], full.weights[*old], "{what}");
                        }
                        assert_eq!(
                            (ex.tensors.len(), ex.weights.len(), ex.caches.len()),
                            (maps[0].len(), maps[1].len(), maps[2].len())
                        );
                        let mem = plan_memory(&ex, Target::H200);
                        let weight_bytes: usize = op.weights().iter().map(|w| full.weight(*w).bytes()).sum();
                        let kv_bytes: usize = maps[2].values().map(|c| full.caches[*c].bytes()).sum();
                        // Everything of a one-op plan is live at once: nothing shares arena space.
                        let arena: usize = ex.tensors.iter().map(|t| align(t.bytes())).sum();
                        assert_eq!(mem.weight_bytes, weight_bytes, "{what}");
                        assert_eq!(mem.kv_bytes, kv_bytes, "{what}");
                        assert_eq!(mem.arena_bytes, arena, "{what}");
                        assert_eq!(mem.scratch_bytes, scratch_bytes(&full, op, Target::H200), "{what}");
                        assert_eq!((ex.shape, ex.layout, &ex.positions), (full.shape, full.layout, &full.positions));
                    }
                }
            }
        }
    }

    #[test]
    fn the_cpu_reference_gives_the_same_output_alone_as_inside_the_plan() {
        let src = RandomWeights { seed: 3 };
        for cfg in [tiny_dense(), tiny_mla_moe()] {
            for shape in [Shape::prefill(2, 5), Shape::decode(2, 5)] {
                let full = build_plan(&cfg, RankLayout::single(), shape, PlanOptions::default()).unwrap();
                let weights = load_weights(&full, &src, true).unwrap();
                let mut run = CpuRun::new(&full, &weights, None);
                let mut caches = KvCaches::default();
                caches.ensure(&full.caches);
                let random = |i: usize| crate::weights::rng::value(11, i as u64, 0.0, 1.0);
                caches.k.iter_mut().chain(caches.v.iter_mut()).flatten().enumerate().for_each(|(i, v)| *v = random(i));
                let ids: Vec<f32> =
                    (0..full.tensor(full.input_ids).rows).map(|t| (t * 7 % cfg.vocab_size) as f32).collect();
                run.write(full.full(full.input_ids), &ids);
                for i in 0..full.ops.len() {
                    let ex = full.extract_op(i);
                    let ex_weights = load_weights(&ex, &src, true).unwrap();
                    let maps = id_map(&full, i, &ex);
                    for (new, old) in &maps[1] {
                        assert_eq!(ex_weights[*new], weights[*old], "same name, same values");
                    }
                    let mut alone = CpuRun::new(&ex, &ex_weights, None);
                    for (new, old) in &maps[0] {
                        alone.acts[*new] = run.acts[*old].clone();
                    }
                    let mut ex_caches = KvCaches::default();
                    ex_caches.ensure(&ex.caches);
                    for (new, old) in &maps[2] {
                        ex_caches.k[*new] = caches.k[*old].clone();
                        ex_caches.v[*new] = caches.v[*old].clone();
                    }
                    run.run_op(i, &mut caches);
                    alone.run_op(0, &mut ex_caches);
                    let what = format!("{:?} op {i} {}", shape, full.ops[i].site.name);
                    for (new, old) in &maps[0] {
                        assert_eq!(alone.acts[*new], run.acts[*old], "{what}");
                    }
                    for (new, old) in &maps[2] {
                        assert_eq!(
                            (&ex_caches.k[*new], &ex_caches.v[*new]),
                            (&caches.k[*old], &caches.v[*old]),
                            "{what}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn ops_are_found_by_family_kind_or_site() {
        let cfg = tiny_mla_moe();
        let plan = build_plan(&cfg, RankLayout::single(), Shape::decode(2, 5), PlanOptions::default()).unwrap();
        let q = |name: &str, layer| plan.find_op(&OpQuery { name: name.into(), layer });
        let first_moe = q("moe", None).unwrap();
        assert!(matches!(plan.ops[first_moe].op, Op::Moe { .. }));
        assert_eq!(
            plan.ops[first_moe].site.layer,
            cfg.layer_ffn.iter().position(|k| *k == crate::config::model::FfnKind::Moe)
        );
        assert!(matches!(plan.ops[q("mla_decode_attention", Some(1)).unwrap()].op, Op::MlaDecodeAttention { .. }));
        assert_eq!(plan.ops[q("mla", Some(1)).unwrap()].site.layer, Some(1));
        let site = &plan.ops[q("embed", None).unwrap()].site.name;
        assert_eq!(q(site, None).unwrap(), q("embed", None).unwrap());
        let unknown = q("flash", None).unwrap_err().to_string();
        assert!(
            unknown.starts_with("--op flash: ") && unknown.contains("moe") && unknown.contains("mla_decode_attention"),
            "{unknown}"
        );
        assert!(matches!(q("moe", Some(9)), Err(OpQueryError::NotInLayer { layer: 9, .. })));
    }

    #[test]
    fn a_kind_wins_over_a_family_that_comes_first() {
        let plan =
            build_plan(&tiny_dense(), RankLayout::single(), Shape::prefill(2, 5), PlanOptions::default()).unwrap();
        let q = |name: &str| &plan.ops[plan.find_op(&OpQuery { name: name.into(), layer: None }).unwrap()];
        // The cache write (family attention too) runs first; `attention` still names the kernel.
        assert!(matches!(q("attention").op, Op::Attention { .. }));
        assert!(matches!(q("kv_cache_write").op, Op::KvCacheWrite { .. }));
        assert_eq!(q("attn.cache_write").site.name, "attn.cache_write");
    }

    #[test]
    fn a_gemm_plan_is_one_linear_of_its_shape() {
        let plan = gemm_plan(3, 5, 7);
        let c = op_cost(&plan, &plan.ops[0].op, 0);
        assert_eq!(c.flops, 2.0 * 3.0 * 5.0 * 7.0);
        assert_eq!(c.weight_bytes, 5.0 * 7.0 * 2.0);
        let w = load_weights(&plan, &RandomWeights { seed: 1 }, true).unwrap();
        let mut run = CpuRun::new(&plan, &w, None);
        run.write(plan.full(TensorId(1)), &[1.0; 21]);
        run.run_op(0, &mut KvCaches::default());
        let row_sum: f32 = w[0][..7].iter().sum();
        assert!((run.acts[2][0] - row_sum).abs() < 1e-3);
    }
}
