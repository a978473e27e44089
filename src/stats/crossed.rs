//! A linear mixed model whose stimuli count as a sample: y ~ arm + block (fixed) plus one
//! random intercept per level of each crossed factor (vignette, system prompt,
//! conversation), fitted by REML, with the arm effect tested on Satterthwaite's degrees
//! of freedom instead of a Wald z. Counting conversations as independent participants
//! treats the few vignettes and system prompts a design uses as the only ones there are
//! (the language-as-fixed-effect problem: Clark 1973; Judd, Westfall & Kenny 2012); here
//! a new vignette's deviation is part of the error the arm effect is judged against.
//! Checked against lme4 + lmerTest (`scripts/crossed_reference.R` ->
//! `tests/data/crossed_reference.json`).
//!
//! Method. With theta_k = sigma_k / sigma and D the diagonal of each random column's
//! theta, cov(y) = sigma^2 H with H = I + Z D^2 Z'. Woodbury with M = I + D Z'Z D = L L'
//! gives X'H^-1 X = X'X - W'W with W = L^-1 D Z'X (and the same for y), so every step
//! works in the number of levels, never the number of observations. The profiled REML
//! criterion ln|M| + ln|X'H^-1 X| + (n - p) ln r^2 is minimised over theta (|theta|,
//! so the boundary theta = 0 is reachable) by Nelder-Mead, restarted once at its
//! optimum. Satterthwaite: df = 2 v^2 / (g' A g), with v the arm coefficient's variance
//! as a function of the variance parameters (sigma_k^2, sigma^2), g its gradient and
//! A = 2 (Hessian of the REML deviance)^-1, both by central differences at the fit, as
//! lmerTest computes them. A component estimated at zero is held there.

use super::linalg::{cholesky, cholesky_inverse, forward_solve, log_det};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// One observation: its response, whether it is in arm a (else b), a fixed nuisance
/// level (a completion's stem; the same string for all where there is none) and its
/// level of each random factor, None where the factor does not apply (a baseline
/// conversation has no vignette).
pub struct Observation<'a> {
    pub y: f64,
    pub in_a: bool,
    pub block: &'a str,
    pub levels: Vec<Option<&'a str>>,
}

/// One random factor's fitted variance and the number of levels it rests on.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    pub factor: String,
    pub levels: usize,
    pub variance: f64,
}

/// The arm effect (a minus b) with its Satterthwaite test, and the variance components.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossedFit {
    pub estimate: f64,
    pub se: f64,
    pub df: f64,
    pub t: f64,
    pub p: f64,
    /// The factors that entered the model (those with at least two levels), in the
    /// order given.
    pub components: Vec<Component>,
    pub var_residual: f64,
    pub observations: usize,
}

impl CrossedFit {
    /// The variance `factor` took: 0 where it did not vary, so it never entered.
    pub fn variance_of(&self, factor: &str) -> f64 {
        self.components
            .iter()
            .find(|k| k.factor == factor)
            .map_or(0.0, |k| k.variance)
    }
}

/// The sufficient cross-products of one design: X (intercept, arm, block dummies), Z
/// (one column per factor level) and the centred response.
struct Design {
    n: usize,
    p: usize,
    column_factor: Vec<usize>,
    xtx: Vec<Vec<f64>>,
    xty: Vec<f64>,
    yty: f64,
    ztz: Vec<Vec<f64>>,
    ztx: Vec<Vec<f64>>,
    zty: Vec<f64>,
}

/// What one theta gives.
struct Evaluation {
    /// ln|M| + ln|X'H^-1 X|
    log_dets: f64,
    /// The penalised residual sum of squares r^2 = y'H^-1 y - b' (X'H^-1 X)^-1 b.
    r2: f64,
    /// (X'H^-1 X)^-1
    a_inverse: Vec<Vec<f64>>,
    beta: Vec<f64>,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl Design {
    // Cross-products read as the formulas with explicit indices.
    #[allow(clippy::needless_range_loop)]
    /// `factors` are the entering factors' indices, `levels` their sorted level names.
    fn build(
        factors: &[usize],
        levels: &[&Vec<&str>],
        observations: &[Observation],
        blocks: &[&str],
    ) -> Design {
        let n = observations.len();
        let p = 2 + blocks.len() - 1;
        let mean_y = observations.iter().map(|o| o.y).sum::<f64>() / n as f64;
        let column_factor: Vec<usize> = levels
            .iter()
            .enumerate()
            .flat_map(|(k, l)| std::iter::repeat_n(k, l.len()))
            .collect();
        let offsets: Vec<usize> = levels
            .iter()
            .scan(0, |acc, l| {
                let o = *acc;
                *acc += l.len();
                Some(o)
            })
            .collect();
        let q = column_factor.len();
        let mut d = Design {
            n,
            p,
            column_factor,
            xtx: vec![vec![0.0; p]; p],
            xty: vec![0.0; p],
            yty: 0.0,
            ztz: vec![vec![0.0; q]; q],
            ztx: vec![vec![0.0; p]; q],
            zty: vec![0.0; q],
        };
        for o in observations {
            let y = o.y - mean_y;
            let mut x = vec![0.0; p];
            x[0] = 1.0;
            x[1] = if o.in_a { 1.0 } else { 0.0 };
            let b = blocks
                .binary_search(&o.block)
                .expect("blocks hold every block");
            if b > 0 {
                x[1 + b] = 1.0;
            }
            let z: Vec<usize> = factors
                .iter()
                .enumerate()
                .filter_map(|(k, &f)| {
                    o.levels[f]
                        .map(|l| offsets[k] + levels[k].binary_search(&l).expect("levels hold it"))
                })
                .collect();
            for i in 0..p {
                d.xty[i] += x[i] * y;
                for j in 0..p {
                    d.xtx[i][j] += x[i] * x[j];
                }
            }
            d.yty += y * y;
            for &i in &z {
                d.zty[i] += y;
                for &j in &z {
                    d.ztz[i][j] += 1.0;
                }
                for j in 0..p {
                    d.ztx[i][j] += x[j];
                }
            }
        }
        d
    }

    /// The GLS fit at relative SDs `theta` (one per entering factor); None where a
    /// matrix is singular or nothing is left over for the residual.
    fn evaluate(&self, theta: &[f64]) -> Option<Evaluation> {
        let q = self.column_factor.len();
        let d: Vec<f64> = self.column_factor.iter().map(|&k| theta[k].abs()).collect();
        let m: Vec<Vec<f64>> = (0..q)
            .map(|i| {
                (0..q)
                    .map(|j| d[i] * self.ztz[i][j] * d[j] + if i == j { 1.0 } else { 0.0 })
                    .collect()
            })
            .collect();
        let l = cholesky(&m)?;
        let w: Vec<Vec<f64>> = (0..self.p)
            .map(|j| {
                let col: Vec<f64> = (0..q).map(|i| d[i] * self.ztx[i][j]).collect();
                forward_solve(&l, &col)
            })
            .collect();
        let wy = forward_solve(&l, &(0..q).map(|i| d[i] * self.zty[i]).collect::<Vec<_>>());
        let a: Vec<Vec<f64>> = (0..self.p)
            .map(|j| {
                (0..self.p)
                    .map(|k| self.xtx[j][k] - dot(&w[j], &w[k]))
                    .collect()
            })
            .collect();
        let b: Vec<f64> = (0..self.p).map(|j| self.xty[j] - dot(&w[j], &wy)).collect();
        let (a_inverse, log_a) = cholesky_inverse(&a)?;
        let beta: Vec<f64> = a_inverse.iter().map(|row| dot(row, &b)).collect();
        let r2 = self.yty - dot(&wy, &wy) - dot(&beta, &b);
        if !(r2.is_finite() && r2 > 0.0) {
            return None;
        }
        Some(Evaluation {
            log_dets: log_det(&l) + log_a,
            r2,
            a_inverse,
            beta,
        })
    }

    fn residual_df(&self) -> f64 {
        (self.n - self.p) as f64
    }

    /// The profiled REML criterion (-2 log-likelihood up to a constant).
    fn criterion(&self, theta: &[f64]) -> f64 {
        self.evaluate(theta).map_or(f64::INFINITY, |e| {
            e.log_dets + self.residual_df() * e.r2.ln()
        })
    }

    /// theta for the variance parameters `psi` (the active components' variances, then
    /// the residual's), the inactive components held at zero.
    fn theta_of(&self, active: &[usize], k: usize, psi: &[f64]) -> Vec<f64> {
        let residual = psi[psi.len() - 1];
        let mut theta = vec![0.0; k];
        for (i, &c) in active.iter().enumerate() {
            theta[c] = (psi[i] / residual).sqrt();
        }
        theta
    }

    /// The REML deviance (not profiled) at variance parameters `psi`.
    fn deviance(&self, active: &[usize], k: usize, psi: &[f64]) -> f64 {
        let residual = psi[psi.len() - 1];
        if psi.iter().any(|&v| v.is_nan() || v <= 0.0) {
            return f64::NAN;
        }
        self.evaluate(&self.theta_of(active, k, psi))
            .map_or(f64::NAN, |e| {
                self.residual_df() * residual.ln() + e.log_dets + e.r2 / residual
            })
    }

    /// The arm coefficient's variance at variance parameters `psi`.
    fn arm_variance(&self, active: &[usize], k: usize, psi: &[f64]) -> f64 {
        let residual = psi[psi.len() - 1];
        self.evaluate(&self.theta_of(active, k, psi))
            .map_or(f64::NAN, |e| residual * e.a_inverse[1][1])
    }
}

/// Minimises `f` by Nelder-Mead from `start` with initial steps `step`; +inf and NaN
/// count as worse than anything.
fn nelder_mead(f: &dyn Fn(&[f64]) -> f64, start: &[f64], step: f64) -> Vec<f64> {
    let k = start.len();
    let value = |x: &[f64]| {
        let v = f(x);
        if v.is_nan() {
            f64::INFINITY
        } else {
            v
        }
    };
    let mut simplex: Vec<(Vec<f64>, f64)> = (0..=k)
        .map(|i| {
            let mut x = start.to_vec();
            if i > 0 {
                x[i - 1] += step;
            }
            let v = value(&x);
            (x, v)
        })
        .collect();
    let combine = |a: &[f64], b: &[f64], t: f64| -> Vec<f64> {
        a.iter().zip(b).map(|(x, y)| x + t * (y - x)).collect()
    };
    for _ in 0..20_000 {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (best, worst) = (simplex[0].1, simplex[k].1);
        let spread = simplex
            .iter()
            .flat_map(|(x, _)| x.iter().zip(&simplex[0].0).map(|(a, b)| (a - b).abs()))
            .fold(0.0, f64::max);
        if (worst - best).abs() <= 1e-13 * best.abs().max(1.0) && spread < 1e-9 {
            break;
        }
        let centroid: Vec<f64> = (0..k)
            .map(|j| simplex[..k].iter().map(|(x, _)| x[j]).sum::<f64>() / k as f64)
            .collect();
        let reflected = combine(&centroid, &simplex[k].0, -1.0);
        let fr = value(&reflected);
        if fr < simplex[0].1 {
            let expanded = combine(&centroid, &simplex[k].0, -2.0);
            let fe = value(&expanded);
            simplex[k] = if fe < fr {
                (expanded, fe)
            } else {
                (reflected, fr)
            };
        } else if fr < simplex[k - 1].1 {
            simplex[k] = (reflected, fr);
        } else {
            let toward = if fr < simplex[k].1 { -0.5 } else { 0.5 };
            let contracted = combine(&centroid, &simplex[k].0, toward);
            let fc = value(&contracted);
            if fc < fr.min(simplex[k].1) {
                simplex[k] = (contracted, fc);
            } else {
                let best = simplex[0].0.clone();
                for vertex in simplex.iter_mut().skip(1) {
                    let x = combine(&best, &vertex.0, 0.5);
                    let v = value(&x);
                    *vertex = (x, v);
                }
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    simplex.swap_remove(0).0
}

/// A relative SD below this is taken as a component on the boundary (variance zero).
const BOUNDARY_THETA: f64 = 1e-4;

/// Relative step of the central differences for Satterthwaite's df.
const DIFFERENCE_STEP: f64 = 1e-3;

/// Fits the model with random factors named `factors` (each observation's `levels` in
/// the same order). A factor with fewer than two levels does not enter. None when
/// either arm is empty, the fixed design is singular or leaves no residual df.
pub fn fit(factors: &[&str], observations: &[Observation]) -> Option<CrossedFit> {
    if !observations.iter().any(|o| o.in_a) || observations.iter().all(|o| o.in_a) {
        return None;
    }
    assert!(
        observations.iter().all(|o| o.levels.len() == factors.len()),
        "every observation has one level per factor"
    );
    let mut blocks: Vec<&str> = observations.iter().map(|o| o.block).collect();
    blocks.sort_unstable();
    blocks.dedup();
    let levels: Vec<Vec<&str>> = (0..factors.len())
        .map(|f| {
            let mut l: Vec<&str> = observations.iter().filter_map(|o| o.levels[f]).collect();
            l.sort_unstable();
            l.dedup();
            l
        })
        .collect();
    let entering: Vec<usize> = (0..factors.len())
        .filter(|&f| levels[f].len() >= 2)
        .collect();
    let entering_levels: Vec<&Vec<&str>> = entering.iter().map(|&f| &levels[f]).collect();
    let design = Design::build(&entering, &entering_levels, observations, &blocks);
    if design.n <= design.p {
        return None;
    }
    let k = entering.len();
    let objective = |theta: &[f64]| design.criterion(theta);
    let mut theta = nelder_mead(&objective, &vec![1.0; k], 0.5);
    theta = nelder_mead(&objective, &theta, 0.05);
    for t in theta.iter_mut() {
        *t = if t.abs() < BOUNDARY_THETA {
            0.0
        } else {
            t.abs()
        };
    }
    let at = design.evaluate(&theta)?;
    let sigma2 = at.r2 / design.residual_df();
    let estimate = at.beta[1];
    let variance = sigma2 * at.a_inverse[1][1];
    let se = variance.sqrt();
    let active: Vec<usize> = (0..k).filter(|&c| theta[c] > 0.0).collect();
    let psi: Vec<f64> = active
        .iter()
        .map(|&c| theta[c] * theta[c] * sigma2)
        .chain(std::iter::once(sigma2))
        .collect();
    let df = satterthwaite_df(&design, &active, k, &psi, variance);
    let t = estimate / se;
    let p = StudentsT::new(0.0, 1.0, df).map_or(f64::NAN, |dist| 2.0 * (1.0 - dist.cdf(t.abs())));
    let components = entering
        .iter()
        .enumerate()
        .map(|(c, &f)| Component {
            factor: factors[f].to_string(),
            levels: levels[f].len(),
            variance: theta[c] * theta[c] * sigma2,
        })
        .collect();
    Some(CrossedFit {
        estimate,
        se,
        df,
        t,
        p,
        components,
        var_residual: sigma2,
        observations: design.n,
    })
}

/// 2 v^2 / (g' A g), by central differences; NaN where the Hessian is not invertible.
#[allow(clippy::needless_range_loop)]
fn satterthwaite_df(design: &Design, active: &[usize], k: usize, psi: &[f64], v: f64) -> f64 {
    let m = psi.len();
    let h: Vec<f64> = psi.iter().map(|x| x * DIFFERENCE_STEP).collect();
    let shifted = |moves: &[(usize, f64)]| {
        let mut x = psi.to_vec();
        for &(i, s) in moves {
            x[i] += s * h[i];
        }
        x
    };
    let dev = |x: Vec<f64>| design.deviance(active, k, &x);
    let f0 = dev(psi.to_vec());
    let mut hessian = vec![vec![0.0; m]; m];
    for i in 0..m {
        hessian[i][i] =
            (dev(shifted(&[(i, 1.0)])) - 2.0 * f0 + dev(shifted(&[(i, -1.0)]))) / (h[i] * h[i]);
        for j in 0..i {
            let value = (dev(shifted(&[(i, 1.0), (j, 1.0)]))
                - dev(shifted(&[(i, 1.0), (j, -1.0)]))
                - dev(shifted(&[(i, -1.0), (j, 1.0)]))
                + dev(shifted(&[(i, -1.0), (j, -1.0)])))
                / (4.0 * h[i] * h[j]);
            hessian[i][j] = value;
            hessian[j][i] = value;
        }
    }
    let Some((inverse, _)) = cholesky_inverse(&hessian) else {
        return f64::NAN;
    };
    let gradient: Vec<f64> = (0..m)
        .map(|i| {
            (design.arm_variance(active, k, &shifted(&[(i, 1.0)]))
                - design.arm_variance(active, k, &shifted(&[(i, -1.0)])))
                / (2.0 * h[i])
        })
        .collect();
    // A = 2 H^-1
    let gag: f64 = (0..m)
        .map(|i| {
            (0..m)
                .map(|j| gradient[i] * 2.0 * inverse[i][j] * gradient[j])
                .sum::<f64>()
        })
        .sum();
    let df = 2.0 * v * v / gag;
    if df.is_finite() && df > 0.0 {
        df
    } else {
        f64::NAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pooled_t(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
        let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
        let ss = |x: &[f64]| {
            let m = mean(x);
            x.iter().map(|v| (v - m) * (v - m)).sum::<f64>()
        };
        let df = (a.len() + b.len() - 2) as f64;
        let s2 = (ss(a) + ss(b)) / df;
        let diff = mean(a) - mean(b);
        let se = (s2 * (1.0 / a.len() as f64 + 1.0 / b.len() as f64)).sqrt();
        (diff, se, df)
    }

    #[test]
    fn without_random_factors_it_is_the_pooled_t_test() {
        let a = [1.0, 2.0, 3.5, 4.0, 2.5];
        let b = [0.0, 1.0, 1.5, 2.0];
        let obs: Vec<Observation> = a
            .iter()
            .map(|&y| (y, true))
            .chain(b.iter().map(|&y| (y, false)))
            .map(|(y, in_a)| Observation {
                y,
                in_a,
                block: "",
                levels: vec![],
            })
            .collect();
        let f = fit(&[], &obs).unwrap();
        let (diff, se, df) = pooled_t(&a, &b);
        assert!((f.estimate - diff).abs() < 1e-12, "{f:?}");
        assert!((f.se - se).abs() < 1e-12, "{f:?}");
        assert!((f.df - df).abs() < 1e-4, "{f:?}");
    }

    #[test]
    fn balanced_groups_nested_in_arms_give_the_t_test_on_group_means() {
        // Four groups per arm, three observations each, a positive between-group
        // variance: REML's arm test is the pooled t on the group means, on
        // groups - 2 = 6 df (the classical nested ANOVA result).
        let values = [
            [3.1, 2.4, 3.9],
            [5.0, 4.2, 4.8],
            [1.9, 2.8, 2.2],
            [4.1, 3.3, 3.7],
            [1.0, 1.7, 0.6],
            [2.9, 2.2, 3.4],
            [0.1, 0.9, 0.4],
            [2.0, 1.1, 1.6],
        ];
        let names: Vec<String> = (0..8).map(|g| format!("g{g}")).collect();
        let mut obs = Vec::new();
        for (g, row) in values.iter().enumerate() {
            for &y in row {
                obs.push(Observation {
                    y,
                    in_a: g < 4,
                    block: "",
                    levels: vec![Some(names[g].as_str())],
                });
            }
        }
        let f = fit(&["group"], &obs).unwrap();
        let means: Vec<f64> = values.iter().map(|r| r.iter().sum::<f64>() / 3.0).collect();
        let (diff, se, df) = pooled_t(&means[..4], &means[4..]);
        assert!(f.components[0].variance > 0.0, "{f:?}");
        assert!((f.estimate - diff).abs() < 1e-9, "{f:?}");
        assert!((f.se - se).abs() < 1e-6, "{} vs {se}", f.se);
        assert!((f.df - df).abs() < 1e-3, "{} vs {df}", f.df);
    }

    #[test]
    fn a_factor_with_one_level_does_not_enter_and_one_arm_is_not_fitted() {
        let obs: Vec<Observation> = [(1.0, true), (2.0, true), (0.5, false), (0.0, false)]
            .iter()
            .map(|&(y, in_a)| Observation {
                y,
                in_a,
                block: "",
                levels: vec![Some("only")],
            })
            .collect();
        assert!(fit(&["prompt"], &obs).unwrap().components.is_empty());
        assert!(fit(&["prompt"], &obs[..2]).is_none());
    }
}
