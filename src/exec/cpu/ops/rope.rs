//! Rotary position embedding: a cos/sin table and its in-place application.
//!
//! Pair `i` (of `rotary_dim / 2`) rotates by the angle `position · inv_freq[i]`. The two
//! styles differ only in which two dims form pair `i`:
//! * `RotateHalf` (NeoX, HF `rotate_half`): dims `(i, i + d/2)`;
//! * `Interleaved` (GPT-J, DeepSeek's `view_as_complex`): dims `(2i, 2i + 1)`.
//!
//! HF's DeepSeek-V3 `apply_rotary_pos_emb_interleave` first de-interleaves the head
//! (`[x0 x2 x4 .. | x1 x3 ..]`) and then rotates halves, so its output is a permutation of
//! ours; q and k get the same permutation, so `q · k` and the attention output agree.

use super::super::CpuRun;
use crate::config::model::{RopeConfig, RopeStyle};
use crate::plan::Op;

/// `cos` and `sin` for every (position, pair), times the YaRN attention factor.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeTable {
    rotary_dim: usize,
    max_positions: usize,
    /// `[max_positions, rotary_dim / 2]`, row-major.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// Angles are formed in f64 (an f32 `position · freq` loses about 1e-2 rad at position
    /// 1.6e5) and rounded once to f32.
    pub fn new(cfg: &RopeConfig, max_positions: usize) -> Self {
        assert!(cfg.rotary_dim.is_multiple_of(2), "RopeTable: rotary_dim {} must be even", cfg.rotary_dim);
        let inv_freqs = cfg.inv_freqs();
        let factor = cfg.attention_factor();
        let pairs = inv_freqs.len();
        let mut cos = Vec::with_capacity(max_positions * pairs);
        let mut sin = Vec::with_capacity(max_positions * pairs);
        for position in 0..max_positions {
            for &freq in &inv_freqs {
                let angle = position as f64 * freq;
                cos.push((angle.cos() * factor) as f32);
                sin.push((angle.sin() * factor) as f32);
            }
        }
        RopeTable { rotary_dim: cfg.rotary_dim, max_positions, cos, sin }
    }

    pub fn rotary_dim(&self) -> usize {
        self.rotary_dim
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// cos of the `rotary_dim / 2` pairs at `position`.
    pub fn cos(&self, position: usize) -> &[f32] {
        let pairs = self.rotary_dim / 2;
        &self.cos[position * pairs..(position + 1) * pairs]
    }

    /// sin of the `rotary_dim / 2` pairs at `position`.
    pub fn sin(&self, position: usize) -> &[f32] {
        let pairs = self.rotary_dim / 2;
        &self.sin[position * pairs..(position + 1) * pairs]
    }
}

/// Rotate, in place, the first `table.rotary_dim()` dims starting at each column of
/// `head_offsets` in each of `rows` rows (row `r` starts at `r · row_stride`, sits at
/// `positions[r]`). Dims past `rotary_dim` in a head (partial rotary) stay untouched.
pub fn apply_rope(
    x: &mut [f32],
    row_stride: usize,
    rows: usize,
    positions: &[usize],
    head_offsets: &[usize],
    table: &RopeTable,
    style: RopeStyle,
) {
    let dim = table.rotary_dim();
    let half = dim / 2;
    assert_eq!(positions.len(), rows, "apply_rope: {} positions for {rows} rows", positions.len());
    assert!(x.len() >= rows * row_stride, "apply_rope: x has {} values, fewer than rows*row_stride", x.len());
    for &h in head_offsets {
        assert!(
            h + dim <= row_stride,
            "apply_rope: head at column {h} + rotary_dim {dim} passes row_stride {row_stride}"
        );
    }
    for (r, &position) in positions.iter().enumerate() {
        assert!(
            position < table.max_positions(),
            "apply_rope: position {position} is outside the table of {} positions; build it larger",
            table.max_positions()
        );
        let (cos, sin) = (table.cos(position), table.sin(position));
        for &h in head_offsets {
            let head = &mut x[r * row_stride + h..r * row_stride + h + dim];
            for i in 0..half {
                let (a, b) = match style {
                    RopeStyle::RotateHalf => (i, i + half),
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                };
                let (xa, xb) = (head[a], head[b]);
                head[a] = xa * cos[i] - xb * sin[i];
                head[b] = xb * cos[i] + xa * sin[i];
            }
        }
    }
}

/// `Op::Rope` at the plan's positions.
pub fn run(r: &mut CpuRun, op: &Op) {
    let Op::Rope { x, heads, head_stride, rope_offset, rope } = op else { unreachable!("rope::run got {op:?}") };
    let plan = r.plan;
    let mut xs = r.read(*x);
    let max_pos = plan.positions.iter().max().copied().unwrap_or(0) + 1;
    let table = RopeTable::new(rope, max_pos);
    let offsets: Vec<usize> = (0..*heads).map(|h| h * head_stride + rope_offset).collect();
    apply_rope(&mut xs, x.cols, plan.rows(*x), &plan.positions, &offsets, &table, rope.style);
    r.write(*x, &xs);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{RopeScaling, YarnConfig};
    use crate::exec::cpu::ops::test_util::{assert_close, values};
    use proptest::prelude::*;

    fn cfg(rotary_dim: usize, style: RopeStyle) -> RopeConfig {
        RopeConfig { theta: 10_000.0, style, rotary_dim, scaling: RopeScaling::None }
    }

    /// Rotation written as complex multiplication `(re + i·im) · e^{i·p·f}` in f64, with the
    /// pair chosen by `pair_of`.
    fn complex_rotation(
        head: &[f32],
        position: usize,
        inv_freqs: &[f64],
        pair_of: impl Fn(usize) -> (usize, usize),
    ) -> Vec<f32> {
        let mut out = head.to_vec();
        for (i, &f) in inv_freqs.iter().enumerate() {
            let (a, b) = pair_of(i);
            let (re, im) = (head[a] as f64, head[b] as f64);
            let (c, s) = ((position as f64 * f).cos(), (position as f64 * f).sin());
            out[a] = (re * c - im * s) as f32;
            out[b] = (re * s + im * c) as f32;
        }
        out
    }

    #[test]
    fn table_hand_computed() {
        // d = 4, theta 10000: inv_freqs (1, 0.01).
        let table = RopeTable::new(&cfg(4, RopeStyle::RotateHalf), 3);
        assert_close(table.cos(2), &[2f32.cos(), 0.02f32.cos()], 1e-7);
        assert_close(table.sin(2), &[2f32.sin(), 0.02f32.sin()], 1e-7);
    }

    #[test]
    fn rotate_half_hand_computed() {
        // d = 2 has one pair with frequency 1; position 1 rotates (1, 0) by 1 rad.
        let table = RopeTable::new(&cfg(2, RopeStyle::RotateHalf), 2);
        let mut x = [1.0, 0.0];
        apply_rope(&mut x, 2, 1, &[1], &[0], &table, RopeStyle::RotateHalf);
        assert_close(&x, &[1f32.cos(), 1f32.sin()], 1e-7);
    }

    #[test]
    fn position_zero_is_identity() {
        let table = RopeTable::new(&cfg(8, RopeStyle::RotateHalf), 4);
        let orig = values(16, 3);
        for style in [RopeStyle::RotateHalf, RopeStyle::Interleaved] {
            let mut x = orig.clone();
            apply_rope(&mut x, 16, 1, &[0], &[0, 8], &table, style);
            assert_eq!(x, orig);
        }
    }

    #[test]
    fn styles_differ_and_each_matches_complex_rotation() {
        let rope = cfg(8, RopeStyle::RotateHalf);
        let table = RopeTable::new(&rope, 10);
        let inv_freqs = rope.inv_freqs();
        let orig = values(8, 5);
        let mut half = orig.clone();
        let mut inter = orig.clone();
        apply_rope(&mut half, 8, 1, &[7], &[0], &table, RopeStyle::RotateHalf);
        apply_rope(&mut inter, 8, 1, &[7], &[0], &table, RopeStyle::Interleaved);
        assert_close(&half, &complex_rotation(&orig, 7, &inv_freqs, |i| (i, i + 4)), 1e-6);
        assert_close(&inter, &complex_rotation(&orig, 7, &inv_freqs, |i| (2 * i, 2 * i + 1)), 1e-6);
        let max_diff = half.iter().zip(&inter).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(max_diff > 0.1, "styles agree: {max_diff}");
    }

    #[test]
    fn only_listed_heads_and_rotary_dims_change() {
        // Row of 3 heads of 6 dims, rotary_dim 4: rotate heads 0 and 2 only (MLA-like layout
        // with a leading non-rotary part would use offsets past 0 in the same way).
        let table = RopeTable::new(&cfg(4, RopeStyle::RotateHalf), 8);
        let orig = values(2 * 18, 9);
        let mut x = orig.clone();
        apply_rope(&mut x, 18, 2, &[3, 5], &[0, 12], &table, RopeStyle::Interleaved);
        for r in 0..2 {
            let row = |v: &[f32]| v[r * 18..(r + 1) * 18].to_vec();
            let (got, was) = (row(&x), row(&orig));
            assert_eq!(got[4..12], was[4..12], "row {r}: unrotated dims changed");
            assert_eq!(got[16..18], was[16..18], "row {r}: dims past rotary_dim changed");
            assert_ne!(got[0..4], was[0..4]);
            assert_ne!(got[12..16], was[12..16]);
        }
        // Each row uses its own position.
        let mut single = orig[18..36].to_vec();
        apply_rope(&mut single, 18, 1, &[5], &[0, 12], &table, RopeStyle::Interleaved);
        assert_eq!(single, x[18..36]);
    }

    #[test]
    fn yarn_attention_factor_scales_cos_and_sin() {
        let yarn = YarnConfig {
            factor: 40.0,
            original_max_position_embeddings: 4096,
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention_factor: 1.5,
            truncate: true,
        };
        let rope = RopeConfig { scaling: RopeScaling::Yarn(yarn), ..cfg(64, RopeStyle::Interleaved) };
        let table = RopeTable::new(&rope, 100);
        let freqs = rope.inv_freqs();
        for i in [0, 20, 31] {
            let angle = 99.0 * freqs[i];
            assert_close(
                &[table.cos(99)[i], table.sin(99)[i]],
                &[(1.5 * angle.cos()) as f32, (1.5 * angle.sin()) as f32],
                1e-6,
            );
        }
    }

    #[test]
    #[should_panic(expected = "outside the table")]
    fn position_past_table_panics() {
        let table = RopeTable::new(&cfg(4, RopeStyle::RotateHalf), 2);
        apply_rope(&mut [0.0; 4], 4, 1, &[2], &[0], &table, RopeStyle::RotateHalf);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn rope_preserves_head_norm(position in 0usize..4096, interleaved in any::<bool>(), seed in any::<u64>()) {
            let table = RopeTable::new(&cfg(16, RopeStyle::RotateHalf), 4096);
            let style = if interleaved { RopeStyle::Interleaved } else { RopeStyle::RotateHalf };
            let orig = values(16, seed);
            let mut x = orig.clone();
            apply_rope(&mut x, 16, 1, &[position], &[0], &table, style);
            let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
            prop_assert!((norm(&x) - norm(&orig)).abs() < 1e-5 * (1.0 + norm(&orig)));
        }
    }
}
