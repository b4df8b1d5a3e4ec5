//! Summary statistics of repeated timings.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    pub min_ms: f64,
    pub iters: usize,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl Stats {
    pub fn of(times_ms: &[f64]) -> Self {
        assert!(!times_ms.is_empty(), "no timings");
        let mut s = times_ms.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        Stats {
            median_ms: percentile(&s, 0.5),
            p10_ms: percentile(&s, 0.1),
            p90_ms: percentile(&s, 0.9),
            min_ms: s[0],
            iters: s.len(),
        }
    }

    /// One estimate, not a timing (`iters` 0: no spread to report).
    pub fn estimate(ms: f64) -> Self {
        Stats { median_ms: ms, p10_ms: ms, p90_ms: ms, min_ms: ms, iters: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate() {
        let s = Stats::of(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(s.median_ms, 3.0);
        assert_eq!(s.min_ms, 1.0);
        assert!((s.p10_ms - 1.4).abs() < 1e-12);
        assert!((s.p90_ms - 4.6).abs() < 1e-12);
        assert_eq!(Stats::of(&[7.0]).median_ms, 7.0);
    }
}
