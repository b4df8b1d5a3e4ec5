//! `kernels/act.cu`: gated activation, bias + activation, and (gated) accumulation.

use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::misc::chunked_launch;
use super::prepare::{kernel, Call, Prep};
use crate::config::model::Activation;
use crate::plan::Op;

/// The kernels' `act` value for "no activation" (bias_act only).
pub const ACT_NONE: i32 = -1;

/// The kernels' `act` code for an activation (matches `ActCode` in kern_util.cuh).
pub fn activation_code(act: Activation) -> i32 {
    match act {
        Activation::Silu => 0,
        Activation::GeluTanh => 1,
        Activation::GeluErf => 2,
    }
}

/// `out[r, c] = bf16(act(in[r, c]) * in[r, inter + c])`, `c < inter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ActMulParams {
    /// bf16 `[rows, 2*inter]` (gate | up), row stride `in_ld`.
    pub r#in: u64,
    pub in_ld: i32,
    pub _pad0: i32,
    /// bf16 `[rows, inter]`, row stride `out_ld`.
    pub out: u64,
    pub out_ld: i32,
    pub rows: i32,
    pub inter: i32,
    /// [`activation_code`].
    pub act: i32,
}
unsafe impl DeviceRepr for ActMulParams {}
pub const ACT_MUL: (&str, &str) = ("act", "act_mul");
pub fn act_mul_launch(rows: usize, inter: usize) -> LaunchConfig {
    chunked_launch(rows, inter)
}

/// In place `x[r, c] = bf16(act(x[r, c] + bias[c]))`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct BiasActParams {
    pub x: u64,
    pub ld: i32,
    pub rows: i32,
    pub cols: i32,
    pub _pad0: i32,
    /// bf16 `[cols]`, nullable (0).
    pub bias: u64,
    /// [`activation_code`] or [`ACT_NONE`].
    pub act: i32,
    pub _pad1: i32,
}
unsafe impl DeviceRepr for BiasActParams {}
pub const BIAS_ACT: (&str, &str) = ("act", "bias_act");
pub fn bias_act_launch(rows: usize, cols: usize) -> LaunchConfig {
    chunked_launch(rows, cols)
}

/// `acc[r, c] = bf16(acc[r, c] + g_r * x[r, c])`, `g_r = sigmoid(gate[r * gate_ld])` or 1.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GatedAddParams {
    pub acc: u64,
    pub acc_ld: i32,
    pub _pad0: i32,
    pub x: u64,
    pub x_ld: i32,
    pub _pad1: i32,
    /// bf16, one logit per row at `gate[r * gate_ld]`; nullable (0): plain sum.
    pub gate: u64,
    pub gate_ld: i32,
    pub rows: i32,
    pub cols: i32,
    pub _pad2: i32,
}
unsafe impl DeviceRepr for GatedAddParams {}
pub const GATED_ADD: (&str, &str) = ("act", "gated_add");
pub fn gated_add_launch(rows: usize, cols: usize) -> LaunchConfig {
    chunked_launch(rows, cols)
}

/// `act_mul` over `rows` rows of `[gate | up]` (`2 * inter` wide) into `inter` columns; the
/// MoE pipeline runs the same launch on its sorted rows.
pub fn act_mul_call(input: u64, in_ld: i32, out: u64, out_ld: i32, rows: usize, inter: usize, act: Activation) -> Call {
    let p = ActMulParams {
        r#in: input,
        in_ld,
        out,
        out_ld,
        rows: rows as i32,
        inter: inter as i32,
        act: activation_code(act),
        ..Default::default()
    };
    kernel(ACT_MUL, act_mul_launch(rows, inter), p)
}

/// `Op::BiasAct`, `Op::ActMul` and `Op::Add`.
pub fn prepare(cx: &mut Prep, op: &Op) -> anyhow::Result<Vec<Call>> {
    Ok(vec![match op {
        Op::BiasAct { x, bias, act } => {
            let p = BiasActParams {
                x: cx.ptr(*x),
                ld: cx.ld(*x),
                rows: cx.rows(*x),
                cols: x.cols as i32,
                bias: cx.w_or_null(*bias),
                act: activation_code(*act),
                ..Default::default()
            };
            kernel(BIAS_ACT, bias_act_launch(cx.rows(*x) as usize, x.cols), p)
        }
        Op::ActMul { x, out, act } => {
            act_mul_call(cx.ptr(*x), cx.ld(*x), cx.ptr(*out), cx.ld(*out), cx.rows(*x) as usize, out.cols, *act)
        }
        Op::Add { acc, x, gate } => {
            let p = GatedAddParams {
                acc: cx.ptr(*acc),
                acc_ld: cx.ld(*acc),
                x: cx.ptr(*x),
                x_ld: cx.ld(*x),
                gate: gate.map(|g| cx.ptr(g)).unwrap_or(0),
                gate_ld: gate.map(|g| cx.ld(g)).unwrap_or(0),
                rows: cx.rows(*acc),
                cols: acc.cols as i32,
                ..Default::default()
            };
            kernel(GATED_ADD, gated_add_launch(cx.rows(*acc) as usize, acc.cols), p)
        }
        _ => unreachable!("act::prepare got {op:?}"),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_c() {
        assert_eq!(size_of::<ActMulParams>(), 40);
        assert_eq!(offset_of!(ActMulParams, out), 16);
        assert_eq!(offset_of!(ActMulParams, act), 36);
        assert_eq!(size_of::<BiasActParams>(), 40);
        assert_eq!(offset_of!(BiasActParams, bias), 24);
        assert_eq!(offset_of!(BiasActParams, act), 32);
        assert_eq!(size_of::<GatedAddParams>(), 56);
        assert_eq!(offset_of!(GatedAddParams, gate), 32);
        assert_eq!(offset_of!(GatedAddParams, cols), 48);
    }
}
