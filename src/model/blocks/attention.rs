//! GQA / MHA / DiffQKV attention (one block for GPT-3, Grok-1, Qwen, Sigma V2 and Sigma v1).
//!
//! Sharding (SGLang's QKVParallelLinear/RowParallelLinear): query heads split over the
//! attention-TP group; KV heads split too, or replicated one per rank when the group is
//! wider than the KV head count; q, k and v of this rank fused into one GEMM; o_proj
//! row-parallel (partial sums, the caller all-reduces). With an augmented Q (Sigma v1),
//! q0 and the Aug-Q gate/up stay replicated (their input is every head's q) and only
//! q_down is split by heads, so no extra collective is needed.

use crate::config::model::RopeConfig;
use crate::model::builder::{kv_head_share, split, Builder, Hf};
use crate::plan::{CacheInfo, DType, Op, View};

/// An HF tensor and the row where this projection starts in it (GPT-2 fuses q, k and v
/// in one `c_attn`; the others keep them separate at offset 0).
pub type Src = (Hf, usize);

pub struct AttnNames {
    pub q: Src,
    pub k: Src,
    pub v: Src,
    pub o: Hf,
    pub qkv_bias: Option<[Src; 3]>,
    pub o_bias: Option<Hf>,
    /// Per-head q/k RMSNorm weights (`[head_dim]`).
    pub qk_norm: Option<(Hf, Hf)>,
    /// Sigma v1 augmented Q: gate, up `[aug, nq*dh]`, down `[nq*dh, aug]`.
    pub aug_q: Option<(Hf, Hf, Hf)>,
}

pub struct AttnSpec {
    pub q_heads: usize,
    pub k_heads: usize,
    pub v_heads: usize,
    pub head_dim: usize,
    pub rope: Option<RopeConfig>,
    pub scale: f32,
    pub softcap: Option<f32>,
    pub norm_eps: f32,
    pub aug_act: crate::config::model::Activation,
}

/// Emits the attention of one layer on the normed input `x`; returns o_proj's output
/// (a partial sum when the attention-TP group has more than one rank).
pub fn attention(b: &mut Builder, x: View, names: &AttnNames, spec: &AttnSpec) -> View {
    let tp = b.layout.attn_tp;
    let tp_rank = b.layout.attn_tp_rank();
    let dh = spec.head_dim;
    let (q0, nq) = split(spec.q_heads, tp, tp_rank);
    let (k0, nk) = kv_head_share(spec.k_heads, tp, tp_rank);
    let (v0, nv) = kv_head_share(spec.v_heads, tp, tp_rank);
    let hidden = b.cfg.hidden_size;
    let tokens = b.attn_tokens();

    // Fused projection: [q (unless augmented) | k | v] rows of this rank.
    let q_in_fused = names.aug_q.is_none();
    let q_rows = if q_in_fused { nq * dh } else { 0 };
    let fused_rows = q_rows + nk * dh + nv * dh;
    let mut pieces = Vec::new();
    let mut bias_pieces = Vec::new();
    let mut row = 0;
    for (i, (src, first, count)) in [(&names.q, q0, nq), (&names.k, k0, nk), (&names.v, v0, nv)].into_iter().enumerate()
    {
        if i == 0 && !q_in_fused {
            continue;
        }
        pieces.push(src.0.rows_at(src.1 + first * dh, count * dh, 0, row));
        if let Some(biases) = &names.qkv_bias {
            let (bias, offset) = &biases[i];
            bias_pieces.push(bias.block(0, offset + first * dh, 1, count * dh, 0, 0, row));
        }
        row += count * dh;
    }
    let w_qkv = b.weight("attn.qkv", [1, fused_rows, hidden], DType::BF16, pieces);
    let b_qkv =
        names.qkv_bias.as_ref().map(|_| b.weight("attn.qkv_bias", [1, 1, fused_rows], DType::BF16, bias_pieces));
    let qkv = b.linear("attn.qkv", x, w_qkv, b_qkv);

    let q = match &names.aug_q {
        None => b.window(qkv, 0, nq * dh),
        Some((gate, up, down)) => {
            let full_q = spec.q_heads * dh;
            let w_q = b.weight(
                "attn.q_proj",
                [1, full_q, hidden],
                DType::BF16,
                vec![names.q.0.rows_at(names.q.1, full_q, 0, 0)],
            );
            let q_full = b.linear("attn.q_proj", x, w_q, None);
            let aug = gate.rows;
            let w_gu = b.weight(
                "attn.aug_q_gate_up",
                [1, 2 * aug, full_q],
                DType::BF16,
                vec![gate.rows_at(0, aug, 0, 0), up.rows_at(0, aug, 0, aug)],
            );
            let gu = b.linear("attn.aug_q_gate_up", q_full, w_gu, None);
            let act = b.act("attn.aug_q_act", tokens, aug);
            b.op("attn.aug_q_act", Op::ActMul { x: gu, out: act, act: spec.aug_act });
            let w_down =
                b.weight("attn.aug_q_down", [1, nq * dh, aug], DType::BF16, vec![down.rows_at(q0 * dh, nq * dh, 0, 0)]);
            b.linear("attn.aug_q_down", act, w_down, None)
        }
    };
    let k = b.window(qkv, q_rows, nk * dh);
    let v = b.window(qkv, q_rows + nk * dh, nv * dh);

    if let Some((q_norm, k_norm)) = &names.qk_norm {
        let wq = b.weight("attn.q_norm", [1, 1, dh], DType::BF16, vec![q_norm.whole()]);
        let wk = b.weight("attn.k_norm", [1, 1, dh], DType::BF16, vec![k_norm.whole()]);
        b.op("attn.q_norm", Op::HeadNorm { x: q, heads: nq, head_dim: dh, weight: wq, eps: spec.norm_eps });
        b.op("attn.k_norm", Op::HeadNorm { x: k, heads: nk, head_dim: dh, weight: wk, eps: spec.norm_eps });
    }
    if let Some(rope) = spec.rope {
        b.op("attn.rope_q", Op::Rope { x: q, heads: nq, head_stride: dh, rope_offset: 0, rope });
        b.op("attn.rope_k", Op::Rope { x: k, heads: nk, head_stride: dh, rope_offset: 0, rope });
    }

    let cache = b.cache(CacheInfo {
        layer: b.layer.unwrap_or(0),
        batch: b.local_batch,
        max_seq: b.cache_len(),
        k_heads: nk,
        d_k: dh,
        v_heads: nv,
        d_v: dh,
    });
    b.op("attn.cache_write", Op::KvCacheWrite { k, v, cache });
    let attn_out = b.act("attn.core", tokens, nq * dh);
    b.op(
        "attn.core",
        Op::Attention {
            q,
            cache,
            out: attn_out,
            q_heads: nq,
            k_heads: nk,
            v_heads: nv,
            d_qk: dh,
            d_v: dh,
            scale: spec.scale,
            softcap: spec.softcap,
        },
    );

    let w_o = b.weight("attn.o_proj", [1, hidden, nq * dh], DType::BF16, vec![names.o.cols_at(q0 * dh, nq * dh, 0, 0)]);
    // A row-parallel bias is added once, on the group's first rank.
    let b_o = names.o_bias.as_ref().map(|bias| {
        let pieces = if tp_rank == 0 { vec![bias.whole()] } else { vec![] };
        b.weight("attn.o_bias", [1, 1, hidden], DType::BF16, pieces)
    });
    b.linear("attn.o_proj", attn_out, w_o, b_o)
}
