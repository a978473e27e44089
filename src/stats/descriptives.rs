//! Descriptive statistics on plain `f64` samples: mean, sample variance, quantiles, the
//! n/mean/SD/median summary and Pearson's r. Every layer (the report, the validity gate,
//! the terminal summary, the probes) takes these from here, so one convention holds.

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

/// Pearson's r of paired samples; None when either side does not vary (sum of squared
/// deviations at most 1e-12) or there are no pairs. Callers that need a minimum number of
/// pairs say so themselves.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let syy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    (sxx > 1e-12 && syy > 1e-12).then(|| sxy / (sxx * syy).sqrt())
}

/// Pearson's r as a plain number for tables and probes: NaN with fewer than three pairs
/// or where `pearson` is undefined.
pub fn correlation_or_nan(x: &[f64], y: &[f64]) -> f64 {
    if x.len() < 3 {
        return f64::NAN;
    }
    pearson(x, y).unwrap_or(f64::NAN)
}
