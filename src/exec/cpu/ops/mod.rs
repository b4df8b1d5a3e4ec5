//! The f32 reference math the CPU executor runs: the test oracle for every CUDA kernel.
//!
//! Plain and readable over fast; only the GEMMs go through an optimised kernel
//! (`matrixmultiply`). Every matrix is a contiguous row-major `f32` slice whose shape the
//! caller passes alongside it. Reductions that decide accuracy (norm statistics, softmax,
//! attention sums) accumulate in f64 so the oracle is measurably better than the kernels it
//! checks. Shape mismatches are programming errors inside fwdbench, not user input, so they
//! panic with a message naming the operand.
//!
//! Each op family has one file named by its stem (`Op::family`), holding its math and the
//! `run` that executes the family's plan ops on a [`super::CpuRun`].

pub(super) mod act;
pub(super) mod attention;
pub(super) mod collective;
pub(super) mod embed;
pub(super) mod linear;
pub(super) mod misc;
pub(super) mod mla;
pub(super) mod moe;
pub(super) mod norm;
pub(super) mod quant;
pub(super) mod rope;
pub(super) mod route;

pub use act::{act_mul, activate, round_bf16, sigmoid, softcap};
pub use attention::{attention, AttnShape};
pub use linear::{linear, matmul_nn, matmul_nt, matmul_nt_as};
pub use norm::{layer_norm, rms_norm};
pub use quant::block_scaled_matmul_nt;
pub use rope::{apply_rope, RopeTable};
pub use route::{replace_choice, route, Routing};

/// Numerically stable softmax of `logits` computed in f64 (max subtracted first).
pub(crate) fn softmax_f64(logits: impl Iterator<Item = f64> + Clone) -> Vec<f64> {
    let max = logits.clone().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.map(|l| (l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
pub(crate) mod test_util {
    /// Deterministic pseudo-random values in [-1, 1) (xorshift), enough for test inputs.
    pub fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    pub fn assert_close(got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len(), "length differs");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol * (1.0 + w.abs()), "element {i}: got {g}, want {w} (tol {tol})");
        }
    }
}
