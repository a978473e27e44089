//! Small dense linear algebra for the mixed models: Cholesky factors, triangular solves
//! and inverses of symmetric positive definite matrices of a few hundred rows at most
//! (fixed effects, random-effect levels), kept as `Vec<Vec<f64>>` so the formulas read
//! with explicit indices.

/// The lower Cholesky factor L of `a` (a = L L'); None when `a` is not positive
/// definite to working precision (a singular design).
#[allow(clippy::needless_range_loop)]
pub fn cholesky(a: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = a.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = a[i][i] - s;
                if d <= 1e-12 * a[i][i].abs().max(1.0) {
                    return None;
                }
                l[i][i] = d.sqrt();
            } else {
                l[i][j] = (a[i][j] - s) / l[j][j];
            }
        }
    }
    Some(l)
}

/// log det of L L' from its Cholesky factor.
pub fn log_det(l: &[Vec<f64>]) -> f64 {
    2.0 * l.iter().enumerate().map(|(i, r)| r[i].ln()).sum::<f64>()
}

/// Solves L x = b for lower-triangular L.
#[allow(clippy::needless_range_loop)]
pub fn forward_solve(l: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let n = l.len();
    let mut x = vec![0.0; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i][k] * x[k]).sum();
        x[i] = (b[i] - s) / l[i][i];
    }
    x
}

/// The inverse and log determinant of a symmetric positive definite matrix by its
/// Cholesky factor; None when it is not positive definite (a singular design).
#[allow(clippy::needless_range_loop)]
pub fn cholesky_inverse(a: &[Vec<f64>]) -> Option<(Vec<Vec<f64>>, f64)> {
    let n = a.len();
    let l = cholesky(a)?;
    let log_det = log_det(&l);
    // Inverse of L (lower triangular), then A^-1 = L^-T L^-1.
    let mut li = vec![vec![0.0; n]; n];
    for i in 0..n {
        li[i][i] = 1.0 / l[i][i];
        for j in 0..i {
            let s: f64 = (j..i).map(|k| l[i][k] * li[k][j]).sum();
            li[i][j] = -s / l[i][i];
        }
    }
    let inverse = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| (i.max(j)..n).map(|k| li[k][i] * li[k][j]).sum())
                .collect()
        })
        .collect();
    Some((inverse, log_det))
}
