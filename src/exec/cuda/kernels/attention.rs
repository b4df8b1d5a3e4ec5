//! `Op::Attention`: the KV-cache write, then causal flash attention in prefill
//! (`attention_fa3.rs`, `attention_prefill.rs`) or split-KV attention with its combine in
//! decode (`attention_decode_tma.rs` under fa3 where it supports the heads,
//! `attention_decode.rs` otherwise). Under fa3 a prefill whose packed rows fit one 16-row
//! tile (at most 16 / group tokens per sequence: the speculative-decoding shape) runs the
//! decode kernel too, whose 16-row tiles waste less than FA3's 128.

use anyhow::Context;

use super::attention_decode::{
    decode_attention_launch, decode_combine_launch, decode_num_splits, decode_scratch_bytes, DecodeAttentionParams,
    DecodeCombineParams, DECODE_COMBINE,
};
use super::attention_decode_tma::{decode_tma_calls, DecodeTmaProblem};
use super::attention_fa3::{fa3_prefill_call, Fa3Problem, HeadsOperand};
use super::attention_prefill::{
    flash_prefill_launch, kv_cache_write_launch, FlashPrefillParams, KvCacheWriteParams, KV_CACHE_WRITE,
};
use super::prepare::{kernel, Call, Prep};
use super::{attention_decode, attention_decode_tma, attention_prefill};
use crate::config::run_conf::AttentionBackend;
use crate::plan::memory::Target;
use crate::plan::{Op, Phase, Plan};

/// Splits of a decode launch over `n_kv = context` keys, for `rows` sequences.
fn decode_splits(plan: &Plan, rows: usize, k_heads: usize, target: Target) -> i32 {
    decode_num_splits(rows as i32, k_heads as i32, plan.shape.context() as i32, target.sm_count)
}

/// Decode's fp32 partial sums (the larger of the two decode kernels', since the backend is
/// chosen after the memory plan); prefill needs none unless it runs the decode kernel.
pub fn scratch_bytes(plan: &Plan, op: &Op, target: Target) -> usize {
    let Op::Attention { q, q_heads, k_heads, d_v, .. } = op else { return 0 };
    let tma = tma_problem(plan, op, target.sm_count).map_or(0, |pr| pr.scratch_bytes());
    if plan.shape.phase == Phase::Decode {
        let rows = plan.rows(*q);
        let splits = decode_splits(plan, rows, *k_heads, target);
        tma.max(decode_scratch_bytes(rows as i32, *q_heads as i32, *d_v as i32, splits))
    } else {
        tma
    }
}

/// The fa3 decode kernel's problem for `op`, if that kernel takes it: GQA/MHA heads, and in
/// prefill only when the sequence's packed rows fit one tile. Addresses are left 0 (the
/// caller fills them); sizes, strides and splits are final.
fn tma_problem(plan: &Plan, op: &Op, sm_count: i32) -> Option<DecodeTmaProblem> {
    let Op::Attention { q, out, cache, q_heads, k_heads, v_heads, d_qk, d_v, scale, softcap, .. } = op else {
        return None;
    };
    let s_q = plan.shape.new_tokens_per_seq();
    let group = q_heads / (*k_heads).max(1);
    let short = s_q * group <= attention_decode_tma::DECODE_TMA_ROWS as usize;
    if !attention_decode_tma::supports(*q_heads, *k_heads, *v_heads, *d_qk, *d_v)
        || (plan.shape.phase == Phase::Prefill && !short)
    {
        return None;
    }
    Some(DecodeTmaProblem {
        q: 0,
        q_row_stride: plan.tensor(q.id).cols,
        o: 0,
        o_row_stride: plan.tensor(out.id).cols,
        k_cache: 0,
        v_cache: 0,
        max_seq: plan.caches[cache.0].max_seq,
        batch: plan.local_batch,
        s_q,
        n_kv: plan.shape.past() + s_q,
        q_heads: *q_heads,
        k_heads: *k_heads,
        d: *d_qk,
        scale: *scale,
        softcap: softcap.unwrap_or(0.0),
        scratch: 0,
        sm_count,
    })
}

/// `Op::KvCacheWrite`: one kernel copies each new token's K and V heads into the cache.
pub fn prepare_cache_write(cx: &mut Prep, op: &Op) -> anyhow::Result<Vec<Call>> {
    let Op::KvCacheWrite { k, v, cache } = op else { unreachable!("attention::prepare_cache_write got {op:?}") };
    // The kernel reads both from one row: k and v are windows of the fused qkv buffer.
    anyhow::ensure!(k.id == v.id, "kv_cache_write: K and V must be windows of one tensor (the fused qkv buffer)");
    let info = &cx.plan.caches[cache.0];
    let (kc, vc) = cx.cache(*cache);
    let rows = cx.rows(*k);
    let p = KvCacheWriteParams {
        src: cx.base(*k),
        src_ld: cx.ld(*k),
        rows,
        k_col: k.col as i32,
        v_col: v.col as i32,
        k_heads: info.k_heads as i32,
        v_heads: info.v_heads as i32,
        d_k: info.d_k as i32,
        d_v: info.d_v as i32,
        k_cache: kc,
        v_cache: vc,
        max_seq: info.max_seq as i32,
        tokens_per_seq: cx.plan.shape.new_tokens_per_seq() as i32,
        past: cx.plan.shape.past() as i32,
    };
    Ok(vec![kernel(KV_CACHE_WRITE, kv_cache_write_launch(rows), p)])
}

/// `Op::Attention`: causal flash attention over the cache in prefill, split-KV decode
/// attention (and its combine) in decode, from the backend the run conf picks.
pub fn prepare(cx: &mut Prep, op: &Op) -> anyhow::Result<Vec<Call>> {
    let Op::Attention { q, cache, out, q_heads, k_heads, v_heads, d_qk, d_v, scale, softcap } = op else {
        unreachable!("attention::prepare got {op:?}")
    };
    let plan = cx.plan;
    let info = &plan.caches[cache.0];
    let (kc, vc) = cx.cache(*cache);
    let n_new = plan.shape.new_tokens_per_seq() as i32;
    let past = plan.shape.past() as i32;
    let rows = cx.rows(*q);
    let (kw, vw) = (info.k_elems_per_token() as i32, info.v_elems_per_token() as i32);
    let softcap = softcap.unwrap_or(0.0);
    let fa3 = cx.gpu.kernel_choice().attention == AttentionBackend::Fa3;
    if let Some(pr) = tma_problem(plan, op, cx.sm_count()).filter(|_| fa3) {
        let pr =
            DecodeTmaProblem { q: cx.ptr(*q), o: cx.ptr(*out), k_cache: kc, v_cache: vc, scratch: cx.scratch, ..pr };
        return decode_tma_calls(&pr);
    }
    let mut calls = Vec::new();
    match plan.shape.phase {
        Phase::Prefill if fa3 => {
            let (batch, ld_q) = (plan.local_batch, cx.ld(*q) as usize);
            let (n_q, n_kv) = (n_new as usize, (past + n_new) as usize);
            let q_op = HeadsOperand {
                base: cx.ptr(*q),
                d: *d_qk,
                heads: *q_heads,
                tokens: n_q,
                batch,
                head_stride: *d_qk,
                token_stride: ld_q,
                batch_stride: n_q * ld_q,
            };
            let kv = |base: u64, d: usize, heads: usize, per_token: i32| HeadsOperand {
                base,
                d,
                heads,
                tokens: n_kv,
                batch,
                head_stride: d,
                token_stride: per_token as usize,
                batch_stride: info.max_seq * per_token as usize,
            };
            let ld_o = cx.ld(*out) as usize;
            calls.push(fa3_prefill_call(&Fa3Problem {
                q: q_op,
                k: kv(kc, *d_qk, *k_heads, kw),
                v: kv(vc, *d_v, *v_heads, vw),
                k_rope: None,
                o: cx.ptr(*out),
                o_batch_stride: n_q * ld_o,
                o_token_stride: ld_o,
                o_head_stride: *d_v,
                scale: *scale,
                softcap,
                sm_count: cx.sm_count(),
            })?);
        }
        Phase::Prefill => {
            let variant = attention_prefill::select_variant(*d_qk as i32, *d_v as i32)
                .with_context(|| format!("no prefill attention kernel for head dims {d_qk}/{d_v}"))?;
            let ld_q = cx.ld(*q);
            let p = FlashPrefillParams {
                q: cx.ptr(*q),
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
                o: cx.ptr(*out),
                o_batch_stride: (n_new * cx.ld(*out)) as i64,
                o_token_stride: cx.ld(*out),
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
            let cfg = flash_prefill_launch(&variant, plan.local_batch as i32, n_new, *q_heads as i32);
            calls.push(kernel(variant.kernel, cfg, p));
        }
        Phase::Decode => {
            let variant = attention_decode::select_variant(*d_qk as i32, *d_v as i32)
                .with_context(|| format!("no decode attention kernel for head dims {d_qk}/{d_v}"))?;
            let splits = decode_splits(plan, rows as usize, *k_heads, cx.mem.target);
            let p = DecodeAttentionParams {
                q: cx.ptr(*q),
                q_batch_stride: cx.ld(*q),
                q_head_stride: *d_qk as i32,
                k_cache: kc,
                v_cache: vc,
                max_seq: info.max_seq as i32,
                k_heads: *k_heads as i32,
                v_heads: *v_heads as i32,
                q_heads: *q_heads as i32,
                d_qk: *d_qk as i32,
                d_v: *d_v as i32,
                n_kv: past + 1,
                batch: rows,
                scale: *scale,
                softcap,
                o: cx.ptr(*out),
                o_batch_stride: cx.ld(*out),
                o_head_stride: *d_v as i32,
                scratch: cx.scratch,
                num_splits: splits,
            };
            let cfg =
                decode_attention_launch(&variant, rows, *q_heads as i32, *k_heads as i32, *v_heads as i32, splits);
            calls.push(kernel(variant.kernel, cfg, p));
            let p = DecodeCombineParams {
                scratch: cx.scratch,
                o: cx.ptr(*out),
                o_batch_stride: cx.ld(*out),
                o_head_stride: *d_v as i32,
                batch: rows,
                q_heads: *q_heads as i32,
                d_v: *d_v as i32,
                num_splits: splits,
                warm: 0,
            };
            calls.push(kernel(DECODE_COMBINE, decode_combine_launch(rows, *q_heads as i32), p));
        }
    }
    Ok(calls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::hf::load_model_config;
    use crate::model::build_plan;
    use crate::plan::{RankLayout, Shape};

    /// The first attention op's fa3 decode problem for `model`'s 2-layer config at `shape`.
    fn problem(model: &str, shape: Shape) -> (Plan, Option<DecodeTmaProblem>) {
        let path = format!("model_conf/{model}/config_2l.json");
        let cfg = load_model_config(std::path::Path::new(&path), &[]).unwrap();
        let plan = build_plan(&cfg, RankLayout::single(), shape, Default::default()).unwrap();
        let op = plan.ops.iter().map(|p| &p.op).find(|op| matches!(op, Op::Attention { .. })).unwrap().clone();
        let pr = tma_problem(&plan, &op, Target::H200.sm_count);
        (plan, pr)
    }

    #[test]
    fn fa3_decode_takes_gqa_and_short_prefills() {
        // Sigma V2: 64q/8kv d128. Decode of b3 with 36 cached tokens sees 37 keys.
        let (plan, pr) = problem("sigma", Shape::decode(3, 36));
        let pr = pr.expect("GQA decode runs the TMA kernel");
        assert_eq!((pr.batch, pr.s_q, pr.n_kv, pr.q_heads, pr.k_heads, pr.d), (3, 1, 37, 64, 8, 128));
        assert!(pr.max_seq >= 37);
        let Some(Op::Attention { q, .. }) = plan.ops.iter().map(|p| &p.op).find(|o| matches!(o, Op::Attention { .. }))
        else {
            unreachable!()
        };
        assert_eq!(pr.q_row_stride, plan.tensor(q.id).cols, "q sits in the fused qkv rows");
        // Two new tokens x 8 q heads fill one 16-row tile; three do not.
        let (_, pr) = problem("sigma", Shape::prefill(3, 2));
        assert_eq!(pr.map(|p| (p.s_q, p.n_kv)), Some((2, 2)));
        assert!(problem("sigma", Shape::prefill(3, 3)).1.is_none());
        // Sigma v1's DiffQKV stays on attention_decode.cu.
        assert!(problem("sigma_v1", Shape::decode(3, 36)).1.is_none());
    }

    #[test]
    fn scratch_covers_both_decode_kernels() {
        let (plan, pr) = problem("sigma", Shape::decode(1, 4096));
        let op = plan.ops.iter().map(|p| &p.op).find(|op| matches!(op, Op::Attention { .. })).unwrap();
        let bytes = scratch_bytes(&plan, op, Target::H200);
        assert!(bytes >= pr.unwrap().scratch_bytes() && bytes > 0);
        assert_eq!(scratch_bytes(&plan, op, Target::H200), bytes);
        let (plan, _) = problem("sigma", Shape::prefill(1, 64));
        let op = plan.ops.iter().map(|p| &p.op).find(|op| matches!(op, Op::Attention { .. })).unwrap();
        assert_eq!(scratch_bytes(&plan, op, Target::H200), 0);
    }
}
