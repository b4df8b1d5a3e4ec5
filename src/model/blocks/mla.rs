//! Multi-head latent attention (DeepSeek V2/V3), models.md §4.1 and §6.5.
//!
//! The down-projections (q_a, kv_a) are replicated and fused into one GEMM; q_b, kv_b and
//! o_proj are split by heads over the attention-TP group. The cache holds the 576-wide
//! `[c_kv ; k_pe]` per token, replicated on every rank of the group. Prefill uses the MHA
//! form (kv_b expands the latent, d_qk 192 / d_v 128); decode the absorbed form
//! (`q_nope . W_uk` into latent space, MQA over the cache, `. W_uv^T` back), as SGLang does.

use crate::config::model::MlaConfig;
use crate::model::builder::{split, Builder, Hf};
use crate::plan::{CacheInfo, DType, Init, Op, Phase, View};

pub fn mla(b: &mut Builder, x: View, prefix: &str, mla: &MlaConfig, init: Init, norm_init: Init, eps: f32) -> View {
    let hidden = b.cfg.hidden_size;
    let tokens = b.attn_tokens();
    let (h0, nh) = split(mla.num_heads, b.layout.attn_tp, b.layout.attn_tp_rank());
    let (dn, dr, dv, rkv) = (mla.qk_nope_head_dim, mla.qk_rope_head_dim, mla.v_head_dim, mla.kv_lora_rank);
    let dqk = dn + dr;
    let kv_a = Hf::new(format!("{prefix}.kv_a_proj_with_mqa.weight"), rkv + dr, hidden, init);

    // Fused first projection: [q_a (or this rank's q heads) | kv_a].
    let (q_part_rows, q_piece) = match mla.q_lora_rank {
        Some(rq) => (rq, Hf::new(format!("{prefix}.q_a_proj.weight"), rq, hidden, init).whole()),
        None => {
            let q = Hf::new(format!("{prefix}.q_proj.weight"), mla.num_heads * dqk, hidden, init);
            (nh * dqk, q.rows_at(h0 * dqk, nh * dqk, 0, 0))
        }
    };
    let fused_rows = q_part_rows + rkv + dr;
    let w_a = b.weight(
        "attn.qkv_a",
        [1, fused_rows, hidden],
        DType::BF16,
        vec![q_piece, kv_a.rows_at(0, rkv + dr, 0, q_part_rows)],
    );
    let fused = b.linear("attn.qkv_a", x, w_a, None);

    let q = match mla.q_lora_rank {
        Some(rq) => {
            let w_norm = b.weight(
                "attn.q_a_norm",
                [1, 1, rq],
                DType::BF16,
                vec![Hf::vector(format!("{prefix}.q_a_layernorm.weight"), rq, norm_init).whole()],
            );
            let cq = b.act("attn.q_a_norm", tokens, rq);
            let cq_in = b.window(fused, 0, rq);
            b.op(
                "attn.q_a_norm",
                Op::Norm { x: cq_in, delta: None, weight: w_norm, bias: None, kind: b.cfg.norm.kind, eps, out: cq },
            );
            let q_b = Hf::new(format!("{prefix}.q_b_proj.weight"), mla.num_heads * dqk, rq, init);
            let w_qb =
                b.weight("attn.q_b", [1, nh * dqk, rq], DType::BF16, vec![q_b.rows_at(h0 * dqk, nh * dqk, 0, 0)]);
            b.linear("attn.q_b", cq, w_qb, None)
        }
        None => b.window(fused, 0, nh * dqk),
    };

    let w_kv_norm = b.weight(
        "attn.kv_a_norm",
        [1, 1, rkv],
        DType::BF16,
        vec![Hf::vector(format!("{prefix}.kv_a_layernorm.weight"), rkv, norm_init).whole()],
    );
    let latent = b.act("attn.kv_a_norm", tokens, rkv);
    let latent_in = b.window(fused, q_part_rows, rkv);
    b.op(
        "attn.kv_a_norm",
        Op::Norm { x: latent_in, delta: None, weight: w_kv_norm, bias: None, kind: b.cfg.norm.kind, eps, out: latent },
    );
    let k_pe = b.window(fused, q_part_rows + rkv, dr);

    b.op("attn.rope_q", Op::Rope { x: q, heads: nh, head_stride: dqk, rope_offset: dn, rope: mla.rope });
    b.op("attn.rope_k", Op::Rope { x: k_pe, heads: 1, head_stride: dr, rope_offset: 0, rope: mla.rope });

    let cache = b.cache(CacheInfo {
        layer: b.layer.unwrap_or(0),
        batch: b.local_batch,
        max_seq: b.cache_len(),
        k_heads: 1,
        d_k: rkv + dr,
        v_heads: 0,
        d_v: 0,
    });
    b.op("attn.cache_write", Op::MlaCacheWrite { latent, k_pe, cache });

    let kv_b = Hf::new(format!("{prefix}.kv_b_proj.weight"), mla.num_heads * (dn + dv), rkv, init);
    let o = match b.shape.phase {
        Phase::Prefill => {
            let w_kvb = b.weight(
                "attn.kv_b",
                [1, nh * (dn + dv), rkv],
                DType::BF16,
                vec![kv_b.rows_at(h0 * (dn + dv), nh * (dn + dv), 0, 0)],
            );
            let kv = b.linear("attn.kv_b", latent, w_kvb, None);
            let out = b.act("attn.core", tokens, nh * dv);
            b.op(
                "attn.core",
                Op::MlaPrefillAttention {
                    q,
                    kv,
                    k_pe,
                    out,
                    heads: nh,
                    d_nope: dn,
                    d_rope: dr,
                    d_v: dv,
                    scale: mla.softmax_scale,
                },
            );
            out
        }
        Phase::Decode => {
            let w_uk_pieces = (0..nh).map(|h| kv_b.rows_at((h0 + h) * (dn + dv), dn, h, 0)).collect();
            let w_uk = b.weight("attn.w_uk", [nh, dn, rkv], DType::BF16, w_uk_pieces);
            let w_uv_pieces = (0..nh).map(|h| kv_b.rows_at((h0 + h) * (dn + dv) + dn, dv, h, 0)).collect();
            let w_uv = b.weight("attn.w_uv", [nh, dv, rkv], DType::BF16, w_uv_pieces);
            let q_lat = b.act("attn.q_absorb", tokens, nh * rkv);
            let q_nope = b.window(q, 0, (nh - 1) * dqk + dn);
            b.op(
                "attn.q_absorb",
                Op::HeadMatmul { x: q_nope, x_stride: dqk, weight: w_uk, heads: nh, transpose: false, out: q_lat },
            );
            let o_lat = b.act("attn.core", tokens, nh * rkv);
            let q_pe = b.window(q, dn, (nh - 1) * dqk + dr);
            b.op(
                "attn.core",
                Op::MlaDecodeAttention {
                    q_lat,
                    q_pe,
                    q_pe_stride: dqk,
                    cache,
                    out: o_lat,
                    heads: nh,
                    kv_lora_rank: rkv,
                    d_rope: dr,
                    scale: mla.softmax_scale,
                },
            );
            let out = b.act("attn.v_absorb", tokens, nh * dv);
            b.op(
                "attn.v_absorb",
                Op::HeadMatmul { x: o_lat, x_stride: rkv, weight: w_uv, heads: nh, transpose: true, out },
            );
            out
        }
    };
    let o_proj = Hf::new(format!("{prefix}.o_proj.weight"), hidden, mla.num_heads * dv, init);
    let w_o = b.weight("attn.o_proj", [1, hidden, nh * dv], DType::BF16, vec![o_proj.cols_at(h0 * dv, nh * dv, 0, 0)]);
    b.linear("attn.o_proj", o, w_o, None)
}
