//! `kernels/act.cu`: gated activation, bias + activation, and (gated) accumulation.

use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::misc::chunked_launch;
use crate::config::model::Activation;

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
