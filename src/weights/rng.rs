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

#[cfg(test)]
mod golden {
    /// (seed, index, unit bits, value(mean 0, std 0.02) bits). tests/gpu.rs pins the GPU
    /// generator to this CPU one bit for bit.
    const GOLDEN: [(u64, u64, u32, u32); 15] = [
        (0x35f7803b9f2ef067, 0x0000000000000000, 0x3d7ed3f6, 0x3aa31704),
        (0x35f7803b9f2ef067, 0x0000000000000001, 0xbf72307d, 0xbc9b0050),
        (0x35f7803b9f2ef067, 0x0000000000003039, 0x3fd2690c, 0x3d06a9a1),
        (0x35f7803b9f2ef067, 0x0000010000000000, 0x3d18875a, 0x3a433c9c),
        (0x35f7803b9f2ef067, 0xffffffffffffffff, 0xbf1bae7d, 0xbc4745be),
        (0x0000000000000000, 0x0000000000000000, 0x3fb6dd01, 0x3cea10a5),
        (0x0000000000000000, 0x0000000000000001, 0xbece5128, 0xbc040afb),
        (0x0000000000000000, 0x0000000000003039, 0xbdfff6f2, 0xbb23d13e),
        (0x0000000000000000, 0x0000010000000000, 0x3e6eb9ae, 0x3b98c8c1),
        (0x0000000000000000, 0xffffffffffffffff, 0xbf0de492, 0xbc359f73),
        (0xdeadbeefcafef00d, 0x0000000000000000, 0xbf5a37d5, 0xbc8ba8da),
        (0xdeadbeefcafef00d, 0x0000000000000001, 0xc00677a5, 0xbd2c1e44),
        (0xdeadbeefcafef00d, 0x0000000000003039, 0xbf8e71bb, 0xbcb65422),
        (0xdeadbeefcafef00d, 0x0000010000000000, 0xbf391972, 0xbc6ced5e),
        (0xdeadbeefcafef00d, 0xffffffffffffffff, 0xbfddbba2, 0xbd0de8b9),
    ];

    #[test]
    fn generator_matches_the_pinned_values() {
        for (seed, index, unit, value) in GOLDEN {
            assert_eq!(super::unit_value(seed, index).to_bits(), unit, "unit_value({seed:#x}, {index:#x})");
            assert_eq!(super::value(seed, index, 0.0, 0.02).to_bits(), value, "value({seed:#x}, {index:#x})");
        }
    }
}
