//! The f32 CPU reference executor: runs any plan op by op with the math in `ops`, from
//! bf16-rounded (random) or exact (checkpoint) weights. It is the oracle every GPU
//! kernel and every sharded plan is checked against. Ranks of a sharded plan run as
//! threads joined by `dist::thread_comm`.

pub mod ops;
pub mod run;

use crate::dist::thread_comm::ThreadComm;
use crate::plan::{CacheInfo, Collective, CollectiveDim, Op, Plan, View};
use crate::weights::{materialize, WeightError, WeightSource};
use ops::AttnShape;

/// KV caches that outlive one forward (a prefill fills them, a decode reads them).
#[derive(Debug, Default, Clone)]
pub struct KvCaches {
    pub k: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

impl KvCaches {
    pub fn ensure(&mut self, caches: &[CacheInfo]) {
        if self.k.len() == caches.len() {
            return;
        }
        self.k = caches.iter().map(|c| vec![0.0; c.batch * c.max_seq * c.k_elems_per_token()]).collect();
        self.v = caches.iter().map(|c| vec![0.0; c.batch * c.max_seq * c.v_elems_per_token()]).collect();
    }
}

/// One weight's result, filled by whichever thread materialises it.
type Slot = std::sync::Mutex<Option<Result<Vec<f32>, WeightError>>>;

/// All weights of a plan, materialised in f32.
pub fn load_weights(plan: &Plan, src: &dyn WeightSource, round_bf16: bool) -> Result<Vec<Vec<f32>>, WeightError> {
    // Large 2-layer configs hold billions of values: spread the weights over the cores.
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(plan.weights.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<Slot> = plan.weights.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(w) = plan.weights.get(i) else { break };
                *slots[i].lock().expect("weight slot") = Some(materialize(w, src, round_bf16));
            });
        }
    });
    slots.into_iter().map(|m| m.into_inner().expect("weight slot").expect("every weight materialised")).collect()
}

pub struct CpuRun<'a> {
    pub plan: &'a Plan,
    pub weights: &'a [Vec<f32>],
    pub acts: Vec<Vec<f32>>,
    comm: Option<&'a ThreadComm>,
}

impl<'a> CpuRun<'a> {
    pub fn new(plan: &'a Plan, weights: &'a [Vec<f32>], comm: Option<&'a ThreadComm>) -> Self {
        let acts = plan.tensors.iter().map(|t| vec![0.0; t.rows * t.cols]).collect();
        CpuRun { plan, weights, acts, comm }
    }

    /// Copies a column window into a contiguous `[rows, cols]` array.
    pub fn read(&self, v: View) -> Vec<f32> {
        let t = self.plan.tensor(v.id);
        let data = &self.acts[v.id.0];
        (0..t.rows).flat_map(|r| data[r * t.cols + v.col..r * t.cols + v.col + v.cols].iter().copied()).collect()
    }

    pub fn write(&mut self, v: View, values: &[f32]) {
        let cols = self.plan.tensor(v.id).cols;
        let data = &mut self.acts[v.id.0];
        for (r, row) in values.chunks(v.cols).enumerate() {
            data[r * cols + v.col..r * cols + v.col + v.cols].copy_from_slice(row);
        }
    }

    fn w(&self, id: crate::plan::WeightId) -> &[f32] {
        &self.weights[id.0]
    }

    /// Runs the whole plan; returns the logits `[rows, vocab]`.
    pub fn forward(&mut self, ids: &[i32], caches: &mut KvCaches) -> Vec<f32> {
        caches.ensure(&self.plan.caches);
        let input = self.plan.full(self.plan.input_ids);
        let ids_f: Vec<f32> = ids.iter().map(|&i| i as f32).collect();
        self.write(input, &ids_f);
        for i in 0..self.plan.ops.len() {
            self.run_op(i, caches);
        }
        self.read(self.plan.logits)
    }

    pub fn run_op(&mut self, index: usize, caches: &mut KvCaches) {
        let plan = self.plan;
        let op = &plan.ops[index].op;
        let rows = |v: &View| plan.rows(*v);
        match op {
            Op::Embed { out, table, vocab_start, pos_table, scale } => {
                let hidden = out.cols;
                let table_rows = plan.weight(*table).rows;
                let ids = self.read(plan.full(plan.input_ids));
                let mut values = vec![0f32; ids.len() * hidden];
                for (t, id) in ids.iter().enumerate() {
                    let id = *id as usize;
                    let row = &mut values[t * hidden..(t + 1) * hidden];
                    if id >= *vocab_start && id < vocab_start + table_rows {
                        let src = &self.w(*table)[(id - vocab_start) * hidden..(id - vocab_start + 1) * hidden];
                        row.iter_mut().zip(src).for_each(|(o, s)| *o = scale * s);
                    }
                    if let Some(pos) = pos_table {
                        let p = plan.positions[t];
                        let src = &self.w(*pos)[p * hidden..(p + 1) * hidden];
                        row.iter_mut().zip(src).for_each(|(o, s)| *o += s);
                    }
                }
                self.write(*out, &values);
            }
            Op::Norm { x, delta, weight, bias, kind, eps, out } => {
                let mut xs = self.read(*x);
                if let Some(d) = delta {
                    xs.iter_mut().zip(self.read(*d)).for_each(|(a, b)| *a += b);
                    self.write(*x, &xs);
                }
                let y = match kind {
                    crate::config::model::NormKind::RmsNorm => ops::rms_norm(&xs, x.cols, self.w(*weight), *eps),
                    crate::config::model::NormKind::LayerNorm => {
                        let zeros = vec![0.0; x.cols];
                        let b = bias.map(|b| self.w(b)).unwrap_or(&zeros);
                        ops::layer_norm(&xs, x.cols, self.w(*weight), b, *eps)
                    }
                };
                self.write(*out, &y);
            }
            Op::Linear { x, weight, bias, alpha, out } => {
                let w = plan.weight(*weight);
                let y = ops::linear(
                    &self.read(*x),
                    rows(x),
                    x.cols,
                    self.w(*weight),
                    w.rows,
                    bias.map(|b| self.w(b)),
                    *alpha,
                );
                // The weight may be wider than the output window (padded vocab shards).
                if out.cols == w.rows {
                    self.write(*out, &y);
                } else {
                    let cut: Vec<f32> = y.chunks(w.rows).flat_map(|r| r[..out.cols].iter().copied()).collect();
                    self.write(*out, &cut);
                }
            }
            Op::BiasAct { x, bias, act } => {
                let mut xs = self.read(*x);
                for row in xs.chunks_mut(x.cols) {
                    if let Some(b) = bias {
                        row.iter_mut().zip(self.w(*b)).for_each(|(v, b)| *v += b);
                    }
                    row.iter_mut().for_each(|v| *v = ops::activate(*v, *act));
                }
                self.write(*x, &xs);
            }
            Op::ActMul { x, out, act } => {
                let y = ops::act_mul(&self.read(*x), rows(x), out.cols, *act);
                self.write(*out, &y);
            }
            Op::Add { acc, x, gate } => {
                let mut a = self.read(*acc);
                let xs = self.read(*x);
                let g = gate.map(|g| self.read(g));
                for (r, (row, xr)) in a.chunks_mut(acc.cols).zip(xs.chunks(x.cols)).enumerate() {
                    let s = g.as_ref().map(|g| ops::sigmoid(g[r])).unwrap_or(1.0);
                    row.iter_mut().zip(xr).for_each(|(a, b)| *a += s * b);
                }
                self.write(*acc, &a);
            }
            Op::HeadNorm { x, heads, head_dim, weight, eps } => {
                let mut xs = self.read(*x);
                for row in xs.chunks_mut(x.cols) {
                    for h in 0..*heads {
                        let seg = &mut row[h * head_dim..(h + 1) * head_dim];
                        let y = ops::rms_norm(seg, *head_dim, self.w(*weight), *eps);
                        seg.copy_from_slice(&y);
                    }
                }
                self.write(*x, &xs);
            }
            Op::Rope { x, heads, head_stride, rope_offset, rope } => {
                let mut xs = self.read(*x);
                let max_pos = plan.positions.iter().max().copied().unwrap_or(0) + 1;
                let table = ops::RopeTable::new(rope, max_pos);
                let offsets: Vec<usize> = (0..*heads).map(|h| h * head_stride + rope_offset).collect();
                ops::apply_rope(&mut xs, x.cols, rows(x), &plan.positions, &offsets, &table, rope.style);
                self.write(*x, &xs);
            }
            Op::Attention { q, k, v, cache, out, q_heads, k_heads, v_heads, d_qk, d_v, scale, softcap } => {
                let info = &plan.caches[cache.0];
                let (qs, ks, vs) = (self.read(*q), self.read(*k), self.read(*v));
                let (kw, vw) = (k_heads * d_qk, v_heads * d_v);
                let n = plan.shape.new_tokens_per_seq();
                let past = plan.shape.past();
                let shape =
                    AttnShape { q_heads: *q_heads, k_heads: *k_heads, v_heads: *v_heads, d_qk: *d_qk, d_v: *d_v };
                let mut result = Vec::with_capacity(rows(q) * q_heads * d_v);
                for b in 0..plan.local_batch {
                    let kc = &mut caches.k[cache.0][b * info.max_seq * kw..(b + 1) * info.max_seq * kw];
                    kc[past * kw..(past + n) * kw].copy_from_slice(&ks[b * n * kw..(b + 1) * n * kw]);
                    let vc = &mut caches.v[cache.0][b * info.max_seq * vw..(b + 1) * info.max_seq * vw];
                    vc[past * vw..(past + n) * vw].copy_from_slice(&vs[b * n * vw..(b + 1) * n * vw]);
                    let qb = &qs[b * n * q.cols..(b + 1) * n * q.cols];
                    let kc = &caches.k[cache.0][b * info.max_seq * kw..];
                    let vc = &caches.v[cache.0][b * info.max_seq * vw..];
                    let o = ops::attention(
                        qb,
                        n,
                        past,
                        &kc[..(past + n) * kw],
                        &vc[..(past + n) * vw],
                        past + n,
                        &shape,
                        *scale,
                        *softcap,
                    );
                    result.extend(o);
                }
                self.write(*out, &result);
            }
            Op::MlaCacheWrite { latent, k_pe, cache } => {
                let info = &plan.caches[cache.0];
                let (lat, pe) = (self.read(*latent), self.read(*k_pe));
                let width = info.k_elems_per_token();
                let n = plan.shape.new_tokens_per_seq();
                let past = plan.shape.past();
                for t in 0..rows(latent) {
                    let (b, i) = (t / n, t % n);
                    let dst = &mut caches.k[cache.0][(b * info.max_seq + past + i) * width..][..width];
                    dst[..latent.cols].copy_from_slice(&lat[t * latent.cols..(t + 1) * latent.cols]);
                    dst[latent.cols..].copy_from_slice(&pe[t * k_pe.cols..(t + 1) * k_pe.cols]);
                }
            }
            Op::MlaPrefillAttention { q, kv, k_pe, out, heads, d_nope, d_rope, d_v, scale } => {
                let (qs, kvs, pes) = (self.read(*q), self.read(*kv), self.read(*k_pe));
                let n = plan.shape.new_tokens_per_seq();
                let dqk = d_nope + d_rope;
                let t_all = rows(q);
                let mut keys = vec![0f32; t_all * heads * dqk];
                let mut values = vec![0f32; t_all * heads * d_v];
                for t in 0..t_all {
                    for h in 0..*heads {
                        let src = &kvs[t * kv.cols + h * (d_nope + d_v)..];
                        let kd = &mut keys[(t * heads + h) * dqk..][..dqk];
                        kd[..*d_nope].copy_from_slice(&src[..*d_nope]);
                        kd[*d_nope..].copy_from_slice(&pes[t * k_pe.cols..t * k_pe.cols + d_rope]);
                        values[(t * heads + h) * d_v..][..*d_v].copy_from_slice(&src[*d_nope..d_nope + d_v]);
                    }
                }
                let shape = AttnShape { q_heads: *heads, k_heads: *heads, v_heads: *heads, d_qk: dqk, d_v: *d_v };
                let mut result = Vec::new();
                for b in 0..plan.local_batch {
                    let r = b * n..(b + 1) * n;
                    result.extend(ops::attention(
                        &qs[r.start * q.cols..r.end * q.cols],
                        n,
                        0,
                        &keys[r.start * heads * dqk..r.end * heads * dqk],
                        &values[r.start * heads * d_v..r.end * heads * d_v],
                        n,
                        &shape,
                        *scale,
                        None,
                    ));
                }
                self.write(*out, &result);
            }
            Op::MlaDecodeAttention { q_lat, q_pe, q_pe_stride, cache, out, heads, kv_lora_rank, d_rope, scale } => {
                let info = &plan.caches[cache.0];
                let (ql, qp) = (self.read(*q_lat), self.read(*q_pe));
                let width = info.k_elems_per_token();
                let ctx = plan.shape.context();
                let shape = AttnShape { q_heads: *heads, k_heads: 1, v_heads: 1, d_qk: width, d_v: *kv_lora_rank };
                let mut result = Vec::new();
                for t in 0..rows(q_lat) {
                    let mut query = Vec::with_capacity(heads * width);
                    for h in 0..*heads {
                        query.extend_from_slice(&ql[t * q_lat.cols + h * kv_lora_rank..][..*kv_lora_rank]);
                        query.extend_from_slice(&qp[t * q_pe.cols + h * q_pe_stride..][..*d_rope]);
                    }
                    let keys = &caches.k[cache.0][t * info.max_seq * width..][..ctx * width];
                    let values: Vec<f32> =
                        keys.chunks(width).flat_map(|r| r[..*kv_lora_rank].iter().copied()).collect();
                    result.extend(ops::attention(&query, 1, ctx - 1, keys, &values, ctx, &shape, *scale, None));
                }
                self.write(*out, &result);
            }
            Op::HeadMatmul { x, x_stride, weight, heads, transpose, out } => {
                let w = plan.weight(*weight);
                let (a, b) = (w.rows, w.cols);
                let (in_w, out_w) = if *transpose { (b, a) } else { (a, b) };
                let xs = self.read(*x);
                let t_all = rows(x);
                let mut y = vec![0f32; t_all * heads * out_w];
                for h in 0..*heads {
                    let xh: Vec<f32> =
                        (0..t_all).flat_map(|t| xs[t * x.cols + h * x_stride..][..in_w].iter().copied()).collect();
                    let wh = &self.w(*weight)[h * a * b..(h + 1) * a * b];
                    let yh = if *transpose {
                        ops::matmul_nt(&xh, t_all, b, wh, a)
                    } else {
                        ops::matmul_nn(&xh, t_all, a, wh, b)
                    };
                    for t in 0..t_all {
                        y[(t * heads + h) * out_w..][..out_w].copy_from_slice(&yh[t * out_w..(t + 1) * out_w]);
                    }
                }
                self.write(*out, &y);
            }
            Op::Route { x, weight, correction_bias, logits, ids, weights, router, top_k } => {
                let e = plan.weight(*weight).rows;
                let t_all = rows(x);
                let l = ops::matmul_nt(&self.read(*x), t_all, x.cols, self.w(*weight), e);
                self.write(*logits, &l);
                let r = ops::route(&l, t_all, e, *top_k, router, correction_bias.map(|b| self.w(b)));
                self.write(*ids, &r.ids.iter().map(|&i| i as f32).collect::<Vec<_>>());
                self.write(*weights, &r.weights);
            }
            Op::Moe { x, ids, weights, w13, w2, expert_start, local_experts, top_k, inter, act, out } => {
                let xs = self.read(*x);
                let (idv, wv) = (self.read(*ids), self.read(*weights));
                let hidden = x.cols;
                let t_all = rows(x);
                let mut y = vec![0f32; t_all * out.cols];
                for local in 0..*local_experts {
                    let global = expert_start + local;
                    let picks: Vec<(usize, f32)> =
                        (0..t_all * top_k).filter(|&s| idv[s] as usize == global).map(|s| (s / top_k, wv[s])).collect();
                    if picks.is_empty() {
                        continue;
                    }
                    let xe: Vec<f32> =
                        picks.iter().flat_map(|(t, _)| xs[t * hidden..(t + 1) * hidden].iter().copied()).collect();
                    let w13e = &self.w(*w13)[local * 2 * inter * hidden..(local + 1) * 2 * inter * hidden];
                    let gu = ops::matmul_nt(&xe, picks.len(), hidden, w13e, 2 * inter);
                    let h = ops::act_mul(&gu, picks.len(), *inter, *act);
                    let w2e = &self.w(*w2)[local * hidden * inter..(local + 1) * hidden * inter];
                    let ye = ops::matmul_nt(&h, picks.len(), *inter, w2e, hidden);
                    for (i, (t, wt)) in picks.iter().enumerate() {
                        y[t * hidden..(t + 1) * hidden]
                            .iter_mut()
                            .zip(&ye[i * hidden..(i + 1) * hidden])
                            .for_each(|(o, v)| *o += wt * v);
                    }
                }
                self.write(*out, &y);
            }
            Op::GatherRows { x, rows: sel, out } => {
                let xs = self.read(*x);
                let y: Vec<f32> = sel.iter().flat_map(|&r| xs[r * x.cols..(r + 1) * x.cols].iter().copied()).collect();
                self.write(*out, &y);
            }
            Op::Collective { kind, group, x, out } => {
                let comm = self.comm.expect("a sharded plan needs a communicator");
                let members = plan.layout.group_ranks(*group);
                let mine = self.read(*x);
                match kind {
                    Collective::AllReduce => {
                        let mut data = mine;
                        comm.all_reduce(&members, &mut data);
                        self.write(*out, &data);
                    }
                    Collective::AllGather(CollectiveDim::Rows) => {
                        let parts = comm.exchange(&members, &mine);
                        self.write(*out, &parts.concat());
                    }
                    Collective::AllGather(CollectiveDim::Cols) => {
                        let parts = comm.exchange(&members, &mine);
                        let r = rows(x);
                        let y: Vec<f32> = (0..r)
                            .flat_map(|i| {
                                parts.iter().flat_map(move |p| p[i * x.cols..(i + 1) * x.cols].iter().copied())
                            })
                            .collect();
                        self.write(*out, &y);
                    }
                    Collective::ReduceScatterRows => {
                        let mut data = mine;
                        comm.all_reduce(&members, &mut data);
                        let pos = members.iter().position(|&r| r == plan.layout.rank).expect("rank in its group");
                        let chunk = rows(out) * x.cols;
                        self.write(*out, &data[pos * chunk..(pos + 1) * chunk]);
                    }
                }
            }
        }
    }
}
