//! Seeded bootstrap confidence intervals (percentile and BCa, as scipy.stats.bootstrap)
//! and the interval type every statistic reports.

use super::descriptives::{mean, quantile_sorted};
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use statrs::distribution::{ContinuousCDF, Normal};

/// A two-sided confidence interval; `level` is e.g. 0.95.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

impl Interval {
    pub const NAN: Interval = Interval {
        low: f64::NAN,
        high: f64::NAN,
    };
}

/// Percentile and BCa intervals from one set of bootstrap replicates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootstrapCi {
    pub estimate: f64,
    pub percentile: Interval,
    pub bca: Interval,
}

/// Fewest observations for which an interval is shown at all, and for which the BCa
/// interval is (its acceleration and bias estimates are unstable on fewer).
pub const MIN_N_INTERVAL: usize = 3;
pub const MIN_N_BCA: usize = 10;

impl BootstrapCi {
    /// The interval a reader is shown for `n` observations: none below
    /// `MIN_N_INTERVAL`, the percentile interval below `MIN_N_BCA`, BCa from there; with
    /// the method's name.
    pub fn shown(&self, n: usize) -> Option<(Interval, &'static str)> {
        if n < MIN_N_INTERVAL {
            None
        } else if n < MIN_N_BCA {
            Some((self.percentile, "percentile"))
        } else {
            Some((self.bca, "BCa"))
        }
    }
}

/// Bootstraps a statistic of one or more independent samples (each resampled with
/// replacement within itself, as for a difference between groups). The replicates come
/// from `rng` only, so a seeded stream gives the same interval on every machine.
/// BCa follows scipy.stats.bootstrap: ties count half in the bias correction, and the
/// acceleration sums the jackknife influence of every sample.
pub fn bootstrap<F>(
    samples: &[&[f64]],
    statistic: F,
    resamples: usize,
    level: f64,
    rng: &mut ChaCha20Rng,
) -> BootstrapCi
where
    F: Fn(&[&[f64]]) -> f64,
{
    let estimate = statistic(samples);
    if samples.iter().any(|s| s.is_empty()) || !estimate.is_finite() {
        return BootstrapCi {
            estimate,
            percentile: Interval::NAN,
            bca: Interval::NAN,
        };
    }
    let mut buffers: Vec<Vec<f64>> = samples.iter().map(|s| vec![0.0; s.len()]).collect();
    let mut replicates = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for (buf, s) in buffers.iter_mut().zip(samples) {
            for slot in buf.iter_mut() {
                *slot = s[rng.random_range(0..s.len())];
            }
        }
        let views: Vec<&[f64]> = buffers.iter().map(|b| b.as_slice()).collect();
        let r = statistic(&views);
        if r.is_finite() {
            replicates.push(r);
        }
    }
    replicates.sort_by(f64::total_cmp);
    let alpha = (1.0 - level) / 2.0;
    let percentile = Interval {
        low: quantile_sorted(&replicates, alpha),
        high: quantile_sorted(&replicates, 1.0 - alpha),
    };
    let bca = bca_interval(samples, &statistic, estimate, &replicates, alpha).unwrap_or(percentile);
    BootstrapCi {
        estimate,
        percentile,
        bca,
    }
}

/// Efron's bias-corrected and accelerated interval; None where it is undefined (every
/// replicate on one side of the estimate, or no spread), so callers fall back to the
/// percentile interval.
fn bca_interval<F>(
    samples: &[&[f64]],
    statistic: &F,
    estimate: f64,
    sorted: &[f64],
    alpha: f64,
) -> Option<Interval>
where
    F: Fn(&[&[f64]]) -> f64,
{
    let normal = Normal::new(0.0, 1.0).expect("standard normal");
    // Ties with the estimate count half (discrete statistics such as a mean of 5 often
    // reproduce the estimate exactly).
    let below = sorted
        .iter()
        .map(|&r| {
            if r < estimate {
                1.0
            } else if r == estimate {
                0.5
            } else {
                0.0
            }
        })
        .sum::<f64>()
        / sorted.len() as f64;
    let z0 = normal.inverse_cdf(below);
    if !z0.is_finite() {
        return None;
    }
    // Acceleration from the jackknife of each sample in turn, the k-sample form of
    // Efron & Tibshirani (1993), eq. 15.36: influence values U = (n - 1)(mean - leave-one-out).
    let (mut num, mut den) = (0.0, 0.0);
    for (k, s) in samples.iter().enumerate() {
        let mut jack = Vec::with_capacity(s.len());
        for i in 0..s.len() {
            let left_out: Vec<f64> = s
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, x)| *x)
                .collect();
            let views: Vec<&[f64]> = samples
                .iter()
                .enumerate()
                .map(|(m, t)| if m == k { left_out.as_slice() } else { *t })
                .collect();
            jack.push(statistic(&views));
        }
        if jack.iter().any(|j| !j.is_finite()) {
            return None;
        }
        let n = s.len() as f64;
        let jm = mean(&jack);
        num += jack
            .iter()
            .map(|j| ((n - 1.0) * (jm - j)).powi(3))
            .sum::<f64>()
            / n.powi(3);
        den += jack
            .iter()
            .map(|j| ((n - 1.0) * (jm - j)).powi(2))
            .sum::<f64>()
            / n.powi(2);
    }
    let a = if den > 0.0 {
        num / (6.0 * den.powf(1.5))
    } else {
        0.0
    };
    let adjust = |q: f64| {
        let z = normal.inverse_cdf(q);
        normal.cdf(z0 + (z0 + z) / (1.0 - a * (z0 + z)))
    };
    let (lo, hi) = (adjust(alpha), adjust(1.0 - alpha));
    if !(lo.is_finite() && hi.is_finite()) {
        return None;
    }
    Some(Interval {
        low: quantile_sorted(sorted, lo),
        high: quantile_sorted(sorted, hi),
    })
}
