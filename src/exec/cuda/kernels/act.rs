//! `kernels/act.cu`: gated activation, bias + activation, and (gated) accumulation.

use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::misc::chunked_launch;
use super::prepare::{kernel, Call, Prep};
use super::ptr::{Bf16Ptr, ConstBf16Ptr};
use crate::config::model::Activation;
use crate::plan::Op;

/// The kernels' `act` values (`ACT_SILU`, ... in the generated header; `apply_act` in
/// kern_util.cuh switches on them).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Identity: `bias_act` as a plain bias add.
    None = -1,
    Silu = 0,
    GeluTanh = 1,
    GeluErf = 2,
}

impl From<Activation> for Act {
    fn from(act: Activation) -> Self {
        match act {
            Activation::Silu => Act::Silu,
            Activation::GeluTanh => Act::GeluTanh,
            Activation::GeluErf => Act::GeluErf,
        }
    }
}

/// The kernels' `act` field for a model activation.
pub fn activation_code(act: Activation) -> i32 {
    Act::from(act) as i32
}

/// `out[r, c] = bf16(act(in[r, c]) * in[r, inter + c])`, `c < inter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ActMulParams {
    /// `[rows, 2*inter]` (gate | up), row stride `in_ld`.
    pub r#in: ConstBf16Ptr,
    pub in_ld: i32,
    /// `[rows, inter]`, row stride `out_ld`.
    pub out: Bf16Ptr,
    pub out_ld: i32,
    pub rows: i32,
    pub inter: i32,
    /// An [`Act`] ([`activation_code`]).
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
    pub x: Bf16Ptr,
    pub ld: i32,
    pub rows: i32,
    pub cols: i32,
    /// `[cols]`, nullable (0).
    pub bias: ConstBf16Ptr,
    /// An [`Act`] ([`activation_code`], or `Act::None` for a plain bias add).
    pub act: i32,
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
    pub acc: Bf16Ptr,
    pub acc_ld: i32,
    pub x: ConstBf16Ptr,
    pub x_ld: i32,
    /// One logit per row at `gate[r * gate_ld]`; nullable (0): plain sum.
    pub gate: ConstBf16Ptr,
    pub gate_ld: i32,
    pub rows: i32,
    pub cols: i32,
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
            };
            kernel(GATED_ADD, gated_add_launch(cx.rows(*acc) as usize, acc.cols), p)
        }
        _ => unreachable!("act::prepare got {op:?}"),
    }])
}
