//! The cuBLASLt ops (no `kernels/linear.cu`): `Op::Linear`, `Op::HeadMatmul`, and the
//! router GEMM of `Op::Route`. Each shape's descriptors and algorithm are chosen here, at
//! bind time, so a forward (or its graph capture) never runs the heuristic. A Linear with
//! FP8 weights is two calls: `quant_act_fp8` of its input into the scratch region, then the
//! block-scaled FP8 GEMM on the codes: cuBLASLt's by default, kernels/gemm_fp8.cu when the
//! kernel choice asks for it (`--gemm tma`).

use super::super::gemm::GemmShape;
use super::super::gpu::{Fp8LinearKernels, LinearKernels};
use super::gemm_fp8::{gemm_fp8, Fp8Gemm, GEMM_FP8};
use super::gemm_tma::{gemm_tma, GEMM_TMA};
use super::prepare::{kernel, Call, Prep};
use super::quant::{quant_act_launch, QuantActParams, QUANT_ACT_FP8};
use crate::plan::{DType, Op, View, WeightId};
use crate::quant::Fp8Layout;

/// The GEMM shape of `out = x . W^T (+ bias)` for a `[n, k]` weight, x read in place.
fn linear_shape(cx: &Prep, x: View, weight: WeightId, bias: Option<WeightId>, out: View) -> GemmShape {
    let w = cx.plan.weight(weight);
    GemmShape {
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
        fp8: false,
    }
}

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
    let shape = linear_shape(cx, x, weight, bias, out);
    if cx.gpu.kernel_choice().linear == LinearKernels::TmaGate {
        anyhow::ensure!(
            !shape.out_f32 && bias.is_none() && alpha == 1.0,
            "the TMA gate GEMM computes bf16 x . W^T only (this linear has an f32 output, a bias or a scale): use cuBLASLt"
        );
        let (p, cfg) =
            gemm_tma(cx.ptr(x), shape.ldx, cx.w(weight), shape.ldw, cx.ptr(out), shape.ldo, shape.m, shape.n, shape.k)?;
        return Ok(kernel(GEMM_TMA, cfg, p));
    }
    gemm_call(cx, shape, cx.ptr(x), weight, out, bias.map(|b| cx.w(b)), alpha)
}

/// An FP8 Linear: quantize `x` per token and 128-column group into the scratch region
/// (codes `[m, k]`, then the group scales), then the block-scaled GEMM reads them there.
fn fp8_linear_calls(
    cx: &Prep,
    x: View,
    weight: WeightId,
    bias: Option<WeightId>,
    alpha: f32,
    out: View,
) -> anyhow::Result<Vec<Call>> {
    let (m, k) = (cx.rows(x) as usize, x.cols);
    let codes = cx.scratch;
    let quant = QuantActParams {
        src: cx.ptr(x),
        src_ld: cx.ld(x),
        rows: m as i32,
        cols: k as i32,
        codes,
        scales: codes + Fp8Layout::new(1, m, k).scale_offset() as u64,
    };
    // The GEMM reads the dense codes `[m, k]`, not x in place.
    let shape = GemmShape { ldx: k, fp8: true, ..linear_shape(cx, x, weight, bias, out) };
    let ours = || -> anyhow::Result<Call> {
        anyhow::ensure!(
            !shape.out_f32,
            "the FP8 GEMM writes bf16, and this FP8 linear has an f32 output: keep its weight bf16"
        );
        let g = Fp8Gemm {
            x: codes,
            w: cx.w(weight),
            bias: bias.map(|b| cx.w(b)),
            out: cx.ptr(out),
            ldo: shape.ldo,
            m,
            n: shape.n,
            k,
            alpha,
        };
        let (p, cfg) = gemm_fp8(&g)?;
        Ok(kernel(GEMM_FP8, cfg, p))
    };
    let gemm = match cx.gpu.kernel_choice().fp8_linear {
        // cuBLASLt 13.1 has no block-scaled algorithm for some shapes (M = 1 among them, on
        // the H200): those take our kernel, with a note the first time a shape is refused.
        Fp8LinearKernels::CublasLt => {
            let known = cx.gpu.gemm.borrow().refuses(&shape);
            match gemm_call(cx, shape, codes, weight, out, bias.map(|b| cx.w(b)), alpha) {
                Ok(call) => call,
                Err(e) => {
                    if !known {
                        eprintln!("note: FP8 GEMM m {m} n {} k {k}: cuBLASLt has no block-scaled algorithm ({}); running kernels/gemm_fp8.cu instead", shape.n, e.root_cause());
                    }
                    ours()?
                }
            }
        }
        Fp8LinearKernels::Wgmma => ours()?,
    };
    Ok(vec![kernel(QUANT_ACT_FP8, quant_act_launch(m, k), quant), gemm])
}

/// Chooses the algorithm for `shape` now, then records the call (x at device address `x`).
fn gemm_call(
    cx: &Prep,
    shape: GemmShape,
    x: u64,
    weight: WeightId,
    out: View,
    bias: Option<u64>,
    alpha: f32,
) -> anyhow::Result<Call> {
    cx.gpu.gemm.borrow_mut().warm(&shape)?;
    Ok(Call::Gemm { shape, x, w: cx.w(weight), out: cx.ptr(out), bias, alpha })
}

/// `Op::Linear` and `Op::HeadMatmul` (a strided batch over heads).
pub fn prepare(cx: &mut Prep, op: &Op) -> anyhow::Result<Vec<Call>> {
    if let Op::Linear { x, weight, bias, alpha, out } = op {
        if cx.plan.weight(*weight).dtype == DType::F8E4M3 {
            return fp8_linear_calls(cx, *x, *weight, *bias, *alpha, *out);
        }
    }
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
                fp8: false,
            };
            gemm_call(cx, shape, cx.ptr(*x), *weight, *out, None, 1.0)?
        }
        _ => unreachable!("linear::prepare got {op:?}"),
    }])
}
