//! `kernels/rope.cu`: rotary position embedding on column windows of q/k rows, driven by a
//! host-computed cos/sin table so every executor rotates with identical values.

use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::misc::grid_stride_launch;
use super::prepare::{kernel, Call, Prep};
use super::ptr::{Bf16Ptr, ConstF32Ptr, ConstI32Ptr};
use crate::config::model::{RopeConfig, RopeStyle};
use crate::plan::Op;

/// In place on `rows` rows: head h's rotary part starts at column
/// `col_offset + h*head_stride + rope_offset` and spans `rotary_dim` values.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct RopeParams {
    /// Row stride `ld`.
    pub x: Bf16Ptr,
    pub ld: i32,
    pub rows: i32,
    pub col_offset: i32,
    pub n_heads: i32,
    pub head_stride: i32,
    pub rope_offset: i32,
    pub rotary_dim: i32,
    /// `[rows]`.
    pub positions: ConstI32Ptr,
    /// `[max_position, rotary_dim]` from [`cos_sin_table`].
    pub cos_sin: ConstF32Ptr,
    /// A [`RopeStyleCode`] ([`style_code`]).
    pub interleaved: i32,
}
unsafe impl DeviceRepr for RopeParams {}
pub const ROPE: (&str, &str) = ("rope", "rope");

/// The kernel's `interleaved` values: which elements form a rotated pair.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyleCode {
    /// `(x_i, x_{i + d/2})` (NeoX).
    RotateHalf = 0,
    /// `(x_{2i}, x_{2i+1})` (GPT-J).
    Interleaved = 1,
}

/// The kernel's `interleaved` flag for a rotary style.
pub fn style_code(style: RopeStyle) -> i32 {
    let code = match style {
        RopeStyle::RotateHalf => RopeStyleCode::RotateHalf,
        RopeStyle::Interleaved => RopeStyleCode::Interleaved,
    };
    code as i32
}

/// One thread per group of 4 pairs (single pairs when rotary_dim/2 is not a multiple of 4).
pub fn rope_launch(rows: usize, n_heads: usize, rotary_dim: usize) -> LaunchConfig {
    let half = rotary_dim / 2;
    let groups = if half.is_multiple_of(4) { half / 4 } else { half };
    grid_stride_launch((rows as u64).saturating_mul(n_heads as u64).saturating_mul(groups as u64))
}

/// The table the kernel reads: row `pos` holds `cos(pos * f_i) * attention_factor` for
/// `i < rotary_dim/2`, then the matching sines; angles in f64, rounded once to f32.
pub fn cos_sin_table(rope: &RopeConfig, max_position: usize) -> Vec<f32> {
    let inv_freqs = rope.inv_freqs();
    let factor = rope.attention_factor();
    let half = inv_freqs.len();
    let mut table = vec![0f32; max_position * 2 * half];
    for (pos, row) in table.chunks_exact_mut(2 * half.max(1)).enumerate().take(max_position) {
        for (i, f) in inv_freqs.iter().enumerate() {
            let angle = pos as f64 * f;
            row[i] = (angle.cos() * factor) as f32;
            row[half + i] = (angle.sin() * factor) as f32;
        }
    }
    table
}

/// `Op::Rope`: the cos/sin table is uploaded once per distinct rope config of the plan,
/// as long as the plan's largest position needs.
pub fn prepare(cx: &mut Prep, op: &Op) -> anyhow::Result<Vec<Call>> {
    let Op::Rope { x, heads, head_stride, rope_offset, rope } = op else { unreachable!("rope::prepare got {op:?}") };
    let max_pos = cx.plan.positions.iter().max().copied().unwrap_or(0) + 1;
    let table = cx.shared_table(format!("{rope:?}"), || cos_sin_table(rope, max_pos))?;
    let p = RopeParams {
        x: cx.base(*x),
        ld: cx.ld(*x),
        rows: cx.rows(*x),
        col_offset: x.col as i32,
        n_heads: *heads as i32,
        head_stride: *head_stride as i32,
        rope_offset: *rope_offset as i32,
        rotary_dim: rope.rotary_dim as i32,
        positions: cx.positions,
        cos_sin: table,
        interleaved: style_code(rope.style),
    };
    Ok(vec![kernel(ROPE, rope_launch(cx.rows(*x) as usize, *heads, rope.rotary_dim), p)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::RopeScaling;

    #[test]
    fn table_rows_hold_cos_then_sin() {
        let rope =
            RopeConfig { theta: 10000.0, style: RopeStyle::RotateHalf, rotary_dim: 8, scaling: RopeScaling::None };
        let t = cos_sin_table(&rope, 3);
        assert_eq!(t.len(), 3 * 8);
        assert_eq!(&t[0..8], &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(t[8], 1f64.cos() as f32);
        assert_eq!(t[12], 1f64.sin() as f32);
        assert_eq!(t[16 + 1], (2.0 * 10000f64.powf(-0.25)).cos() as f32);
    }

    #[test]
    fn launch_counts_groups_of_four_pairs() {
        assert_eq!(rope_launch(8192, 128, 64).grid_dim.0, (8192 * 128 * 8 / 256) as u32);
        assert_eq!(rope_launch(3, 3, 6).grid_dim.0, 1);
    }
}
