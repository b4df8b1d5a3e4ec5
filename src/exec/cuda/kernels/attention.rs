//! `Op::Attention`: the KV-cache write, then causal flash attention in prefill
//! (`attention_prefill.rs`) or split-KV attention with its combine in decode
//! (`attention_decode.rs`).

use anyhow::Context;

use super::attention_decode::{
    decode_attention_launch, decode_combine_launch, decode_num_splits, decode_scratch_bytes, DecodeAttentionParams,
    DecodeCombineParams, DECODE_COMBINE,
};
use super::attention_fa3::{fa3_prefill_call, Fa3Problem, HeadsOperand};
use super::attention_prefill::{
    flash_prefill_launch, kv_cache_write_launch, FlashPrefillParams, KvCacheWriteParams, KV_CACHE_WRITE,
};
use super::prepare::{kernel, Call, Prep};
use super::{attention_decode, attention_prefill};
use crate::config::run_conf::AttentionBackend;
use crate::plan::memory::Target;
use crate::plan::{Op, Phase, Plan};

/// Splits of a decode launch over `n_kv = context` keys, for `rows` sequences.
fn decode_splits(plan: &Plan, rows: usize, k_heads: usize, target: Target) -> i32 {
    decode_num_splits(rows as i32, k_heads as i32, plan.shape.context() as i32, target.sm_count)
}

/// Decode's fp32 partial sums; prefill needs none.
pub fn scratch_bytes(plan: &Plan, op: &Op, target: Target) -> usize {
    match op {
        Op::Attention { q, q_heads, k_heads, d_v, .. } if plan.shape.phase == Phase::Decode => {
            let rows = plan.rows(*q);
            let splits = decode_splits(plan, rows, *k_heads, target);
            decode_scratch_bytes(rows as i32, *q_heads as i32, *d_v as i32, splits)
        }
        _ => 0,
    }
}

pub fn prepare(cx: &mut Prep, op: &Op) -> anyhow::Result<Vec<Call>> {
    let Op::Attention { q, k, v, cache, out, q_heads, k_heads, v_heads, d_qk, d_v, scale, softcap } = op else {
        unreachable!("attention::prepare got {op:?}")
    };
    let plan = cx.plan;
    let info = &plan.caches[cache.0];
    let (kc, vc) = cx.cache(*cache);
    let n_new = plan.shape.new_tokens_per_seq() as i32;
    let past = plan.shape.past() as i32;
    let rows = cx.rows(*q);
    // k and v are windows of the fused qkv buffer (same tensor as q).
    let p = KvCacheWriteParams {
        src: cx.base(*k),
        src_ld: cx.ld(*k),
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
    let mut calls = vec![kernel(KV_CACHE_WRITE, kv_cache_write_launch(rows), p)];
    let (kw, vw) = (info.k_elems_per_token() as i32, info.v_elems_per_token() as i32);
    let softcap = softcap.unwrap_or(0.0);
    match plan.shape.phase {
        Phase::Prefill if cx.gpu.kernel_choice().attention == AttentionBackend::Fa3 => {
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
                o: cx.ptr(*out),
                o_batch_stride: n_q * ld_o,
                o_token_stride: ld_o,
                o_head_stride: *d_v,
                scale: *scale,
                softcap,
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
            };
            calls.push(kernel(DECODE_COMBINE, decode_combine_launch(rows, *q_heads as i32), p));
        }
    }
    Ok(calls)
}
