//! Counter-based weight generator shared by every executor and every rank.
//!
//! A value depends only on (global seed, HF tensor name, element index in the full HF
//! tensor), so a CPU reference, a GPU and each shard of a sharded run derive identical
//! weights without moving them. The CUDA kernel `fill_normal_bf16` in `kernels/init.cu`
//! implements exactly the same arithmetic: integer hashing, an exact integer sum of four
//! 16-bit uniforms (Irwin-Hall, unit variance), then one multiply and one fused
//! multiply-add, so both sides round identically.

/// splitmix64 finaliser.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a of a tensor name, mixed with the run's seed.
pub fn tensor_seed(global_seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    mix64(h ^ global_seed)
}

/// sqrt(3) / 65536: scales a centred sum of four 16-bit uniforms to unit variance.
pub const IRWIN_HALL_SCALE: f32 = 2.642_899_7e-5;

/// A standard-normal-like value (mean 0, variance 1, bounded by 2*sqrt(3)).
#[inline]
pub fn unit_value(seed: u64, index: u64) -> f32 {
    let h = mix64(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
    let s = (h & 0xffff) + ((h >> 16) & 0xffff) + ((h >> 32) & 0xffff) + (h >> 48);
    (s as f32 - 131_070.0) * IRWIN_HALL_SCALE
}

/// `mean + std * unit_value`, with one rounding (fma) like the GPU kernel.
#[inline]
pub fn value(seed: u64, index: u64, mean: f32, std: f32) -> f32 {
    std.mul_add(unit_value(seed, index), mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_constant_is_sqrt3_over_65536() {
        let exact = 3f64.sqrt() / 65536.0;
        assert!((IRWIN_HALL_SCALE as f64 - exact).abs() / exact < 1e-7);
    }

    #[test]
    fn moments_are_standard() {
        let seed = tensor_seed(0, "model.layers.0.mlp.up_proj.weight");
        let n = 200_000u64;
        let (mut s1, mut s2) = (0f64, 0f64);
        for i in 0..n {
            let v = unit_value(seed, i) as f64;
            s1 += v;
            s2 += v * v;
        }
        let mean = s1 / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }

    #[test]
    fn names_and_indices_decorrelate() {
        let a = tensor_seed(0, "a");
        let b = tensor_seed(0, "b");
        assert_ne!(a, b);
        assert_ne!(unit_value(a, 0), unit_value(a, 1));
        assert_ne!(unit_value(a, 5), unit_value(b, 5));
        assert_ne!(tensor_seed(1, "a"), a);
    }
}
