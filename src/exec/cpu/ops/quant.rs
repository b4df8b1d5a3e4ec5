//! The FP8 reference: per-token-group activation quantization followed by the block-scaled
//! matmul DeepGEMM and cuBLASLt compute, in f32, so an FP8 GPU forward is checked against
//! the same rounding of its inputs rather than against bf16 math.
//!
//! `out[m, n] = sum_g sx[m, g] * (sum_{k in g} xq[m, k] * w[n, k])`: per 128-wide K group
//! the e4m3 activation codes meet the weights (dequantized, `code * block scale`, exact in
//! f32), and the partial sum is promoted with the activation's group scale, the way the
//! tensor-core kernels promote their FP8 accumulators once per 128-deep K block.

use super::matmul_nt;
use crate::quant::{e4m3_to_f32, quantize_groups, BLOCK};

/// `x[m, k] . w[n, k]^T` with `x` quantized per row and 128-column group (`w` already holds
/// the values of its FP8 codes).
pub fn block_scaled_matmul_nt(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
    assert_eq!(w.len(), n * k, "block-scaled gemm: w has {} values, expected n*k = {n}*{k}", w.len());
    let q = quantize_groups(x, m, k);
    let groups = q.groups();
    let mut out = vec![0f32; m * n];
    for g in 0..groups {
        let (c0, c1) = (g * BLOCK, ((g + 1) * BLOCK).min(k));
        let width = c1 - c0;
        let xg: Vec<f32> =
            (0..m).flat_map(|r| q.codes[r * k + c0..r * k + c1].iter().map(|&c| e4m3_to_f32(c))).collect();
        let wg: Vec<f32> = (0..n).flat_map(|r| w[r * k + c0..r * k + c1].iter().copied()).collect();
        let partial = matmul_nt(&xg, m, width, &wg, n);
        for r in 0..m {
            let sx = q.scales[r * groups + g];
            out[r * n..(r + 1) * n].iter_mut().zip(&partial[r * n..(r + 1) * n]).for_each(|(o, p)| *o += sx * p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::cpu::ops::test_util::{assert_close, values};
    use crate::quant::{dequantize_blocks, quantize_blocks};

    /// The oracle: dequantize both operands, then one plain f32 matmul.
    fn dequantized_matmul(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
        let xd = quantize_groups(x, m, k).dequantized();
        matmul_nt(&xd, m, k, w, n)
    }

    #[test]
    fn matches_dequantize_then_matmul() {
        // K = 300: two full groups and a partial one; N crosses a weight block edge.
        for (m, k, n) in [(5, 300, 130), (1, 128, 3), (17, 256, 256)] {
            let x = values(m * k, 11);
            let (codes, scales) =
                quantize_blocks(&values(n * k, 12).iter().map(|v| v * 0.02).collect::<Vec<_>>(), 1, n, k);
            let w = dequantize_blocks(&codes, &scales, 1, n, k);
            let got = block_scaled_matmul_nt(&x, m, k, &w, n);
            assert_close(&got, &dequantized_matmul(&x, m, k, &w, n), 1e-5);
            // And it is an FP8 product, not the bf16 one: the inputs' rounding shows.
            let exact = matmul_nt(&x, m, k, &w, n);
            let diff: f32 = got.iter().zip(&exact).map(|(a, b)| (a - b).abs()).sum();
            assert!(diff > 0.0, "activation quantization had no effect");
        }
    }

    #[test]
    fn group_scales_apply_per_row_and_group() {
        // Row 0: group 0 all 448, group 1 all 1 -> scales 1 and 1/448, codes exact.
        let mut x = vec![448.0; 128];
        x.extend(vec![1.0; 128]);
        let w = vec![1.0; 256];
        let out = block_scaled_matmul_nt(&x, 1, 256, &w, 1);
        let want = 448.0 * 128.0 + 128.0;
        assert!((out[0] - want).abs() < 1e-3 * want, "{out:?}");
    }
}
