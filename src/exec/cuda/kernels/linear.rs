//! The cuBLASLt ops (no `kernels/linear.cu`): `Op::Linear`, `Op::HeadMatmul`, and the
//! router GEMM of `Op::Route`. Each shape's descriptors and algorithm are chosen here, at
//! bind time, so a forward (or its graph capture) never runs the heuristic.

use super::super::gemm::GemmShape;
use super::super::gpu::LinearKernels;
use super::gemm_tma::{gemm_tma, GEMM_TMA};
use super::prepare::{kernel, Call, Prep};
use crate::plan::{DType, Op, View, WeightId};

/// `out = alpha * x . W^T (+ bias)` for a `[n, k]` weight: the GEMM of a Linear and of the
/// router. The output may be f32; a padded vocab shard computes every row of the weight
/// (the output tensor is as wide as the weight, see the plan's lm_head).
pub fn linear_call(
    cx: &Prep,
    x: View,
    weight: WeightId,
    bias: Option<WeightId>,
    alpha: f32,
    out: View,
) -> anyhow::Result<Call> {
    let w = cx.plan.weight(weight);
    let shape = GemmShape {
        m: cx.rows(x) as usize,
        n: w.rows,
        k: x.cols,
        ldx: cx.ld(x) as usize,
        ldw: w.cols,
        ldo: cx.ld(out) as usize,
        w_is_n_by_k: true,
        out_f32: cx.plan.tensor(out.id).dtype == DType::F32,
        bias: bias.is_some(),
        batch: None,
    };
    if cx.gpu.kernel_choice().linear == LinearKernels::TmaGate {
        anyhow::ensure!(
            !shape.out_f32 && bias.is_none() && alpha == 1.0,
            "the TMA gate GEMM computes bf16 x . W^T only (this linear has an f32 output, a bias or a scale): use cuBLASLt"
        );
        let (p, cfg) =
            gemm_tma(cx.ptr(x), shape.ldx, cx.w(weight), shape.ldw, cx.ptr(out), shape.ldo, shape.m, shape.n, shape.k)?;
        return Ok(kernel(GEMM_TMA, cfg, p));
    }
    gemm_call(cx, shape, x, weight, out, bias.map(|b| cx.w(b)), alpha)
}

/// Chooses the algorithm for `shape` now, then records the call.
fn gemm_call(
    cx: &Prep,
    shape: GemmShape,
    x: View,
    weight: WeightId,
    out: View,
    bias: Option<u64>,
    alpha: f32,
) -> anyhow::Result<Call> {
    cx.gpu.gemm.borrow_mut().warm(&shape)?;
    Ok(Call::Gemm { shape, x: cx.ptr(x), w: cx.w(weight), out: cx.ptr(out), bias, alpha })
}

/// `Op::Linear` and `Op::HeadMatmul` (a strided batch over heads).
pub fn prepare(cx: &mut Prep, op: &Op) -> anyhow::Result<Vec<Call>> {
    Ok(vec![match op {
        Op::Linear { x, weight, bias, alpha, out } => linear_call(cx, *x, *weight, *bias, *alpha, *out)?,
        Op::HeadMatmul { x, x_stride, weight, heads, transpose, out } => {
            let w = cx.plan.weight(*weight);
            let (a, b) = (w.rows, w.cols);
            let (k, n) = if *transpose { (b, a) } else { (a, b) };
            let shape = GemmShape {
                m: cx.rows(*x) as usize,
                n,
                k,
                ldx: cx.ld(*x) as usize,
                ldw: b,
                ldo: cx.ld(*out) as usize,
                w_is_n_by_k: *transpose,
                out_f32: false,
                bias: false,
                batch: Some((*heads, *x_stride, a * b, n)),
            };
            gemm_call(cx, shape, *x, *weight, *out, None, 1.0)?
        }
        _ => unreachable!("linear::prepare got {op:?}"),
    }])
}
