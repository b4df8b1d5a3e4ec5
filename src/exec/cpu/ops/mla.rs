//! Multi-head latent attention (DeepSeek): the latent cache write, the MHA form used in
//! prefill (per-head keys `[k_nope_h ; k_pe]` from the expanded `kv`) and the absorbed form
//! used in decode (queries in latent space against the cached `[c_kv ; k_pe]`, values = `c_kv`).

use super::super::{CpuRun, KvCaches};
use super::{attention, AttnShape};
use crate::plan::Op;

/// `Op::MlaCacheWrite`, `Op::MlaPrefillAttention` and `Op::MlaDecodeAttention`.
pub fn run(r: &mut CpuRun, op: &Op, caches: &mut KvCaches) {
    let plan = r.plan;
    match op {
        Op::MlaCacheWrite { latent, k_pe, cache } => {
            let info = &plan.caches[cache.0];
            let (lat, pe) = (r.read(*latent), r.read(*k_pe));
            let width = info.k_elems_per_token();
            let n = plan.shape.new_tokens_per_seq();
            let past = plan.shape.past();
            for t in 0..plan.rows(*latent) {
                let (b, i) = (t / n, t % n);
                let dst = &mut caches.k[cache.0][(b * info.max_seq + past + i) * width..][..width];
                dst[..latent.cols].copy_from_slice(&lat[t * latent.cols..(t + 1) * latent.cols]);
                dst[latent.cols..].copy_from_slice(&pe[t * k_pe.cols..(t + 1) * k_pe.cols]);
            }
        }
        Op::MlaPrefillAttention { q, kv, k_pe, out, heads, d_nope, d_rope, d_v, scale } => {
            let (qs, kvs, pes) = (r.read(*q), r.read(*kv), r.read(*k_pe));
            let n = plan.shape.new_tokens_per_seq();
            let dqk = d_nope + d_rope;
            let t_all = plan.rows(*q);
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
                let rows = b * n..(b + 1) * n;
                result.extend(attention(
                    &qs[rows.start * q.cols..rows.end * q.cols],
                    n,
                    0,
                    &keys[rows.start * heads * dqk..rows.end * heads * dqk],
                    &values[rows.start * heads * d_v..rows.end * heads * d_v],
                    n,
                    &shape,
                    *scale,
                    None,
                ));
            }
            r.write(*out, &result);
        }
        Op::MlaDecodeAttention { q_lat, q_pe, q_pe_stride, cache, out, heads, kv_lora_rank, d_rope, scale } => {
            let info = &plan.caches[cache.0];
            let (ql, qp) = (r.read(*q_lat), r.read(*q_pe));
            let width = info.k_elems_per_token();
            let ctx = plan.shape.context();
            let shape = AttnShape { q_heads: *heads, k_heads: 1, v_heads: 1, d_qk: width, d_v: *kv_lora_rank };
            let mut result = Vec::new();
            for t in 0..plan.rows(*q_lat) {
                let mut query = Vec::with_capacity(heads * width);
                for h in 0..*heads {
                    query.extend_from_slice(&ql[t * q_lat.cols + h * kv_lora_rank..][..*kv_lora_rank]);
                    query.extend_from_slice(&qp[t * q_pe.cols + h * q_pe_stride..][..*d_rope]);
                }
                let keys = &caches.k[cache.0][t * info.max_seq * width..][..ctx * width];
                let values: Vec<f32> =
                    keys.chunks(width).flat_map(|row| row[..*kv_lora_rank].iter().copied()).collect();
                result.extend(attention(&query, 1, ctx - 1, keys, &values, ctx, &shape, *scale, None));
            }
            r.write(*out, &result);
        }
        _ => unreachable!("mla::run got {op:?}"),
    }
}
