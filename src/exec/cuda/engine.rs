//! A plan bound to one GPU: every buffer allocated up front (weights, KV caches, one
//! activation arena laid out by the memory planner, one scratch region), every op turned
//! into prepared launches. A bound plan runs eagerly or is captured into a CUDA graph.

use std::collections::HashMap;

use anyhow::{bail, Context};

use super::gemm::GemmShape;
use super::gpu::{Gpu, KernelName};
use super::kernels::{act, attention_decode, attention_prefill, embed, misc, mla, moe, norm, rope, route};
use super::memory::DeviceBuffer;
use crate::config::model::NormKind;
use crate::plan::memory::{plan_memory, MemoryPlan};
use crate::plan::{CacheInfo, DType, Op, Phase, Plan, View};

/// KV caches on the device, shared by the plans of a prefill and the decode after it.
#[derive(Default)]
pub struct DeviceCaches {
    pub k: Vec<DeviceBuffer>,
    pub v: Vec<Option<DeviceBuffer>>,
}

impl DeviceCaches {
    pub fn new(caches: &[CacheInfo]) -> anyhow::Result<Self> {
        let mut out = DeviceCaches::default();
        for c in caches {
            out.k.push(DeviceBuffer::zeroed(c.batch * c.max_seq * c.k_elems_per_token() * 2)?);
            let v = c.v_elems_per_token();
            out.v.push(if v > 0 { Some(DeviceBuffer::zeroed(c.batch * c.max_seq * v * 2)?) } else { None });
        }
        Ok(out)
    }
    pub fn bytes(&self) -> usize {
        self.k.iter().map(|b| b.bytes).sum::<usize>() + self.v.iter().flatten().map(|b| b.bytes).sum::<usize>()
    }
}

/// A kernel launch with its parameters captured (each kernel has its own Params type).
type Launcher = Box<dyn Fn(&Gpu, KernelName, cudarc::driver::LaunchConfig) -> anyhow::Result<()>>;

/// One prepared device call of an op.
enum Call {
    Kernel(KernelName, cudarc::driver::LaunchConfig, Launcher),
    Gemm { shape: GemmShape, x: u64, w: u64, out: u64, bias: Option<u64>, alpha: f32 },
}

pub struct BoundPlan {
    pub plan: Plan,
    pub memory: MemoryPlan,
    arena: DeviceBuffer,
    _scratch: DeviceBuffer,
    _aux: Vec<DeviceBuffer>,
    ids: DeviceBuffer,
    /// Calls of each op, in plan order.
    calls: Vec<Vec<Call>>,
}

fn kernel<P: cudarc::driver::DeviceRepr + Copy + 'static>(
    k: KernelName,
    cfg: cudarc::driver::LaunchConfig,
    p: P,
) -> Call {
    Call::Kernel(k, cfg, Box::new(move |gpu, k, cfg| gpu.launch(k, cfg, p)))
}

const ALIGN: usize = 256;

struct Ctx<'a> {
    plan: &'a Plan,
    mem: &'a MemoryPlan,
    arena: u64,
    weights: &'a [u64],
}

/// Device address of a view: the arena base, the tensor's planned offset, the column.
fn view_ptr(plan: &Plan, mem: &MemoryPlan, arena: u64, v: View) -> u64 {
    arena + (mem.offsets[v.id.0] + v.col * plan.tensor(v.id).dtype.bytes()) as u64
}

impl Ctx<'_> {
    fn ptr(&self, v: View) -> u64 {
        view_ptr(self.plan, self.mem, self.arena, v)
    }
    /// Start of the whole tensor a view belongs to (kernels that take a column offset).
    fn base(&self, v: View) -> u64 {
        self.ptr(self.plan.full(v.id))
    }
    fn ld(&self, v: View) -> i32 {
        self.plan.tensor(v.id).cols as i32
    }
    fn rows(&self, v: View) -> i32 {
        self.plan.tensor(v.id).rows as i32
    }
    fn w(&self, id: crate::plan::WeightId) -> u64 {
        self.weights[id.0]
    }
}

/// Scratch bytes an op needs beyond its outputs.
fn scratch_bytes(plan: &Plan, op: &Op, sm: i32, experts_total: usize) -> usize {
    let a = |b: usize| b.div_ceil(ALIGN) * ALIGN;
    let rows = |v: &View| plan.rows(*v);
    match op {
        Op::Attention { q, q_heads, k_heads, d_v, .. } if plan.shape.phase == Phase::Decode => {
            let splits =
                attention_decode::decode_num_splits(rows(q) as i32, *k_heads as i32, plan.shape.context() as i32, sm);
            a(attention_decode::decode_scratch_bytes(rows(q) as i32, *q_heads as i32, *d_v as i32, splits))
        }
        Op::MlaDecodeAttention { q_lat, heads, kv_lora_rank, .. } => {
            let splits = mla::mla_num_splits(rows(q_lat) as i32, *heads as i32, plan.shape.context() as i32, sm);
            a(mla::mla_scratch_bytes(rows(q_lat) as i32, *heads as i32, *kv_lora_rank as i32, splits))
        }
        Op::MlaPrefillAttention { q, heads, d_nope, d_rope, .. } => a(rows(q) * heads * (d_nope + d_rope) * 2),
        Op::Moe { x, w2, local_experts, top_k, inter, .. } => {
            let t = rows(x);
            let hidden = plan.weight(*w2).rows;
            let bm = moe::choose_block_m(t, *top_k, experts_total.max(1));
            let max_sorted = moe::moe_max_sorted(t, *top_k, *local_experts, bm);
            let blocks = moe::moe_max_blocks(t, *top_k, *local_experts, bm);
            a(max_sorted * 4)
                + a(blocks * 4)
                + a(t * top_k * 4)
                + a(4)
                + a(max_sorted * 2 * inter * 2)
                + a(max_sorted * inter * 2)
                + a(max_sorted * hidden * 2)
        }
        _ => 0,
    }
}

impl BoundPlan {
    /// Allocates the plan's arena and scratch and prepares every call.
    pub fn new(
        gpu: &Gpu,
        plan: Plan,
        weights: &[u64],
        caches: &DeviceCaches,
        experts_total: usize,
    ) -> anyhow::Result<Self> {
        if plan.layout.world > 1 {
            bail!("multi-GPU execution (NCCL collectives) is not built yet: run with a tp1 deployment");
        }
        let memory = plan_memory(&plan);
        let arena = DeviceBuffer::zeroed(memory.arena_bytes).context("allocating the activation arena")?;
        let scratch_need =
            plan.ops.iter().map(|p| scratch_bytes(&plan, &p.op, gpu.sm_count, experts_total)).max().unwrap_or(0);
        let scratch = DeviceBuffer::zeroed(scratch_need)?;
        let ids = DeviceBuffer::zeroed(plan.tensor(plan.input_ids).rows * 4)?;
        let mut aux = Vec::new();
        let positions: Vec<i32> = plan.positions.iter().map(|&p| p as i32).collect();
        let pos_buf = DeviceBuffer::upload(&positions)?;
        let pos_ptr = pos_buf.ptr;
        aux.push(pos_buf);
        let max_pos = plan.positions.iter().max().copied().unwrap_or(0) + 1;
        let mut rope_tables: HashMap<String, u64> = HashMap::new();

        let ctx = Ctx { plan: &plan, mem: &memory, arena: arena.ptr, weights };
        let mut calls = Vec::with_capacity(plan.ops.len());
        for planned in &plan.ops {
            let mut c = Vec::new();
            match &planned.op {
                Op::Embed { out, table, vocab_start, pos_table, scale } => {
                    let p = embed::EmbedTokensParams {
                        out: ctx.ptr(*out),
                        out_ld: ctx.ld(*out),
                        table: ctx.w(*table),
                        ids: ids.ptr,
                        positions: pos_ptr,
                        pos_table: pos_table.map(|w| ctx.w(w)).unwrap_or(0),
                        tokens: ctx.rows(*out),
                        hidden: out.cols as i32,
                        vocab_start: *vocab_start as i32,
                        vocab_rows: plan.weight(*table).rows as i32,
                        scale: *scale,
                        ..Default::default()
                    };
                    c.push(kernel(
                        embed::EMBED_TOKENS,
                        embed::embed_tokens_launch(ctx.rows(*out) as usize, out.cols),
                        p,
                    ));
                }
                Op::Norm { x, delta, weight, bias, kind, eps, out } => {
                    let (rows, cols) = (ctx.rows(*x), x.cols as i32);
                    let (d, d_ld) = delta.map(|d| (ctx.ptr(d), ctx.ld(d))).unwrap_or((0, 0));
                    match kind {
                        NormKind::RmsNorm => {
                            let p = norm::RmsNormParams {
                                x: ctx.ptr(*x),
                                x_ld: ctx.ld(*x),
                                delta: d,
                                delta_ld: d_ld,
                                weight: ctx.w(*weight),
                                out: ctx.ptr(*out),
                                out_ld: ctx.ld(*out),
                                rows,
                                cols,
                                eps: *eps,
                                ..Default::default()
                            };
                            c.push(kernel(norm::RMS_NORM, norm::rms_norm_launch(rows as usize, x.cols), p));
                        }
                        NormKind::LayerNorm => {
                            let p = norm::LayerNormParams {
                                x: ctx.ptr(*x),
                                x_ld: ctx.ld(*x),
                                delta: d,
                                delta_ld: d_ld,
                                weight: ctx.w(*weight),
                                bias: bias.map(|b| ctx.w(b)).unwrap_or(0),
                                out: ctx.ptr(*out),
                                out_ld: ctx.ld(*out),
                                rows,
                                cols,
                                eps: *eps,
                                ..Default::default()
                            };
                            c.push(kernel(norm::LAYER_NORM, norm::layer_norm_launch(rows as usize, x.cols), p));
                        }
                    }
                }
                Op::Linear { x, weight, bias, alpha, out } => {
                    let w = plan.weight(*weight);
                    let out_f32 = plan.tensor(out.id).dtype == DType::F32;
                    // A padded vocab shard: the GEMM computes every row of the weight; the
                    // output tensor is as wide as the weight (see the plan's lm_head).
                    let shape = GemmShape {
                        m: ctx.rows(*x) as usize,
                        n: w.rows,
                        k: x.cols,
                        ldx: ctx.ld(*x) as usize,
                        ldw: w.cols,
                        ldo: ctx.ld(*out) as usize,
                        w_is_n_by_k: true,
                        out_f32,
                        bias: bias.is_some(),
                        batch: None,
                    };
                    gpu.gemm.borrow_mut().warm(&shape)?;
                    c.push(Call::Gemm {
                        shape,
                        x: ctx.ptr(*x),
                        w: ctx.w(*weight),
                        out: ctx.ptr(*out),
                        bias: bias.map(|b| ctx.w(b)),
                        alpha: *alpha,
                    });
                }
                Op::HeadMatmul { x, x_stride, weight, heads, transpose, out } => {
                    let w = plan.weight(*weight);
                    let (a, b) = (w.rows, w.cols);
                    let (k, n) = if *transpose { (b, a) } else { (a, b) };
                    let shape = GemmShape {
                        m: ctx.rows(*x) as usize,
                        n,
                        k,
                        ldx: ctx.ld(*x) as usize,
                        ldw: b,
                        ldo: ctx.ld(*out) as usize,
                        w_is_n_by_k: *transpose,
                        out_f32: false,
                        bias: false,
                        batch: Some((*heads, *x_stride, a * b, n)),
                    };
                    gpu.gemm.borrow_mut().warm(&shape)?;
                    c.push(Call::Gemm {
                        shape,
                        x: ctx.ptr(*x),
                        w: ctx.w(*weight),
                        out: ctx.ptr(*out),
                        bias: None,
                        alpha: 1.0,
                    });
                }
                Op::BiasAct { x, bias, act: a } => {
                    let p = act::BiasActParams {
                        x: ctx.ptr(*x),
                        ld: ctx.ld(*x),
                        rows: ctx.rows(*x),
                        cols: x.cols as i32,
                        bias: bias.map(|b| ctx.w(b)).unwrap_or(0),
                        act: act::activation_code(*a),
                        ..Default::default()
                    };
                    c.push(kernel(act::BIAS_ACT, act::bias_act_launch(ctx.rows(*x) as usize, x.cols), p));
                }
                Op::ActMul { x, out, act: a } => {
                    let p = act::ActMulParams {
                        r#in: ctx.ptr(*x),
                        in_ld: ctx.ld(*x),
                        out: ctx.ptr(*out),
                        out_ld: ctx.ld(*out),
                        rows: ctx.rows(*x),
                        inter: out.cols as i32,
                        act: act::activation_code(*a),
                        ..Default::default()
                    };
                    c.push(kernel(act::ACT_MUL, act::act_mul_launch(ctx.rows(*x) as usize, out.cols), p));
                }
                Op::Add { acc, x, gate } => {
                    let p = act::GatedAddParams {
                        acc: ctx.ptr(*acc),
                        acc_ld: ctx.ld(*acc),
                        x: ctx.ptr(*x),
                        x_ld: ctx.ld(*x),
                        gate: gate.map(|g| ctx.ptr(g)).unwrap_or(0),
                        gate_ld: gate.map(|g| ctx.ld(g)).unwrap_or(0),
                        rows: ctx.rows(*acc),
                        cols: acc.cols as i32,
                        ..Default::default()
                    };
                    c.push(kernel(act::GATED_ADD, act::gated_add_launch(ctx.rows(*acc) as usize, acc.cols), p));
                }
                Op::HeadNorm { x, heads, head_dim, weight, eps } => {
                    let p = norm::HeadRmsNormParams {
                        x: ctx.base(*x),
                        ld: ctx.ld(*x),
                        rows: ctx.rows(*x),
                        col_offset: x.col as i32,
                        n_heads: *heads as i32,
                        head_dim: *head_dim as i32,
                        weight: ctx.w(*weight),
                        eps: *eps,
                        ..Default::default()
                    };
                    c.push(kernel(
                        norm::HEAD_RMS_NORM,
                        norm::head_rms_norm_launch(ctx.rows(*x) as usize, *heads, *head_dim),
                        p,
                    ));
                }
                Op::Rope { x, heads, head_stride, rope_offset, rope: cfg } => {
                    let key = format!("{cfg:?}");
                    let table = match rope_tables.get(&key) {
                        Some(t) => *t,
                        None => {
                            let buf = DeviceBuffer::upload(&rope::cos_sin_table(cfg, max_pos))?;
                            let ptr = buf.ptr;
                            aux.push(buf);
                            rope_tables.insert(key, ptr);
                            ptr
                        }
                    };
                    let p = rope::RopeParams {
                        x: ctx.base(*x),
                        ld: ctx.ld(*x),
                        rows: ctx.rows(*x),
                        col_offset: x.col as i32,
                        n_heads: *heads as i32,
                        head_stride: *head_stride as i32,
                        rope_offset: *rope_offset as i32,
                        rotary_dim: cfg.rotary_dim as i32,
                        positions: pos_ptr,
                        cos_sin: table,
                        interleaved: rope::style_code(cfg.style),
                        ..Default::default()
                    };
                    c.push(kernel(rope::ROPE, rope::rope_launch(ctx.rows(*x) as usize, *heads, cfg.rotary_dim), p));
                }
                Op::Attention { q, k, v, cache, out, q_heads, k_heads, v_heads, d_qk, d_v, scale, softcap } => {
                    let info = &plan.caches[cache.0];
                    let (kc, vc) = (caches.k[cache.0].ptr, caches.v[cache.0].as_ref().map(|b| b.ptr).unwrap_or(0));
                    let n_new = plan.shape.new_tokens_per_seq() as i32;
                    let past = plan.shape.past() as i32;
                    let rows = ctx.rows(*q);
                    // k and v are windows of the fused qkv buffer (same tensor as q).
                    let base = ctx.base(*k);
                    let p = attention_prefill::KvCacheWriteParams {
                        src: base,
                        src_ld: ctx.ld(*k),
                        rows,
                        k_col: k.col as i32,
                        v_col: v.col as i32,
                        k_heads: *k_heads as i32,
                        v_heads: *v_heads as i32,
                        d_k: *d_qk as i32,
                        d_v: *d_v as i32,
                        k_cache: kc,
                        v_cache: vc,
                        max_seq: info.max_seq as i32,
                        tokens_per_seq: n_new,
                        past,
                    };
                    c.push(kernel(
                        attention_prefill::KV_CACHE_WRITE,
                        attention_prefill::kv_cache_write_launch(rows),
                        p,
                    ));
                    let (kw, vw) = (info.k_elems_per_token() as i32, info.v_elems_per_token() as i32);
                    let softcap = softcap.unwrap_or(0.0);
                    match plan.shape.phase {
                        Phase::Prefill => {
                            let variant = attention_prefill::select_variant(*d_qk as i32, *d_v as i32)
                                .with_context(|| format!("no prefill attention kernel for head dims {d_qk}/{d_v}"))?;
                            let ld_q = ctx.ld(*q);
                            let p = attention_prefill::FlashPrefillParams {
                                q: ctx.ptr(*q),
                                q_batch_stride: (n_new * ld_q) as i64,
                                q_token_stride: ld_q,
                                q_head_stride: *d_qk as i32,
                                k: kc,
                                k_batch_stride: (info.max_seq as i32 * kw) as i64,
                                k_token_stride: kw,
                                k_head_stride: *d_qk as i32,
                                v: vc,
                                v_batch_stride: (info.max_seq as i32 * vw) as i64,
                                v_token_stride: vw,
                                v_head_stride: *d_v as i32,
                                o: ctx.ptr(*out),
                                o_batch_stride: (n_new * ctx.ld(*out)) as i64,
                                o_token_stride: ctx.ld(*out),
                                o_head_stride: *d_v as i32,
                                batch: plan.local_batch as i32,
                                n_q: n_new,
                                n_kv: past + n_new,
                                q_heads: *q_heads as i32,
                                k_heads: *k_heads as i32,
                                v_heads: *v_heads as i32,
                                d_qk: *d_qk as i32,
                                d_v: *d_v as i32,
                                scale: *scale,
                                softcap,
                            };
                            let cfg = attention_prefill::flash_prefill_launch(
                                &variant,
                                plan.local_batch as i32,
                                n_new,
                                *q_heads as i32,
                            );
                            c.push(kernel(variant.kernel, cfg, p));
                        }
                        Phase::Decode => {
                            let variant = attention_decode::select_variant(*d_qk as i32, *d_v as i32)
                                .with_context(|| format!("no decode attention kernel for head dims {d_qk}/{d_v}"))?;
                            let n_kv = past + 1;
                            let splits = attention_decode::decode_num_splits(rows, *k_heads as i32, n_kv, gpu.sm_count);
                            let p = attention_decode::DecodeAttentionParams {
                                q: ctx.ptr(*q),
                                q_batch_stride: ctx.ld(*q),
                                q_head_stride: *d_qk as i32,
                                k_cache: kc,
                                v_cache: vc,
                                max_seq: info.max_seq as i32,
                                k_heads: *k_heads as i32,
                                v_heads: *v_heads as i32,
                                q_heads: *q_heads as i32,
                                d_qk: *d_qk as i32,
                                d_v: *d_v as i32,
                                n_kv,
                                batch: rows,
                                scale: *scale,
                                softcap,
                                o: ctx.ptr(*out),
                                o_batch_stride: ctx.ld(*out),
                                o_head_stride: *d_v as i32,
                                scratch: scratch.ptr,
                                num_splits: splits,
                            };
                            let cfg = attention_decode::decode_attention_launch(
                                &variant,
                                rows,
                                *q_heads as i32,
                                *k_heads as i32,
                                *v_heads as i32,
                                splits,
                            );
                            c.push(kernel(variant.kernel, cfg, p));
                            let p = attention_decode::DecodeCombineParams {
                                scratch: scratch.ptr,
                                o: ctx.ptr(*out),
                                o_batch_stride: ctx.ld(*out),
                                o_head_stride: *d_v as i32,
                                batch: rows,
                                q_heads: *q_heads as i32,
                                d_v: *d_v as i32,
                                num_splits: splits,
                            };
                            c.push(kernel(
                                attention_decode::DECODE_COMBINE,
                                attention_decode::decode_combine_launch(rows, *q_heads as i32),
                                p,
                            ));
                        }
                    }
                }
                Op::MlaCacheWrite { latent, k_pe, cache } => {
                    let info = &plan.caches[cache.0];
                    let p = mla::MlaCacheWriteParams {
                        latent: ctx.ptr(*latent),
                        latent_ld: ctx.ld(*latent),
                        k_pe: ctx.ptr(*k_pe),
                        k_pe_ld: ctx.ld(*k_pe),
                        rows: ctx.rows(*latent),
                        kv_lora_rank: latent.cols as i32,
                        rope_dim: k_pe.cols as i32,
                        cache: caches.k[cache.0].ptr,
                        max_seq: info.max_seq as i32,
                        tokens_per_seq: plan.shape.new_tokens_per_seq() as i32,
                        past: plan.shape.past() as i32,
                        ..Default::default()
                    };
                    c.push(kernel(mla::MLA_CACHE_WRITE, mla::mla_cache_write_launch(ctx.rows(*latent)), p));
                }
                Op::MlaPrefillAttention { q, kv, k_pe, out, heads, d_nope, d_rope, d_v, scale } => {
                    let rows = ctx.rows(*q);
                    let dqk = (d_nope + d_rope) as i32;
                    let p = mla::MlaBuildKParams {
                        kv: ctx.ptr(*kv),
                        kv_ld: ctx.ld(*kv),
                        k_pe: ctx.ptr(*k_pe),
                        k_pe_ld: ctx.ld(*k_pe),
                        k_out: scratch.ptr,
                        rows,
                        heads: *heads as i32,
                        d_nope: *d_nope as i32,
                        d_v: *d_v as i32,
                        d_rope: *d_rope as i32,
                        ..Default::default()
                    };
                    c.push(kernel(mla::MLA_BUILD_K, mla::mla_build_k_launch(rows), p));
                    let variant = attention_prefill::select_variant(dqk, *d_v as i32)
                        .with_context(|| format!("no prefill attention kernel for MLA dims {dqk}/{d_v}"))?;
                    let n = plan.shape.new_tokens_per_seq() as i32;
                    let (ldq, ldkv, ldo) = (ctx.ld(*q), ctx.ld(*kv), ctx.ld(*out));
                    let k_row = *heads as i32 * dqk;
                    let p = attention_prefill::FlashPrefillParams {
                        q: ctx.ptr(*q),
                        q_batch_stride: (n * ldq) as i64,
                        q_token_stride: ldq,
                        q_head_stride: dqk,
                        k: scratch.ptr,
                        k_batch_stride: (n * k_row) as i64,
                        k_token_stride: k_row,
                        k_head_stride: dqk,
                        v: ctx.ptr(*kv) + (*d_nope * 2) as u64,
                        v_batch_stride: (n * ldkv) as i64,
                        v_token_stride: ldkv,
                        v_head_stride: (d_nope + d_v) as i32,
                        o: ctx.ptr(*out),
                        o_batch_stride: (n * ldo) as i64,
                        o_token_stride: ldo,
                        o_head_stride: *d_v as i32,
                        batch: plan.local_batch as i32,
                        n_q: n,
                        n_kv: n,
                        q_heads: *heads as i32,
                        k_heads: *heads as i32,
                        v_heads: *heads as i32,
                        d_qk: dqk,
                        d_v: *d_v as i32,
                        scale: *scale,
                        softcap: 0.0,
                    };
                    c.push(kernel(
                        variant.kernel,
                        attention_prefill::flash_prefill_launch(&variant, plan.local_batch as i32, n, *heads as i32),
                        p,
                    ));
                }
                Op::MlaDecodeAttention { q_lat, q_pe, q_pe_stride, cache, out, heads, kv_lora_rank, d_rope, scale } => {
                    let info = &plan.caches[cache.0];
                    let rows = ctx.rows(*q_lat);
                    let n_kv = plan.shape.context() as i32;
                    let splits = mla::mla_num_splits(rows, *heads as i32, n_kv, gpu.sm_count);
                    let variant = mla::mla_select(*heads as i32);
                    let p = mla::MlaDecodeParams {
                        q_lat: ctx.ptr(*q_lat),
                        q_lat_batch_stride: ctx.ld(*q_lat),
                        q_lat_head_stride: *kv_lora_rank as i32,
                        q_pe: ctx.ptr(*q_pe),
                        q_pe_batch_stride: ctx.ld(*q_pe),
                        q_pe_head_stride: *q_pe_stride as i32,
                        cache: caches.k[cache.0].ptr,
                        max_seq: info.max_seq as i32,
                        n_kv,
                        batch: rows,
                        heads: *heads as i32,
                        kv_lora_rank: *kv_lora_rank as i32,
                        rope_dim: *d_rope as i32,
                        scale: *scale,
                        o: ctx.ptr(*out),
                        o_batch_stride: ctx.ld(*out),
                        o_head_stride: *kv_lora_rank as i32,
                        scratch: scratch.ptr,
                        num_splits: splits,
                        ..Default::default()
                    };
                    c.push(kernel(variant.kernel, mla::mla_decode_launch(&variant, rows, *heads as i32, splits), p));
                    let p = mla::MlaCombineParams {
                        scratch: scratch.ptr,
                        o: ctx.ptr(*out),
                        o_batch_stride: ctx.ld(*out),
                        o_head_stride: *kv_lora_rank as i32,
                        batch: rows,
                        heads: *heads as i32,
                        kv_lora_rank: *kv_lora_rank as i32,
                        num_splits: splits,
                    };
                    c.push(kernel(mla::MLA_COMBINE, mla::mla_combine_launch(rows, *heads as i32), p));
                }
                Op::Route { x, weight, correction_bias, logits, ids: out_ids, weights: out_w, router, top_k } => {
                    let w = plan.weight(*weight);
                    let shape = GemmShape {
                        m: ctx.rows(*x) as usize,
                        n: w.rows,
                        k: x.cols,
                        ldx: ctx.ld(*x) as usize,
                        ldw: w.cols,
                        ldo: ctx.ld(*logits) as usize,
                        w_is_n_by_k: true,
                        out_f32: true,
                        bias: false,
                        batch: None,
                    };
                    gpu.gemm.borrow_mut().warm(&shape)?;
                    c.push(Call::Gemm {
                        shape,
                        x: ctx.ptr(*x),
                        w: ctx.w(*weight),
                        out: ctx.ptr(*logits),
                        bias: None,
                        alpha: 1.0,
                    });
                    let p = route::MoeRouteParams {
                        logits: ctx.ptr(*logits),
                        ld: ctx.ld(*logits),
                        tokens: ctx.rows(*x),
                        num_experts: w.rows as i32,
                        top_k: *top_k as i32,
                        scoring: route::scoring_code(router.scoring),
                        softcap: router.logit_softcap.unwrap_or(0.0),
                        correction_bias: correction_bias.map(|b| ctx.w(b)).unwrap_or(0),
                        n_group: router.n_group as i32,
                        topk_group: router.topk_group as i32,
                        group_score: route::group_score_code(router.group_score),
                        renormalize: router.norm_topk_prob as i32,
                        routed_scaling: router.routed_scaling_factor,
                        out_ids: ctx.ptr(*out_ids),
                        out_weights: ctx.ptr(*out_w),
                        ..Default::default()
                    };
                    c.push(kernel(route::MOE_ROUTE, route::moe_route_launch(ctx.rows(*x) as usize), p));
                }
                Op::Moe {
                    x,
                    ids: in_ids,
                    weights: in_w,
                    w13,
                    w2,
                    expert_start,
                    local_experts,
                    top_k,
                    inter,
                    act: a,
                    out,
                } => {
                    let t = ctx.rows(*x) as usize;
                    let hidden = plan.weight(*w2).rows;
                    let bm = moe::choose_block_m(t, *top_k, experts_total.max(1));
                    let tile = moe::moe_gemm_entry(bm)?;
                    let max_sorted = moe::moe_max_sorted(t, *top_k, *local_experts, bm);
                    let blocks = moe::moe_max_blocks(t, *top_k, *local_experts, bm);
                    let al = |b: usize| b.div_ceil(ALIGN) * ALIGN;
                    let sorted = scratch.ptr;
                    let block_expert = sorted + al(max_sorted * 4) as u64;
                    let slot_to_sorted = block_expert + al(blocks * 4) as u64;
                    let total = slot_to_sorted + al(t * top_k * 4) as u64;
                    let h13 = total + al(4) as u64;
                    let hact = h13 + al(max_sorted * 2 * inter * 2) as u64;
                    let c2 = hact + al(max_sorted * inter * 2) as u64;
                    moe::check_moe_gemm(hidden, ctx.ld(*x) as usize, blocks)?;
                    moe::check_moe_gemm(*inter, *inter, blocks)?;
                    let p = moe::MoeAlignParams {
                        topk_ids: ctx.ptr(*in_ids),
                        tokens: t as i32,
                        top_k: *top_k as i32,
                        expert_start: *expert_start as i32,
                        num_local_experts: *local_experts as i32,
                        block_m: bm as i32,
                        sorted_slots: sorted,
                        block_expert,
                        slot_to_sorted,
                        total_padded: total,
                        max_sorted: max_sorted as i32,
                        ..Default::default()
                    };
                    c.push(kernel(moe::MOE_ALIGN, moe::moe_align_launch(*local_experts), p));
                    let p = moe::MoeGemmParams {
                        a: ctx.ptr(*x),
                        a_ld: ctx.ld(*x),
                        a_rows_are_tokens: 1,
                        top_k: *top_k as i32,
                        sorted_slots: sorted,
                        block_expert,
                        total_padded: total,
                        w: ctx.w(*w13),
                        w_expert_stride: (2 * inter * hidden) as i64,
                        n: (2 * inter) as i32,
                        k: hidden as i32,
                        c: h13,
                        c_ld: (2 * inter) as i32,
                        max_blocks_m: blocks as i32,
                        ..Default::default()
                    };
                    c.push(kernel(tile.entry, moe::moe_gemm_launch(bm, 2 * inter, blocks)?, p));
                    let p = act::ActMulParams {
                        r#in: h13,
                        in_ld: (2 * inter) as i32,
                        out: hact,
                        out_ld: *inter as i32,
                        rows: max_sorted as i32,
                        inter: *inter as i32,
                        act: act::activation_code(*a),
                        ..Default::default()
                    };
                    c.push(kernel(act::ACT_MUL, act::act_mul_launch(max_sorted, *inter), p));
                    let p = moe::MoeGemmParams {
                        a: hact,
                        a_ld: *inter as i32,
                        a_rows_are_tokens: 0,
                        top_k: *top_k as i32,
                        sorted_slots: sorted,
                        block_expert,
                        total_padded: total,
                        w: ctx.w(*w2),
                        w_expert_stride: (hidden * inter) as i64,
                        n: hidden as i32,
                        k: *inter as i32,
                        c: c2,
                        c_ld: hidden as i32,
                        max_blocks_m: blocks as i32,
                        ..Default::default()
                    };
                    c.push(kernel(tile.entry, moe::moe_gemm_launch(bm, hidden, blocks)?, p));
                    let p = moe::MoeCombineParams {
                        c2,
                        c2_ld: hidden as i32,
                        slot_to_sorted,
                        topk_weights: ctx.ptr(*in_w),
                        tokens: t as i32,
                        top_k: *top_k as i32,
                        hidden: hidden as i32,
                        y: ctx.ptr(*out),
                        y_ld: ctx.ld(*out),
                        accumulate: 0,
                        ..Default::default()
                    };
                    c.push(kernel(moe::MOE_COMBINE, moe::moe_combine_launch(t, *top_k)?, p));
                }
                Op::GatherRows { x, rows, out } => {
                    let idx: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
                    let buf = DeviceBuffer::upload(&idx)?;
                    let p = misc::GatherRowsParams {
                        src: ctx.ptr(*x),
                        src_ld: ctx.ld(*x),
                        dst: ctx.ptr(*out),
                        dst_ld: ctx.ld(*out),
                        rows_idx: buf.ptr,
                        n_rows: rows.len() as i32,
                        cols: x.cols as i32,
                        ..Default::default()
                    };
                    aux.push(buf);
                    c.push(kernel(misc::GATHER_ROWS, misc::gather_rows_launch(rows.len(), x.cols), p));
                }
                Op::Collective { .. } => bail!("plan has a collective but runs on one GPU"),
            }
            calls.push(c);
        }
        Ok(BoundPlan { plan, memory, arena, _scratch: scratch, _aux: aux, ids, calls })
    }

    pub fn set_ids(&self, ids: &[i32]) -> anyhow::Result<()> {
        assert_eq!(ids.len(), self.plan.tensor(self.plan.input_ids).rows, "one id per token");
        // SAFETY: the buffer holds exactly one i32 per token.
        unsafe { cudarc::driver::result::memcpy_htod_sync(self.ids.ptr, ids) }?;
        Ok(())
    }

    /// Enqueues op `i`'s calls on the stream.
    pub fn run_op(&self, gpu: &Gpu, i: usize) -> anyhow::Result<()> {
        for call in &self.calls[i] {
            match call {
                Call::Kernel(k, cfg, f) => f(gpu, *k, *cfg)?,
                Call::Gemm { shape, x, w, out, bias, alpha } => {
                    gpu.gemm.borrow_mut().run(&gpu.stream, shape, *x, *w, *out, *bias, *alpha)?
                }
            }
        }
        Ok(())
    }

    /// Enqueues the whole forward.
    pub fn forward(&self, gpu: &Gpu) -> anyhow::Result<()> {
        (0..self.calls.len()).try_for_each(|i| self.run_op(gpu, i))
    }

    /// Device address and row stride of an activation, for reading results back.
    pub fn tensor_ptr(&self, v: View) -> u64 {
        view_ptr(&self.plan, &self.memory, self.arena.ptr, v)
    }

    /// The logits `[rows, vocab]` in f32 (after a synchronised forward).
    pub fn read_logits(&self) -> anyhow::Result<Vec<f32>> {
        let t = self.plan.tensor(self.plan.logits.id);
        let all: Vec<f32> = self.arena.download_at(self.memory.offsets[self.plan.logits.id.0], t.rows * t.cols)?;
        Ok(all.chunks(t.cols).flat_map(|r| r[..self.plan.logits.cols].iter().copied()).collect())
    }

    /// A whole activation as f32 (bf16 widened), for per-op checks.
    pub fn read_tensor(&self, id: crate::plan::TensorId) -> anyhow::Result<Vec<f32>> {
        let t = self.plan.tensor(id);
        let off = self.memory.offsets[id.0];
        Ok(match t.dtype {
            DType::F32 => self.arena.download_at(off, t.rows * t.cols)?,
            DType::I32 => self.arena.download_at::<i32>(off, t.rows * t.cols)?.into_iter().map(|v| v as f32).collect(),
            DType::BF16 => {
                self.arena.download_at::<half::bf16>(off, t.rows * t.cols)?.into_iter().map(|v| v.to_f32()).collect()
            }
        })
    }
}
