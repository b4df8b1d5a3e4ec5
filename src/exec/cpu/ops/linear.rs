//! Matrix products through `matrixmultiply::sgemm` (f32 inputs, f32 accumulation).
//!
//! Weights follow the PyTorch `nn.Linear` layout `[out, in]`, so a projection is
//! `x · wᵀ` ([`matmul_nt`], [`linear`]); [`matmul_nn`] serves products whose right operand
//! is already `[k, n]` (attention probabilities times values, MLA weight absorption).

use super::super::CpuRun;
use super::quant::block_scaled_matmul_nt;
use crate::plan::{DType, Op};

/// `c[m, n] = alpha · a[m, k] · b` where `b` is described by its row and column strides.
fn sgemm(a: &[f32], m: usize, k: usize, b: &[f32], n: usize, b_strides: (isize, isize), alpha: f32) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    if m == 0 || n == 0 || k == 0 {
        return c;
    }
    // SAFETY: the callers checked `a.len() == m*k` and `b.len() == k*n`; with the given
    // strides every index sgemm touches lies inside those slices, and `c` holds m*n values.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            b_strides.0,
            b_strides.1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    c
}

fn check_operands(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) {
    assert_eq!(x.len(), m * k, "gemm: x has {} values, expected m*k = {m}*{k}", x.len());
    assert_eq!(w.len(), k * n, "gemm: w has {} values, expected k*n = {k}*{n}", w.len());
}

/// `[m, k] · [n, k]ᵀ -> [m, n]`.
pub fn matmul_nt(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
    check_operands(x, m, k, w, n);
    // w[n, k] read as its transpose [k, n]: step k along a column, 1 along a row.
    sgemm(x, m, k, w, n, (1, k as isize), 1.0)
}

/// `[m, k] · [k, n] -> [m, n]`.
pub fn matmul_nn(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
    check_operands(x, m, k, w, n);
    sgemm(x, m, k, w, n, (n as isize, 1), 1.0)
}

/// `[m, k] · [n, k]ᵀ` for a weight stored as `dtype`: FP8 weights quantize `x` per token
/// group first and promote per K block ([`block_scaled_matmul_nt`]), as the GPU does.
pub fn matmul_nt_as(dtype: DType, x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
    match dtype {
        DType::F8E4M3 => block_scaled_matmul_nt(x, m, k, w, n),
        _ => matmul_nt(x, m, k, w, n),
    }
}

/// `alpha · x[m, k] · w[n, k]ᵀ + bias[n]` (the bias is not scaled by `alpha`).
pub fn linear(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, bias: Option<&[f32]>, alpha: f32) -> Vec<f32> {
    linear_as(DType::BF16, x, m, k, w, n, bias, alpha)
}

/// [`linear`] for a weight stored as `dtype` (see [`matmul_nt_as`]).
#[allow(clippy::too_many_arguments)]
fn linear_as(
    dtype: DType,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    alpha: f32,
) -> Vec<f32> {
    check_operands(x, m, k, w, n);
    let mut out = if dtype == DType::F8E4M3 {
        block_scaled_matmul_nt(x, m, k, w, n).into_iter().map(|v| alpha * v).collect()
    } else {
        sgemm(x, m, k, w, n, (1, k as isize), alpha)
    };
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "linear: bias has {} values, expected n = {n}", bias.len());
        for row in out.chunks_exact_mut(n) {
            row.iter_mut().zip(bias).for_each(|(o, b)| *o += b);
        }
    }
    out
}

/// `Op::Linear` and `Op::HeadMatmul`.
pub fn run(r: &mut CpuRun, op: &Op) {
    let plan = r.plan;
    match op {
        Op::Linear { x, weight, bias, alpha, out } => {
            let w = plan.weight(*weight);
            let (xs, m) = (r.read(*x), plan.rows(*x));
            let y = linear_as(w.dtype, &xs, m, x.cols, r.w(*weight), w.rows, bias.map(|b| r.w(b)), *alpha);
            // The weight may be wider than the output window (padded vocab shards).
            if out.cols == w.rows {
                r.write(*out, &y);
            } else {
                let cut: Vec<f32> = y.chunks(w.rows).flat_map(|row| row[..out.cols].iter().copied()).collect();
                r.write(*out, &cut);
            }
        }
        Op::HeadMatmul { x, x_stride, weight, heads, transpose, out } => {
            let w = plan.weight(*weight);
            let (a, b) = (w.rows, w.cols);
            let (in_w, out_w) = if *transpose { (b, a) } else { (a, b) };
            let xs = r.read(*x);
            let t_all = plan.rows(*x);
            let mut y = vec![0f32; t_all * heads * out_w];
            for h in 0..*heads {
                let xh: Vec<f32> =
                    (0..t_all).flat_map(|t| xs[t * x.cols + h * x_stride..][..in_w].iter().copied()).collect();
                let wh = &r.w(*weight)[h * a * b..(h + 1) * a * b];
                let yh = if *transpose { matmul_nt(&xh, t_all, b, wh, a) } else { matmul_nn(&xh, t_all, a, wh, b) };
                for t in 0..t_all {
                    y[(t * heads + h) * out_w..][..out_w].copy_from_slice(&yh[t * out_w..(t + 1) * out_w]);
                }
            }
            r.write(*out, &y);
        }
        _ => unreachable!("linear::run got {op:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::cpu::ops::test_util::{assert_close, values};
    use proptest::prelude::*;

    /// Textbook triple loop in f64, the oracle for the oracle.
    fn naive_nt(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|p| x[i * k + p] as f64 * w[j * k + p] as f64).sum();
                out[i * n + j] = dot as f32;
            }
        }
        out
    }

    fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let mut t = vec![0.0; w.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = w[r * cols + c];
            }
        }
        t
    }

    #[test]
    fn nt_hand_computed() {
        // x = [[1,2],[3,4]], w = [[1,0],[0,1],[1,1]] -> x·wᵀ = [[1,2,3],[3,4,7]]
        let x = [1.0, 2.0, 3.0, 4.0];
        let w = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        assert_eq!(matmul_nt(&x, 2, 2, &w, 3), vec![1.0, 2.0, 3.0, 3.0, 4.0, 7.0]);
    }

    #[test]
    fn nn_hand_computed() {
        // x = [[1,2]], w = [[1,2,3],[4,5,6]] -> [9, 12, 15]
        let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(matmul_nn(&[1.0, 2.0], 1, 2, &w, 3), vec![9.0, 12.0, 15.0]);
    }

    #[test]
    fn linear_scales_product_but_not_bias() {
        let x = [1.0, 2.0];
        let w = [3.0, 4.0, 1.0, -1.0]; // rows: (3,4), (1,-1) -> x·wᵀ = [11, -1]
        let out = linear(&x, 1, 2, &w, 2, Some(&[0.5, 1.0]), 2.0);
        assert_eq!(out, vec![22.5, -1.0]);
        assert_eq!(linear(&x, 1, 2, &w, 2, None, 1.0), vec![11.0, -1.0]);
    }

    #[test]
    fn empty_inner_dimension_gives_zeros() {
        assert_eq!(matmul_nt(&[], 2, 0, &[], 3), vec![0.0; 6]);
    }

    #[test]
    #[should_panic(expected = "gemm: w has")]
    fn wrong_weight_length_panics() {
        matmul_nt(&[1.0, 2.0], 1, 2, &[1.0, 2.0, 3.0], 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Shapes that are not multiples of the sgemm micro-kernel tiles exercise its edges.
        #[test]
        fn nt_and_nn_match_naive(m in 1usize..40, k in 1usize..70, n in 1usize..40, seed in any::<u64>()) {
            let x = values(m * k, seed);
            let w = values(n * k, seed ^ 0xABCD);
            let want = naive_nt(&x, m, k, &w, n);
            assert_close(&matmul_nt(&x, m, k, &w, n), &want, 1e-5);
            assert_close(&matmul_nn(&x, m, k, &transpose(&w, n, k), n), &want, 1e-5);
        }
    }
}
