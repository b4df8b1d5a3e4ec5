//! Dense feed-forward blocks: the gated MLP (SiLU/GELU, no biases) and GPT's plain
//! `fc2(gelu(fc1 x + b1)) + b2`. Column-parallel up, row-parallel down over the FFN group
//! (every rank); the caller all-reduces the partial output.

use crate::config::model::Activation;
use crate::model::builder::{split, Builder, Hf};
use crate::plan::{DType, Op, View};

/// HF tensors of a gated MLP: gate and up `[inter, hidden]`, down `[hidden, inter]`.
pub struct GatedNames {
    pub gate: Hf,
    pub up: Hf,
    pub down: Hf,
}

/// The FFN group's width and this rank's position in it.
pub fn ffn_share(b: &Builder, total: usize) -> (usize, usize) {
    split(total, b.layout.world, b.layout.rank)
}

pub fn gated_mlp(b: &mut Builder, x: View, tag: &str, names: &GatedNames, act: Activation) -> View {
    let hidden = b.cfg.hidden_size;
    let (i0, ni) = ffn_share(b, names.gate.rows);
    let w13 = b.weight(
        &format!("{tag}.gate_up"),
        [1, 2 * ni, hidden],
        DType::BF16,
        vec![names.gate.rows_at(i0, ni, 0, 0), names.up.rows_at(i0, ni, 0, ni)],
    );
    let gu = b.linear(&format!("{tag}.gate_up"), x, w13, None);
    let rows = b.rows(x);
    let h = b.act(&format!("{tag}.act"), rows, ni);
    b.op(&format!("{tag}.act"), Op::ActMul { x: gu, out: h, act });
    let w2 = b.weight(&format!("{tag}.down"), [1, hidden, ni], DType::BF16, vec![names.down.cols_at(i0, ni, 0, 0)]);
    b.linear(&format!("{tag}.down"), h, w2, None)
}

/// GPT-2 MLP; `fc` and `proj` are Conv1D tensors seen as `[out, in]`.
pub fn plain_mlp(b: &mut Builder, x: View, fc: (&Hf, &Hf), proj: (&Hf, &Hf), act: Activation) -> View {
    let hidden = b.cfg.hidden_size;
    let (i0, ni) = ffn_share(b, fc.0.rows);
    let w_fc = b.weight("mlp.fc", [1, ni, hidden], DType::BF16, vec![fc.0.rows_at(i0, ni, 0, 0)]);
    let b_fc = b.weight("mlp.fc_bias", [1, 1, ni], DType::BF16, vec![fc.1.cols_at(i0, ni, 0, 0)]);
    let h = b.linear("mlp.fc", x, w_fc, None);
    b.op("mlp.fc_act", Op::BiasAct { x: h, bias: Some(b_fc), act });
    let w_proj = b.weight("mlp.proj", [1, hidden, ni], DType::BF16, vec![proj.0.cols_at(i0, ni, 0, 0)]);
    let first = b.layout.rank == 0;
    let b_proj =
        b.weight("mlp.proj_bias", [1, 1, hidden], DType::BF16, if first { vec![proj.1.whole()] } else { vec![] });
    b.linear("mlp.proj", h, w_proj, Some(b_proj))
}
