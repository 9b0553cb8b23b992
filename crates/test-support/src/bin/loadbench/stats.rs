//! Latency percentiles.

use std::time::Duration;

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Summary {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
}

impl Summary {
    /// Summarizes latencies given in nanoseconds (sorted here).
    pub(crate) fn of(mut nanos: Vec<u64>) -> Summary {
        nanos.sort_unstable();
        let ms = |p: f64| {
            percentile(&nanos, p).map_or(0.0, |n| Duration::from_nanos(n).as_secs_f64() * 1e3)
        };
        Summary {
            p50: ms(50.0),
            p90: ms(90.0),
            p99: ms(99.0),
            p999: ms(99.9),
            max: ms(100.0),
        }
    }
}

/// The value at percentile `p` (0–100) of sorted samples, by the nearest-rank method: the
/// smallest sample with at least `p` % of the samples at or below it.
pub(crate) fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    // The tiny allowance keeps decimal percentiles such as 99.9 % of 1000 (999.000…01 in binary
    // floating point) from rounding up to the next rank.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "p is clamped to 0..=100 and n is far below 2^52"
    )]
    let rank = (p.clamp(0.0, 100.0) * n as f64 / 100.0 - 1e-9).ceil() as usize;
    sorted.get(rank.clamp(1, n) - 1).copied()
}

/// Nanoseconds of a duration, saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 90.0), Some(90));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 99.9), Some(100));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7u64], 99.0), Some(7));
        assert_eq!(percentile::<u64>(&[], 50.0), None);
        let w: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&w, 99.9), Some(999));
    }

    #[test]
    fn summary_is_in_milliseconds() {
        let s = Summary::of((1..=1000).rev().map(|i| i * 1_000_000).collect());
        assert!((s.p50 - 500.0).abs() < 1e-9);
        assert!((s.p999 - 999.0).abs() < 1e-9);
        assert!((s.max - 1000.0).abs() < 1e-9);
    }
}
