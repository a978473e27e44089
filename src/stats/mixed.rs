//! A linear mixed model for completions nested in conversations: valence ~ condition +
//! stem (fixed) + a random intercept per conversation, fitted by REML. Completions of one
//! conversation share its prefix and are not independent; stems are crossed with
//! conditions and enter as fixed effects, so the condition effect is compared within
//! stem. Checked against statsmodels' `MixedLM` (`scripts/consistency_reference.py`).
//!
//! With lambda = var(conversation) / var(residual), each conversation's covariance is
//! sigma^2 (I + lambda J), whose inverse is (I - c J) / sigma^2 with
//! c = lambda / (1 + n lambda); the REML log-likelihood profiled over sigma^2 is then a
//! function of lambda alone, maximised by golden-section search on log lambda.

use super::linalg::cholesky_inverse;
use statrs::distribution::{ContinuousCDF, Normal};
use std::collections::BTreeMap;

/// One completion: its valence, whether it is in arm a (else b), its stem and the
/// conversation it was sampled in.
pub struct Observation<'a> {
    pub y: f64,
    pub in_a: bool,
    pub stem: &'a str,
    pub conversation: &'a str,
}

/// The fitted condition effect (a minus b) and the variance components.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixedFit {
    pub estimate: f64,
    pub se: f64,
    /// Wald z and its two-sided normal p, as statsmodels reports them.
    pub z: f64,
    pub p: f64,
    pub var_conversation: f64,
    pub var_residual: f64,
    pub conversations: usize,
    pub observations: usize,
}

/// A conversation's rows of the design matrix and its responses.
struct Group {
    x: Vec<Vec<f64>>,
    y: Vec<f64>,
}

/// What one value of lambda gives: the REML log-likelihood (up to a constant), the
/// coefficients, sigma^2 and (X' W X)^-1.
struct Profile {
    loglik: f64,
    beta: Vec<f64>,
    sigma2: f64,
    inverse: Vec<Vec<f64>>,
}

/// Fits the model; None when either arm is empty, the design is singular (e.g. no
/// conversation has more than one completion and no stem repeats) or there are no
/// residual degrees of freedom.
pub fn fit(observations: &[Observation]) -> Option<MixedFit> {
    if !observations.iter().any(|o| o.in_a) || observations.iter().all(|o| o.in_a) {
        return None;
    }
    let stems: Vec<&str> = {
        let mut s: Vec<&str> = observations.iter().map(|o| o.stem).collect();
        s.sort_unstable();
        s.dedup();
        s
    };
    // intercept, arm a, one dummy per stem but the first
    let p = 2 + stems.len() - 1;
    let mut by_conversation: BTreeMap<&str, Group> = BTreeMap::new();
    for o in observations {
        let mut row = vec![0.0; p];
        row[0] = 1.0;
        row[1] = if o.in_a { 1.0 } else { 0.0 };
        let s = stems.binary_search(&o.stem).ok()?;
        if s > 0 {
            row[1 + s] = 1.0;
        }
        let g = by_conversation.entry(o.conversation).or_insert(Group {
            x: Vec::new(),
            y: Vec::new(),
        });
        g.x.push(row);
        g.y.push(o.y);
    }
    let groups: Vec<Group> = by_conversation.into_values().collect();
    let n = observations.len();
    if n <= p {
        return None;
    }
    let profile = |lambda: f64| profile(&groups, p, n, lambda);
    // Golden-section search for the maximum over t = ln(lambda) in [-23, 9]
    // (lambda from 1e-10 to 8e3), then lambda = 0 (the boundary) if it is better.
    let (mut lo, mut hi) = (-23.0f64, 9.0f64);
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let mut x1 = hi - ratio * (hi - lo);
    let mut x2 = lo + ratio * (hi - lo);
    let mut f1 = profile(x1.exp())?.loglik;
    let mut f2 = profile(x2.exp())?.loglik;
    while hi - lo > 1e-10 {
        if f1 < f2 {
            lo = x1;
            x1 = x2;
            f1 = f2;
            x2 = lo + ratio * (hi - lo);
            f2 = profile(x2.exp())?.loglik;
        } else {
            hi = x2;
            x2 = x1;
            f2 = f1;
            x1 = hi - ratio * (hi - lo);
            f1 = profile(x1.exp())?.loglik;
        }
    }
    let interior = ((lo + hi) / 2.0).exp();
    let (lambda, best) = {
        let at_zero = profile(0.0)?;
        let inside = profile(interior)?;
        if at_zero.loglik >= inside.loglik {
            (0.0, at_zero)
        } else {
            (interior, inside)
        }
    };
    let se = (best.sigma2 * best.inverse[1][1]).sqrt();
    let estimate = best.beta[1];
    let z = estimate / se;
    let p_value = 2.0 * (1.0 - Normal::new(0.0, 1.0).ok()?.cdf(z.abs()));
    Some(MixedFit {
        estimate,
        se,
        z,
        p: p_value,
        var_conversation: lambda * best.sigma2,
        var_residual: best.sigma2,
        conversations: groups.len(),
        observations: n,
    })
}

// Matrix arithmetic reads as the formulas with explicit indices.
#[allow(clippy::needless_range_loop)]
fn profile(groups: &[Group], p: usize, n: usize, lambda: f64) -> Option<Profile> {
    let mut a = vec![vec![0.0; p]; p];
    let mut b = vec![0.0; p];
    for g in groups {
        let c = lambda / (1.0 + g.x.len() as f64 * lambda);
        let col_sums: Vec<f64> = (0..p).map(|j| g.x.iter().map(|r| r[j]).sum()).collect();
        let y_sum: f64 = g.y.iter().sum();
        for (row, y) in g.x.iter().zip(&g.y) {
            for j in 0..p {
                b[j] += row[j] * y;
                for k in 0..p {
                    a[j][k] += row[j] * row[k];
                }
            }
        }
        for j in 0..p {
            b[j] -= c * col_sums[j] * y_sum;
            for k in 0..p {
                a[j][k] -= c * col_sums[j] * col_sums[k];
            }
        }
    }
    let (inverse, log_det) = cholesky_inverse(&a)?;
    let beta: Vec<f64> = (0..p)
        .map(|j| (0..p).map(|k| inverse[j][k] * b[k]).sum())
        .collect();
    let mut q = 0.0;
    let mut log_det_v = 0.0;
    for g in groups {
        let c = lambda / (1.0 + g.x.len() as f64 * lambda);
        let r: Vec<f64> =
            g.x.iter()
                .zip(&g.y)
                .map(|(row, y)| y - row.iter().zip(&beta).map(|(x, b)| x * b).sum::<f64>())
                .collect();
        let sum: f64 = r.iter().sum();
        q += r.iter().map(|v| v * v).sum::<f64>() - c * sum * sum;
        log_det_v += (1.0 + g.x.len() as f64 * lambda).ln();
    }
    let dof = (n - p) as f64;
    let sigma2 = q / dof;
    if !(sigma2.is_finite() && sigma2 > 0.0) {
        return None;
    }
    Some(Profile {
        loglik: -0.5 * (dof * sigma2.ln() + log_det_v + log_det),
        beta,
        sigma2,
        inverse,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_conversation_effects_it_is_ordinary_least_squares() {
        // Two arms, one stem, each completion its own conversation: the random
        // intercept is not identified apart from the residual, the fit is OLS and the
        // estimate is the difference of means.
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [0.0, 1.0, 1.0, 2.0];
        let names: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
        let obs: Vec<Observation> = a
            .iter()
            .map(|&y| (y, true))
            .chain(b.iter().map(|&y| (y, false)))
            .enumerate()
            .map(|(i, (y, in_a))| Observation {
                y,
                in_a,
                stem: "s",
                conversation: &names[i],
            })
            .collect();
        let f = fit(&obs).unwrap();
        assert!((f.estimate - 1.5).abs() < 1e-6, "{f:?}");
        // OLS SE of a difference of means with pooled variance (5/3 + 2/3) / 2 = 7/6.
        let se = (7.0f64 / 6.0 * (1.0 / 4.0 + 1.0 / 4.0)).sqrt();
        assert!(
            (f.se - se).abs() < 1e-3,
            "{} vs {se} ({:?})",
            f.se,
            f.var_conversation
        );
    }

    #[test]
    fn a_design_with_one_arm_is_not_fitted() {
        let obs = [Observation {
            y: 1.0,
            in_a: true,
            stem: "s",
            conversation: "c",
        }];
        assert!(fit(&obs).is_none());
    }
}
