//! Effect sizes and tests on independent or paired samples: Hedges' g, Welch's t, the
//! one-sample and paired t, Mann–Whitney U and Holm's correction. Distributions come from
//! statrs; reference values computed with scipy are checked in the tests.

use super::bootstrap::Interval;
use super::descriptives::{mean, variance};
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

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

/// Two one-sided tests (Schuirmann 1987) of whether a difference lies inside
/// ±`margin`: p is the larger of the two one-sided p values, and the 90% t interval
/// inside the margin is the same verdict at alpha 0.05.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tost {
    pub margin: f64,
    pub estimate: f64,
    pub se: f64,
    pub df: f64,
    /// The 90% t interval of the difference.
    pub ci90: Interval,
    pub p: f64,
}

/// What two one-sided tests and the difference test say together, at alpha 0.05.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Equivalence {
    /// Both one-sided tests reject: the difference lies inside the margin.
    Equivalent,
    /// Not shown equivalent, and the difference test rejects 0.
    Different,
    /// Neither: the data cannot tell (too few observations or too wide a margin).
    Inconclusive,
}

impl Equivalence {
    pub fn name(self) -> &'static str {
        match self {
            Equivalence::Equivalent => "equivalent",
            Equivalence::Different => "different",
            Equivalence::Inconclusive => "inconclusive",
        }
    }
}

/// TOST of a difference `estimate` with standard error `se` on `df` degrees of freedom
/// against ±`margin`; all NaN where the t distribution is undefined.
pub fn tost(estimate: f64, se: f64, df: f64, margin: f64) -> Tost {
    let nan = Tost {
        margin,
        estimate,
        se,
        df,
        ci90: Interval::NAN,
        p: f64::NAN,
    };
    let Ok(dist) = StudentsT::new(0.0, 1.0, df) else {
        return nan;
    };
    if !(estimate.is_finite() && se.is_finite() && se > 0.0) {
        return nan;
    }
    let lower = 1.0 - dist.cdf((estimate + margin) / se);
    let upper = dist.cdf((estimate - margin) / se);
    let q = dist.inverse_cdf(0.95);
    Tost {
        margin,
        estimate,
        se,
        df,
        ci90: Interval {
            low: estimate - q * se,
            high: estimate + q * se,
        },
        p: lower.max(upper),
    }
}

impl Tost {
    /// The verdict, with `difference_p` the two-sided test of the same difference.
    pub fn verdict(&self, difference_p: f64) -> Equivalence {
        if self.p < 0.05 {
            Equivalence::Equivalent
        } else if difference_p < 0.05 {
            Equivalence::Different
        } else {
            Equivalence::Inconclusive
        }
    }
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
mod tost_tests {
    use super::*;

    #[test]
    fn tost_p_is_the_larger_one_sided_p_against_the_margin() {
        // Difference 0, SE 1, margin 2, df 10: each one-sided test has t = 2, whose upper
        // tail on 10 df is 0.036694 (t tables); the 90% CI is 0 +- 1.812461.
        let t = tost(0.0, 1.0, 10.0, 2.0);
        assert!((t.p - 0.036_694).abs() < 1e-5, "{}", t.p);
        assert!((t.ci90.high - 1.812_461).abs() < 1e-5, "{:?}", t.ci90);
        assert_eq!(t.verdict(0.9), Equivalence::Equivalent);
        // Shifted towards the upper bound, the upper one-sided test decides.
        let shifted = tost(1.5, 1.0, 10.0, 2.0);
        assert!(shifted.p > 0.3 && shifted.p < 0.35, "{}", shifted.p);
        assert_eq!(shifted.verdict(0.2), Equivalence::Inconclusive);
        assert_eq!(shifted.verdict(0.01), Equivalence::Different);
    }

    #[test]
    fn tost_with_no_spread_reports_nothing() {
        assert!(tost(0.0, 0.0, 5.0, 1.0).p.is_nan());
    }
}
