//! L2-regularised logistic regression for linear probes, on standardised features.
//!
//! Probes have far fewer samples than dimensions (tens to hundreds of trials, 500 to
//! 5,000 features), so the fast path works in the dual: the weights are always
//! `w = X^T a` (the gradient of the loss lies in the span of the samples), the decision
//! values are `K a` with `K = X X^T`, and one gradient step costs O(n^2) instead of
//! O(n p). A permutation null refits with other labels on the same kernel, which is
//! what makes hundreds of refits per block affordable. `fit_primal` is the reference:
//! plain gradient descent on `w`; a test checks the two agree.
//!
//! Objective: mean over samples of log(1 + exp(-y f)) + (lambda / 2) |w|^2, y in {-1, 1},
//! no intercept (the features are centred on the training samples and the classes are
//! balanced by design).

/// Per-feature mean and standard deviation of the training rows.
pub struct Standardiser {
    mean: Vec<f64>,
    scale: Vec<f64>,
}

impl Standardiser {
    pub fn fit(rows: &[&[f32]]) -> Self {
        let p = rows.first().map_or(0, |r| r.len());
        let n = rows.len().max(1) as f64;
        let mut mean = vec![0f64; p];
        for r in rows {
            for (m, &x) in mean.iter_mut().zip(r.iter()) {
                *m += x as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0f64; p];
        for r in rows {
            for ((v, &x), m) in var.iter_mut().zip(r.iter()).zip(&mean) {
                *v += (x as f64 - m).powi(2);
            }
        }
        // A constant feature carries nothing; scaling it by 1 keeps it at zero.
        let scale = var
            .iter()
            .map(|v| {
                let sd = (v / n).sqrt();
                if sd > 1e-8 {
                    1.0 / sd
                } else {
                    1.0
                }
            })
            .collect();
        Standardiser { mean, scale }
    }

    pub fn apply(&self, row: &[f32]) -> Vec<f64> {
        row.iter()
            .zip(&self.mean)
            .zip(&self.scale)
            .map(|((&x, m), s)| (x as f64 - m) * s)
            .collect()
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `K[i][j] = <a_i, b_j>`.
pub fn gram(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    a.iter()
        .map(|x| b.iter().map(|y| dot(x, y)).collect())
        .collect()
}

/// The largest eigenvalue of a symmetric positive semi-definite matrix (power iteration).
fn top_eigenvalue(k: &[Vec<f64>]) -> f64 {
    let n = k.len();
    let mut v = vec![1.0 / (n as f64).sqrt(); n];
    let mut lambda = 0.0;
    for _ in 0..50 {
        let w: Vec<f64> = k.iter().map(|row| dot(row, &v)).collect();
        let norm = dot(&w, &w).sqrt();
        if norm == 0.0 {
            return 0.0;
        }
        lambda = norm;
        v = w.iter().map(|x| x / norm).collect();
    }
    lambda
}

/// Iterations of accelerated gradient descent (both paths run the same number).
pub const ITERATIONS: usize = 300;

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// A probe fitted in the dual on a training kernel: refit it for other labels with
/// `fit`, then score rows with their kernel against the training rows.
pub struct DualProblem<'a> {
    kernel: &'a [Vec<f64>],
    step: f64,
    lambda: f64,
}

impl<'a> DualProblem<'a> {
    pub fn new(kernel: &'a [Vec<f64>], lambda: f64) -> Self {
        let n = kernel.len().max(1) as f64;
        // The loss's gradient is Lipschitz with constant top_eig(K) / (4 n) + lambda in
        // the metric of w.
        let lipschitz = top_eigenvalue(kernel) / (4.0 * n) + lambda;
        DualProblem {
            kernel,
            step: 1.0 / lipschitz,
            lambda,
        }
    }

    /// The dual coefficients `a` (w = X^T a) for labels `y` in {-1, 1}.
    pub fn fit(&self, y: &[f64]) -> Vec<f64> {
        let n = y.len();
        let nf = n as f64;
        let mut a = vec![0f64; n];
        let mut a_prev = a.clone();
        for t in 0..ITERATIONS {
            // Nesterov momentum on the coefficients (w is linear in them).
            let momentum = t as f64 / (t as f64 + 3.0);
            let look: Vec<f64> = a
                .iter()
                .zip(&a_prev)
                .map(|(x, p)| x + momentum * (x - p))
                .collect();
            let f: Vec<f64> = self.kernel.iter().map(|row| dot(row, &look)).collect();
            a_prev = a;
            a = look
                .iter()
                .zip(&f)
                .zip(y)
                .map(|((l, fi), yi)| {
                    let g = -yi * sigmoid(-yi * fi) / nf;
                    l - self.step * (g + self.lambda * l)
                })
                .collect();
        }
        a
    }

    /// Decision values of rows whose kernel against the training rows is `cross`.
    pub fn decide(cross: &[Vec<f64>], a: &[f64]) -> Vec<f64> {
        cross.iter().map(|row| dot(row, a)).collect()
    }
}

/// The reference: the same objective by accelerated gradient descent on `w` itself.
pub fn fit_primal(x: &[Vec<f64>], y: &[f64], lambda: f64) -> Vec<f64> {
    let n = x.len() as f64;
    let p = x.first().map_or(0, |r| r.len());
    let lipschitz = top_eigenvalue(&gram(x, x)) / (4.0 * n) + lambda;
    let step = 1.0 / lipschitz;
    let mut w = vec![0f64; p];
    let mut w_prev = w.clone();
    for t in 0..ITERATIONS {
        let momentum = t as f64 / (t as f64 + 3.0);
        let look: Vec<f64> = w
            .iter()
            .zip(&w_prev)
            .map(|(x, p)| x + momentum * (x - p))
            .collect();
        let mut grad: Vec<f64> = look.iter().map(|v| lambda * v).collect();
        for (row, yi) in x.iter().zip(y) {
            let g = -yi * sigmoid(-yi * dot(row, &look)) / n;
            for (gj, xj) in grad.iter_mut().zip(row) {
                *gj += g * xj;
            }
        }
        w_prev = w;
        w = look.iter().zip(&grad).map(|(l, g)| l - step * g).collect();
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn the_dual_fit_equals_the_primal_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (n, p) = (30, 80);
        let x: Vec<Vec<f64>> = (0..n)
            .map(|_| (0..p).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        let y: Vec<f64> = (0..n)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let lambda = 0.05;
        let k = gram(&x, &x);
        let a = DualProblem::new(&k, lambda).fit(&y);
        let w_dual: Vec<f64> = (0..p)
            .map(|j| x.iter().zip(&a).map(|(r, ai)| r[j] * ai).sum())
            .collect();
        let w = fit_primal(&x, &y, lambda);
        let diff = w
            .iter()
            .zip(&w_dual)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let size = w.iter().map(|v| v.abs()).fold(0.0, f64::max);
        assert!(
            diff < 1e-9 * size.max(1.0),
            "dual and primal differ by {diff} (|w| {size})"
        );
        // And the fit separates the training data it was given.
        let f = DualProblem::decide(&k, &a);
        assert!(f.iter().zip(&y).all(|(fi, yi)| fi * yi > 0.0));
    }

    #[test]
    fn standardising_centres_and_scales_each_feature() {
        let rows: Vec<Vec<f32>> = vec![vec![1.0, 5.0], vec![3.0, 5.0]];
        let refs: Vec<&[f32]> = rows.iter().map(|r| &r[..]).collect();
        let s = Standardiser::fit(&refs);
        assert_eq!(s.apply(&rows[0]), vec![-1.0, 0.0]);
        assert_eq!(s.apply(&rows[1]), vec![1.0, 0.0]);
    }
}
