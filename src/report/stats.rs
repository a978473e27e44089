//! The statistics a report needs, on plain `f64` samples: descriptives, seeded bootstrap
//! confidence intervals (percentile and BCa), Hedges' g, Welch's t, Mann–Whitney U and
//! Holm's correction. Distributions come from statrs; nothing here is a hand-written
//! special function. Reference values computed with scipy are checked in
//! `tests/report_stats.rs`.

use rand::Rng;
use rand_chacha::ChaCha20Rng;
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

/// n, mean, sample SD (n - 1), median.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Describe {
    pub n: usize,
    pub mean: f64,
    pub sd: f64,
    pub median: f64,
}

pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Sample variance (denominator n - 1); NaN below two values.
pub fn variance(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return f64::NAN;
    }
    let m = mean(xs);
    xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64
}

/// Linear-interpolation quantile of sorted data (numpy's default, "linear").
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let h = (sorted.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

pub fn describe(xs: &[f64]) -> Describe {
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    Describe {
        n: xs.len(),
        mean: mean(xs),
        sd: variance(xs).sqrt(),
        median: quantile_sorted(&sorted, 0.5),
    }
}

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

/// Difference of means, `a - b` (the bootstrap statistic for two groups).
pub fn mean_difference(s: &[&[f64]]) -> f64 {
    mean(s[0]) - mean(s[1])
}

/// Hedges' g of `a - b` with its large-sample normal CI (Hedges & Olkin 1985):
/// d = difference / pooled SD, g = J d with J = 1 - 3 / (4 (n1 + n2) - 9),
/// SE = sqrt((n1 + n2) / (n1 n2) + g^2 / (2 (n1 + n2))).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgesG {
    pub g: f64,
    pub se: f64,
    pub ci: Interval,
}

/// g with its normal-approximation interval at `level`; all NaN when g or its SE is not
/// finite.
fn with_normal_ci(g: f64, se: f64, level: f64) -> HedgesG {
    if !g.is_finite() || !se.is_finite() {
        return HedgesG {
            g: f64::NAN,
            se: f64::NAN,
            ci: Interval::NAN,
        };
    }
    let z = Normal::new(0.0, 1.0)
        .expect("standard normal")
        .inverse_cdf(0.5 + level / 2.0);
    HedgesG {
        g,
        se,
        ci: Interval {
            low: g - z * se,
            high: g + z * se,
        },
    }
}

pub fn hedges_g(a: &[f64], b: &[f64], level: f64) -> HedgesG {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let pooled = (((n1 - 1.0) * variance(a) + (n2 - 1.0) * variance(b)) / (n1 + n2 - 2.0)).sqrt();
    let d = (mean(a) - mean(b)) / pooled;
    let g = d * (1.0 - 3.0 / (4.0 * (n1 + n2) - 9.0));
    let se = ((n1 + n2) / (n1 * n2) + g * g / (2.0 * (n1 + n2))).sqrt();
    with_normal_ci(g, se, level)
}

/// Welch's unequal-variance t test of `a` vs `b`, two-sided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Welch {
    pub t: f64,
    pub df: f64,
    pub p: f64,
}

pub fn welch(a: &[f64], b: &[f64]) -> Welch {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (v1, v2) = (variance(a) / n1, variance(b) / n2);
    let t = (mean(a) - mean(b)) / (v1 + v2).sqrt();
    let df = (v1 + v2).powi(2) / (v1 * v1 / (n1 - 1.0) + v2 * v2 / (n2 - 1.0));
    let p = match StudentsT::new(0.0, 1.0, df) {
        Ok(dist) if t.is_finite() => 2.0 * (1.0 - dist.cdf(t.abs())),
        _ => f64::NAN,
    };
    Welch { t, df, p }
}

/// A one-sample t test of `a` against the constant `c`, two-sided (scipy's
/// `ttest_1samp`): for an arm that is one fixed conversation, not a sample.
pub fn one_sample_t(a: &[f64], c: f64) -> Welch {
    let n = a.len() as f64;
    let t = (mean(a) - c) / (variance(a) / n).sqrt();
    let df = n - 1.0;
    let p = match StudentsT::new(0.0, 1.0, df) {
        Ok(dist) if t.is_finite() => 2.0 * (1.0 - dist.cdf(t.abs())),
        _ => f64::NAN,
    };
    Welch { t, df, p }
}

/// Hedges' g of `a` against the constant `c`: d = (mean - c) / SD, small-sample
/// correction J = 1 - 3 / (4 (n - 1) - 1), SE = sqrt(1/n + g^2 / (2 n)) (the one-sample
/// forms of Hedges & Olkin's).
pub fn hedges_g_vs_constant(a: &[f64], c: f64, level: f64) -> HedgesG {
    let n = a.len() as f64;
    let d = (mean(a) - c) / variance(a).sqrt();
    let g = d * (1.0 - 3.0 / (4.0 * (n - 1.0) - 1.0));
    let se = (1.0 / n + g * g / (2.0 * n)).sqrt();
    with_normal_ci(g, se, level)
}

/// A paired t test of `a[i]` vs `b[i]`, two-sided (scipy's `ttest_rel`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedT {
    pub n: usize,
    pub mean_difference: f64,
    pub t: f64,
    pub df: f64,
    pub p: f64,
}

pub fn paired_t(a: &[f64], b: &[f64]) -> PairedT {
    assert_eq!(a.len(), b.len(), "paired samples");
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = d.len();
    let md = if n > 0 { mean(&d) } else { f64::NAN };
    let (t, df) = if n > 1 {
        (md / (variance(&d) / n as f64).sqrt(), (n - 1) as f64)
    } else {
        (f64::NAN, f64::NAN)
    };
    let p = match StudentsT::new(0.0, 1.0, df) {
        Ok(dist) if t.is_finite() => 2.0 * (1.0 - dist.cdf(t.abs())),
        _ => f64::NAN,
    };
    PairedT {
        n,
        mean_difference: md,
        t,
        df,
        p,
    }
}

/// Mann–Whitney U (U of `a`) with the two-sided normal-approximation p value, corrected
/// for ties and for continuity (scipy's `method="asymptotic"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    pub u: f64,
    pub p: f64,
}

pub fn mann_whitney(a: &[f64], b: &[f64]) -> MannWhitney {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        return MannWhitney {
            u: f64::NAN,
            p: f64::NAN,
        };
    }
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|&x| (x, true))
        .chain(b.iter().map(|&x| (x, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len();
    let (mut rank_sum_a, mut tie_term) = (0.0, 0.0);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let midrank = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        rank_sum_a += all[i..=j].iter().filter(|x| x.1).count() as f64 * midrank;
        i = j + 1;
    }
    let (n1f, n2f, nf) = (n1 as f64, n2 as f64, n as f64);
    let u1 = rank_sum_a - n1f * (n1f + 1.0) / 2.0;
    let u = u1.max(n1f * n2f - u1);
    let mu = n1f * n2f / 2.0;
    let sigma = (n1f * n2f / 12.0 * ((nf + 1.0) - tie_term / (nf * (nf - 1.0)))).sqrt();
    let p = if sigma > 0.0 {
        let z = (u - mu - 0.5) / sigma;
        (2.0 * (1.0 - Normal::new(0.0, 1.0).expect("standard normal").cdf(z))).min(1.0)
    } else {
        1.0
    };
    MannWhitney { u: u1, p }
}

/// Holm's step-down adjusted p values, in the input order. NaN p values are left out of
/// the family and stay NaN.
pub fn holm(ps: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..ps.len()).filter(|&i| ps[i].is_finite()).collect();
    idx.sort_by(|&i, &j| ps[i].total_cmp(&ps[j]));
    let m = idx.len();
    let mut out = vec![f64::NAN; ps.len()];
    let mut running = 0.0f64;
    for (k, &i) in idx.iter().enumerate() {
        running = running.max(((m - k) as f64 * ps[i]).min(1.0));
        out[i] = running;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn bootstrap_is_reproducible_by_seed_and_changes_with_it() {
        let xs = [1.0, 4.0, 2.0, 8.0, 5.0, 7.0, 3.0];
        let run = |seed| {
            bootstrap(
                &[&xs],
                |s| mean(s[0]),
                999,
                0.95,
                &mut ChaCha20Rng::seed_from_u64(seed),
            )
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1).percentile, run(2).percentile);
    }

    #[test]
    fn holm_matches_a_hand_computation() {
        // Sorted 0.01, 0.02, 0.04 -> 0.03, 0.04, 0.04 (monotone).
        assert_eq!(holm(&[0.04, 0.01, 0.02]), vec![0.04, 0.03, 0.04]);
        let with_nan = holm(&[f64::NAN, 0.5]);
        assert!(with_nan[0].is_nan() && with_nan[1] == 0.5);
    }

    #[test]
    fn constant_samples_give_degenerate_but_finite_intervals() {
        let xs = [3.0; 5];
        let ci = bootstrap(
            &[&xs],
            |s| mean(s[0]),
            200,
            0.95,
            &mut ChaCha20Rng::seed_from_u64(0),
        );
        assert_eq!((ci.percentile.low, ci.percentile.high), (3.0, 3.0));
        assert_eq!(ci.bca, ci.percentile);
        assert!(hedges_g(&xs, &xs, 0.95).g.is_nan());
    }
}
