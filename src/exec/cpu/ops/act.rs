//! Element-wise functions: activations, the gated-MLP product, soft-capping, sigmoid and
//! bf16 rounding. Transcendentals run in f64 and round once to f32.

use super::super::CpuRun;
use crate::config::model::Activation;
use crate::plan::Op;

/// `sqrt(2/π)`, the GELU tanh-approximation constant.
const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;

pub fn sigmoid(x: f32) -> f32 {
    // For very negative x, exp(-x) overflows to +inf and the quotient is a correct 0.
    (1.0 / (1.0 + (-(x as f64)).exp())) as f32
}

pub fn activate(x: f32, act: Activation) -> f32 {
    let x = x as f64;
    let y = match act {
        Activation::Silu => x / (1.0 + (-x).exp()),
        Activation::GeluTanh => 0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh()),
        Activation::GeluErf => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
    };
    y as f32
}

/// Gated-MLP middle: each row of `gate_up` is `[gate (inter) | up (inter)]`, the output row
/// is `act(gate) · up` (`inter` values). This is the layout of a fused gate/up projection.
pub fn act_mul(gate_up: &[f32], rows: usize, inter: usize, act: Activation) -> Vec<f32> {
    assert_eq!(
        gate_up.len(),
        rows * 2 * inter,
        "act_mul: gate_up has {} values, expected rows*2*inter = {rows}*2*{inter}",
        gate_up.len()
    );
    let mut out = Vec::with_capacity(rows * inter);
    for row in gate_up.chunks_exact(2 * inter) {
        let (gate, up) = row.split_at(inter);
        out.extend(gate.iter().zip(up).map(|(&g, &u)| activate(g, act) * u));
    }
    out
}

/// `cap · tanh(x / cap)`: smooth clamp of `x` into `(-cap, cap)`.
pub fn softcap(x: f32, cap: f32) -> f32 {
    (cap as f64 * (x as f64 / cap as f64).tanh()) as f32
}

/// Round to the nearest bf16 (ties to even) and back, to give the CPU the weights a bf16
/// GPU run sees.
pub fn round_bf16(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

/// `Op::BiasAct`, `Op::ActMul` and `Op::Add`.
pub fn run(r: &mut CpuRun, op: &Op) {
    match op {
        Op::BiasAct { x, bias, act } => {
            let mut xs = r.read(*x);
            for row in xs.chunks_mut(x.cols) {
                if let Some(b) = bias {
                    row.iter_mut().zip(r.w(*b)).for_each(|(v, b)| *v += b);
                }
                row.iter_mut().for_each(|v| *v = activate(*v, *act));
            }
            r.write(*x, &xs);
        }
        Op::ActMul { x, out, act } => {
            let y = act_mul(&r.read(*x), r.plan.rows(*x), out.cols, *act);
            r.write(*out, &y);
        }
        Op::Add { acc, x, gate } => {
            let mut a = r.read(*acc);
            let xs = r.read(*x);
            let g = gate.map(|g| r.read(g));
            for (i, (row, xr)) in a.chunks_mut(acc.cols).zip(xs.chunks(x.cols)).enumerate() {
                let s = g.as_ref().map(|g| sigmoid(g[i])).unwrap_or(1.0);
                row.iter_mut().zip(xr).for_each(|(a, b)| *a += s * b);
            }
            r.write(*acc, &a);
        }
        _ => unreachable!("act::run got {op:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::cpu::ops::test_util::assert_close;
    use proptest::prelude::*;

    #[test]
    fn activation_values() {
        // silu(x) = x·sigmoid(x); gelu(x) = x·Φ(x); the tanh approximation
        // differs in the fourth digit. Expected values from the formulas in f64.
        assert_eq!(activate(0.0, Activation::Silu), 0.0);
        assert_close(&[activate(1.0, Activation::Silu)], &[0.731_058_6], 1e-7);
        assert_close(&[activate(-2.0, Activation::Silu)], &[-0.238_405_84], 1e-7);
        assert_close(&[activate(1.0, Activation::GeluErf)], &[0.841_344_8], 1e-7);
        assert_close(&[activate(1.0, Activation::GeluTanh)], &[0.841_192], 1e-7);
        assert_close(&[activate(-3.0, Activation::GeluErf)], &[-0.004_049_694], 1e-9);
        assert_close(&[activate(-3.0, Activation::GeluTanh)], &[-0.003_637_392], 1e-9);
        // Far from zero every activation is the identity (positive) or zero (negative).
        for act in [Activation::Silu, Activation::GeluTanh, Activation::GeluErf] {
            assert_close(&[activate(30.0, act), activate(-30.0, act)], &[30.0, 0.0], 1e-6);
        }
    }

    #[test]
    fn act_mul_pairs_gate_with_up() {
        // Two rows, inter = 2: row = [g0 g1 | u0 u1].
        let gate_up = [0.0, 1.0, 5.0, 2.0, 1.0, -2.0, 3.0, 0.5];
        let s1 = activate(1.0, Activation::Silu);
        let sm2 = activate(-2.0, Activation::Silu);
        let out = act_mul(&gate_up, 2, 2, Activation::Silu);
        assert_close(&out, &[0.0, 2.0 * s1, 3.0 * s1, 0.5 * sm2], 1e-7);
    }

    #[test]
    fn sigmoid_values_and_extremes() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert_close(&[sigmoid(2.0)], &[0.880_797_1], 1e-7);
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert_eq!(sigmoid(1000.0), 1.0);
    }

    #[test]
    fn softcap_values() {
        assert_close(&[softcap(30.0, 30.0)], &[30.0 * 0.761_594_2], 1e-6);
        assert_eq!(softcap(1e9, 30.0), 30.0);
        // Near zero the cap is (almost) the identity.
        assert_close(&[softcap(0.01, 30.0)], &[0.01], 1e-6);
    }

    #[test]
    fn bf16_rounding_ties_to_even() {
        let ulp = 2f32.powi(-7); // bf16 spacing just above 1
        assert_eq!(round_bf16(1.0), 1.0);
        assert_eq!(round_bf16(1.0 + ulp / 2.0), 1.0); // tie, 1.0 is even
        assert_eq!(round_bf16(1.0 + 3.0 * ulp / 2.0), 1.0 + 2.0 * ulp); // tie, rounds up to even
        assert_eq!(round_bf16(1.0 + ulp * 0.6), 1.0 + ulp);
        assert!(round_bf16(f32::NAN).is_nan());
    }

    proptest! {
        #[test]
        fn softcap_is_bounded_odd_and_monotone(x in -1e4f32..1e4, dx in 0.0f32..10.0, cap in 1.0f32..100.0) {
            let y = softcap(x, cap);
            prop_assert!(y.abs() <= cap);
            prop_assert!(y.abs() <= x.abs() * (1.0 + 1e-6));
            prop_assert_eq!(softcap(-x, cap), -y);
            prop_assert!(softcap(x + dx, cap) >= y);
        }
    }
}
