//! Mixture-of-experts block with a pluggable router (models.md §2.1, §3.3-3.4, §4.3, §5.1).
//!
//! The router is replicated (fp32 weights, every rank routes every token). Experts are
//! split over `ep` groups of `E/ep` whole experts, and each expert's intermediate dim over
//! `moe_tp = world/ep` ranks (gate/up column-parallel, down row-parallel). Shared experts
//! are split over every rank and added *before* the caller's all-reduce, so their partial
//! sums are reduced with the routed ones (the ltp-sglang pitfall of models.md §5.1).

use super::mlp::{gated_mlp, GatedNames};
use crate::config::model::MoeConfig;
use crate::model::builder::{split, Builder, Hf};
use crate::plan::{DType, ExpertChoice, Init, Op, View};

pub struct MoeNames {
    pub router: Hf,
    pub correction_bias: Option<Hf>,
    /// `(gate, up, down)` HF tensors of expert `e`.
    pub expert: Box<dyn Fn(usize) -> (Hf, Hf, Hf)>,
    pub shared: Option<GatedNames>,
    /// Qwen2-MoE's `[1, hidden]` sigmoid gate on the shared expert.
    pub shared_gate: Option<Hf>,
}

pub fn moe(b: &mut Builder, x: View, moe: &MoeConfig, names: &MoeNames) -> View {
    let hidden = b.cfg.hidden_size;
    let tokens = b.rows(x);
    let e_total = moe.num_experts;
    let (e0, e_local) = split(e_total, b.layout.ep, b.layout.ep_rank());
    let (i0, ni) = split(moe.expert_intermediate_size, b.layout.moe_tp, b.layout.moe_tp_rank());

    // bf16 like every GEMM operand; the logits come out in fp32 (as SGLang computes them).
    let w_router = b.weight("moe.router", [1, e_total, hidden], DType::BF16, vec![names.router.whole()]);
    let bias = names
        .correction_bias
        .as_ref()
        .map(|hf| b.weight("moe.correction_bias", [1, 1, e_total], DType::F32, vec![hf.whole()]));
    let logits = b.tensor("moe.router_logits", tokens, e_total, DType::F32);
    let ids = b.tensor("moe.topk_ids", tokens, moe.top_k, DType::I32);
    let weights = b.tensor("moe.topk_weights", tokens, moe.top_k, DType::F32);
    b.op(
        "moe.route",
        Op::Route {
            x,
            weight: w_router,
            correction_bias: bias,
            logits,
            ids,
            weights,
            router: moe.router.clone(),
            top_k: moe.top_k,
            choice: ExpertChoice::Router,
        },
    );

    let mut w13_pieces = Vec::with_capacity(2 * e_local);
    let mut w2_pieces = Vec::with_capacity(e_local);
    for local in 0..e_local {
        let (gate, up, down) = (names.expert)(e0 + local);
        w13_pieces.push(gate.rows_at(i0, ni, local, 0));
        w13_pieces.push(up.rows_at(i0, ni, local, ni));
        w2_pieces.push(down.cols_at(i0, ni, local, 0));
    }
    let w13 = b.weight("moe.experts_w13", [e_local, 2 * ni, hidden], DType::BF16, w13_pieces);
    let w2 = b.weight("moe.experts_w2", [e_local, hidden, ni], DType::BF16, w2_pieces);
    let out = b.act("moe.experts", tokens, hidden);
    b.op(
        "moe.experts",
        Op::Moe {
            x,
            ids,
            weights,
            w13,
            w2,
            expert_start: e0,
            local_experts: e_local,
            top_k: moe.top_k,
            inter: ni,
            act: moe.activation,
            out,
            experts_total: e_total,
        },
    );

    if let Some(shared) = &names.shared {
        let shared_out = gated_mlp(b, x, "moe.shared", shared, moe.activation);
        let gate = names.shared_gate.as_ref().map(|hf| {
            let w = b.weight("moe.shared_gate", [1, 1, hidden], DType::BF16, vec![hf.whole()]);
            b.linear("moe.shared_gate", x, w, None)
        });
        b.op("moe.shared_add", Op::Add { acc: out, x: shared_out, gate });
    }
    out
}

/// Init of router weights: wide enough that routing varies from token to token.
pub fn router_init() -> Init {
    Init::normal(0.02)
}
