//! Block quantization on the host: 1x128 activation groups and 128x128 weight blocks.
//! Partial blocks at a tensor's edge are blocks of what is there.

use super::{block_scale, e4m3_from_f32, e4m3_to_f32, BLOCK};

/// An activation `[rows, cols]` quantized per row and 128-column group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupQuant {
    pub rows: usize,
    pub cols: usize,
    /// e4m3 codes, row-major `[rows, cols]`.
    pub codes: Vec<u8>,
    /// `[rows, groups]`, row-major (the device keeps them transposed, see `layout`).
    pub scales: Vec<f32>,
}

impl GroupQuant {
    pub fn groups(&self) -> usize {
        self.cols.div_ceil(BLOCK)
    }
    /// The values the codes stand for: `code * scale`.
    pub fn dequantized(&self) -> Vec<f32> {
        let g = self.groups();
        (0..self.rows * self.cols)
            .map(|i| e4m3_to_f32(self.codes[i]) * self.scales[(i / self.cols) * g + (i % self.cols) / BLOCK])
            .collect()
    }
}

/// Per-token-group quantization (SGLang's `per_token_group_quant_fp8`, group 128):
/// `scale = max(amax, eps) / 448`, `code = e4m3(x / scale)`.
pub fn quantize_groups(x: &[f32], rows: usize, cols: usize) -> GroupQuant {
    assert_eq!(x.len(), rows * cols, "quantize_groups: {} values for [{rows}, {cols}]", x.len());
    let groups = cols.div_ceil(BLOCK);
    let mut codes = vec![0u8; rows * cols];
    let mut scales = vec![0f32; rows * groups];
    for r in 0..rows {
        for g in 0..groups {
            let (c0, c1) = (g * BLOCK, ((g + 1) * BLOCK).min(cols));
            let part = &x[r * cols + c0..r * cols + c1];
            let scale = block_scale(part.iter().fold(0f32, |m, v| m.max(v.abs())));
            scales[r * groups + g] = scale;
            for (dst, v) in codes[r * cols + c0..r * cols + c1].iter_mut().zip(part) {
                *dst = e4m3_from_f32(v / scale);
            }
        }
    }
    GroupQuant { rows, cols, codes, scales }
}

/// 128x128 block quantization of `[count, rows, cols]` values: the codes (same layout)
/// and the scales `[count, row_blocks, col_blocks]` (compact; HF's `weight_scale_inv`).
pub fn quantize_blocks(values: &[f32], count: usize, rows: usize, cols: usize) -> (Vec<u8>, Vec<f32>) {
    assert_eq!(values.len(), count * rows * cols, "quantize_blocks: wrong value count");
    let (rb, cb) = (rows.div_ceil(BLOCK), cols.div_ceil(BLOCK));
    let mut codes = vec![0u8; values.len()];
    let mut scales = vec![0f32; count * rb * cb];
    for i in 0..count {
        let m = &values[i * rows * cols..(i + 1) * rows * cols];
        for br in 0..rb {
            for bc in 0..cb {
                let (r0, r1) = (br * BLOCK, ((br + 1) * BLOCK).min(rows));
                let (c0, c1) = (bc * BLOCK, ((bc + 1) * BLOCK).min(cols));
                let amax = (r0..r1).flat_map(|r| &m[r * cols + c0..r * cols + c1]).fold(0f32, |a, v| a.max(v.abs()));
                let scale = block_scale(amax);
                scales[(i * rb + br) * cb + bc] = scale;
                for r in r0..r1 {
                    for c in c0..c1 {
                        codes[i * rows * cols + r * cols + c] = e4m3_from_f32(m[r * cols + c] / scale);
                    }
                }
            }
        }
    }
    (codes, scales)
}

/// The values of block-quantized codes (scales as [`quantize_blocks`] returns them).
pub fn dequantize_blocks(codes: &[u8], scales: &[f32], count: usize, rows: usize, cols: usize) -> Vec<f32> {
    let (rb, cb) = (rows.div_ceil(BLOCK), cols.div_ceil(BLOCK));
    assert_eq!(codes.len(), count * rows * cols, "dequantize_blocks: wrong code count");
    assert_eq!(scales.len(), count * rb * cb, "dequantize_blocks: wrong scale count");
    (0..codes.len())
        .map(|idx| {
            let (i, r, c) = (idx / (rows * cols), (idx / cols) % rows, idx % cols);
            e4m3_to_f32(codes[idx]) * scales[(i * rb + r / BLOCK) * cb + c / BLOCK]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{e4m3_round, E4M3_MAX};

    fn wavy(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 * 0.37).sin() * (1.0 + (i % 7) as f32)) * 0.01).collect()
    }

    #[test]
    fn group_amax_maps_to_448_and_round_trip_error_is_within_half_a_step() {
        let (rows, cols) = (3, 300); // groups of 128, 128 and a partial 44
        let x = wavy(rows * cols);
        let q = quantize_groups(&x, rows, cols);
        assert_eq!(q.scales.len(), rows * 3);
        for r in 0..rows {
            for g in 0..3 {
                let (c0, c1) = (g * 128, ((g + 1) * 128).min(cols));
                let part = &x[r * cols + c0..r * cols + c1];
                let amax = part.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert_eq!(q.scales[r * 3 + g], amax / E4M3_MAX);
                let codes = &q.codes[r * cols + c0..r * cols + c1];
                assert!(codes.iter().any(|&c| c & 0x7F == 0x7E), "the amax element is the largest code");
            }
        }
        let back = q.dequantized();
        for (i, (a, b)) in x.iter().zip(&back).enumerate() {
            let scale = q.scales[(i / cols) * 3 + (i % cols) / 128];
            // e4m3 keeps 3 mantissa bits: relative error <= 2^-4, absolute floor at the
            // subnormal step 2^-9 (times the scale).
            assert!((a - b).abs() <= a.abs() / 16.0 + scale * 2f32.powi(-10), "{i}: {a} vs {b}");
            assert_eq!(*b, e4m3_round(a / scale) * scale);
        }
    }

    #[test]
    fn zero_group_gets_zero_codes_and_a_finite_scale() {
        let q = quantize_groups(&[0.0; 128], 1, 128);
        assert!(q.codes.iter().all(|&c| c == 0));
        assert!(q.scales[0] > 0.0 && q.scales[0].is_finite());
        assert_eq!(q.dequantized(), vec![0.0; 128]);
    }

    #[test]
    fn blocks_hold_their_own_scale_and_round_trip() {
        let (count, rows, cols) = (2, 200, 130);
        let mut w = wavy(count * rows * cols);
        w[5] = 3.0; // one large value only moves block (0, 0, 0)'s scale
        let (codes, scales) = quantize_blocks(&w, count, rows, cols);
        assert_eq!(scales.len(), 2 * 2 * 2);
        assert_eq!(scales[0], 3.0 / 448.0);
        assert!(scales[1] < 0.001 && scales[4] < 0.001);
        let back = dequantize_blocks(&codes, &scales, count, rows, cols);
        for (i, (a, b)) in w.iter().zip(&back).enumerate() {
            assert!((a - b).abs() <= a.abs() / 16.0 + 3.0 / 448.0 * 2f32.powi(-10), "{i}: {a} vs {b}");
        }
        // Quantizing dequantized values again gives the same codes; a scale may move by
        // an ulp (448 * s / 448 rounds twice).
        let (codes2, scales2) = quantize_blocks(&back, count, rows, cols);
        assert_eq!(codes2, codes);
        for (a, b) in scales2.iter().zip(&scales) {
            assert!((a - b).abs() <= b * 2f32.powi(-23), "{a} vs {b}");
        }
    }
}
