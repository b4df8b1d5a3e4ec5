//! Row-wise normalisations. Statistics accumulate in f64; the scale by the weight happens in
//! the same precision as the normalisation (Grok's JAX order; HF rounds to the activation
//! dtype in between, a difference that only matters for tolerances).

use super::super::CpuRun;
use crate::config::model::NormKind;
use crate::plan::Op;

fn check_rows(x: &[f32], cols: usize, param: &[f32], op: &str, what: &str) {
    assert!(cols > 0, "{op}: cols must be positive");
    assert_eq!(x.len() % cols, 0, "{op}: x has {} values, not a multiple of cols = {cols}", x.len());
    assert_eq!(param.len(), cols, "{op}: {what} has {} values, expected cols = {cols}", param.len());
}

/// `x / sqrt(mean(x²) + eps) · weight`, per row of `cols` values.
pub fn rms_norm(x: &[f32], cols: usize, weight: &[f32], eps: f32) -> Vec<f32> {
    check_rows(x, cols, weight, "rms_norm", "weight");
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(cols) {
        let mean_square = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / cols as f64;
        let inv_rms = 1.0 / (mean_square + eps as f64).sqrt();
        out.extend(row.iter().zip(weight).map(|(&v, &w)| (v as f64 * inv_rms * w as f64) as f32));
    }
    out
}

/// `(x − mean) / sqrt(var + eps) · weight + bias`, per row, with the biased variance
/// (divide by `cols`, as `torch.nn.LayerNorm` does).
pub fn layer_norm(x: &[f32], cols: usize, weight: &[f32], bias: &[f32], eps: f32) -> Vec<f32> {
    check_rows(x, cols, weight, "layer_norm", "weight");
    check_rows(x, cols, bias, "layer_norm", "bias");
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(cols) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / cols as f64;
        let inv_std = 1.0 / (var + eps as f64).sqrt();
        out.extend(
            row.iter()
                .zip(weight.iter().zip(bias))
                .map(|(&v, (&w, &b))| ((v as f64 - mean) * inv_std * w as f64 + b as f64) as f32),
        );
    }
    out
}

/// `Op::Norm` (residual add in place first when `delta` is set) and `Op::HeadNorm`.
pub fn run(r: &mut CpuRun, op: &Op) {
    match op {
        Op::Norm { x, delta, weight, bias, kind, eps, out } => {
            let mut xs = r.read(*x);
            if let Some(d) = delta {
                xs.iter_mut().zip(r.read(*d)).for_each(|(a, b)| *a += b);
                r.write(*x, &xs);
            }
            let y = match kind {
                NormKind::RmsNorm => rms_norm(&xs, x.cols, r.w(*weight), *eps),
                NormKind::LayerNorm => {
                    let zeros = vec![0.0; x.cols];
                    let b = bias.map(|b| r.w(b)).unwrap_or(&zeros);
                    layer_norm(&xs, x.cols, r.w(*weight), b, *eps)
                }
            };
            r.write(*out, &y);
        }
        Op::HeadNorm { x, heads, head_dim, weight, eps } => {
            let mut xs = r.read(*x);
            for row in xs.chunks_mut(x.cols) {
                for h in 0..*heads {
                    let seg = &mut row[h * head_dim..(h + 1) * head_dim];
                    let y = rms_norm(seg, *head_dim, r.w(*weight), *eps);
                    seg.copy_from_slice(&y);
                }
            }
            r.write(*x, &xs);
        }
        _ => unreachable!("norm::run got {op:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::cpu::ops::test_util::{assert_close, values};

    #[test]
    fn rms_norm_hand_computed() {
        // Row (3, 4): mean square 12.5, rms sqrt(12.5) = 3.5355339.
        let out = rms_norm(&[3.0, 4.0], 2, &[1.0, 2.0], 0.0);
        assert_close(&out, &[0.848_528_1, 2.262_741_7], 1e-6);
    }

    #[test]
    fn rms_norm_is_per_row_and_uses_eps() {
        // A zero row stays zero (eps keeps it finite); the other row normalises to rms 1.
        let x = [0.0, 0.0, 0.0, 2.0, -2.0, 2.0];
        let out = rms_norm(&x, 3, &[1.0; 3], 1e-6);
        assert_eq!(&out[..3], &[0.0; 3]);
        assert_close(&out[3..], &[1.0, -1.0, 1.0], 1e-6);
        // eps enters under the root: mean square 1 with eps 3 halves the output.
        assert_close(&rms_norm(&[1.0, -1.0], 2, &[1.0; 2], 3.0), &[0.5, -0.5], 1e-6);
    }

    #[test]
    fn rms_norm_output_has_unit_rms() {
        let x = values(4 * 64, 7);
        let out = rms_norm(&x, 64, &[1.0; 64], 1e-6);
        for row in out.chunks(64) {
            let ms = row.iter().map(|v| v * v).sum::<f32>() / 64.0;
            assert!((ms - 1.0).abs() < 1e-4, "mean square {ms}");
        }
    }

    #[test]
    fn layer_norm_hand_computed() {
        // Row (1, 2, 3): mean 2, var 2/3, std 0.8164966.
        let out = layer_norm(&[1.0, 2.0, 3.0], 3, &[1.0, 1.0, 2.0], &[0.0, 1.0, -1.0], 0.0);
        assert_close(&out, &[-1.224_744_9, 1.0, 1.449_489_7], 1e-6);
    }

    #[test]
    fn layer_norm_rows_have_zero_mean_unit_variance() {
        let x = values(3 * 32, 11);
        let out = layer_norm(&x, 32, &[1.0; 32], &[0.0; 32], 1e-9);
        for row in out.chunks(32) {
            let mean = row.iter().sum::<f32>() / 32.0;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 32.0;
            assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4, "mean {mean} var {var}");
        }
    }

    #[test]
    #[should_panic(expected = "rms_norm: weight has")]
    fn weight_length_is_checked() {
        rms_norm(&[1.0, 2.0], 2, &[1.0], 1e-6);
    }
}
