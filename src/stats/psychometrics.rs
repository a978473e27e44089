//! Psychometrics of a questionnaire's answers, respondents x items: Cronbach's alpha and
//! McDonald's omega (one factor, minimum residuals), with the small linear algebra they
//! need. Checked against pingouin and factor_analyzer in `tests/stats_reference.rs`.
//! Group-centring takes condition means out of the rows before either coefficient, so
//! that differences between conditions cannot pass for agreement between items.

use super::descriptives::{pearson, variance};

/// The rows of every group with at least 2 rows, each item centred on its group's mean:
/// what is left is the variation within groups. Alpha or omega over these rows is the
/// consistency of the items beyond what the group (the condition) explains; pooled raw
/// rows let condition means alone make a scale look consistent. Groups of one row carry
/// no within-group variation and are left out.
pub fn centre_within_groups<G: Ord>(rows: &[(G, Vec<f64>)]) -> Vec<Vec<f64>> {
    let mut groups: std::collections::BTreeMap<&G, Vec<&Vec<f64>>> = Default::default();
    for (g, row) in rows {
        groups.entry(g).or_default().push(row);
    }
    let mut out = Vec::new();
    for members in groups.values().filter(|m| m.len() >= 2) {
        let k = members[0].len();
        let means: Vec<f64> = (0..k)
            .map(|j| members.iter().map(|r| r[j]).sum::<f64>() / members.len() as f64)
            .collect();
        out.extend(
            members
                .iter()
                .map(|r| r.iter().zip(&means).map(|(x, m)| x - m).collect()),
        );
    }
    out
}

/// Cronbach's alpha of rows (respondents) x columns (items):
/// k / (k - 1) * (1 - sum of item variances / variance of the row sums).
/// None when the row sums do not vary.
pub fn cronbach_alpha(rows: &[Vec<f64>]) -> Option<f64> {
    let k = rows.first()?.len();
    if k < 2 || rows.len() < 2 {
        return None;
    }
    let item_var: f64 = (0..k)
        .map(|j| variance(&rows.iter().map(|r| r[j]).collect::<Vec<_>>()))
        .sum();
    let total_var = variance(&rows.iter().map(|r| r.iter().sum()).collect::<Vec<f64>>());
    (total_var > 1e-12).then(|| k as f64 / (k as f64 - 1.0) * (1.0 - item_var / total_var))
}

/// McDonald's omega (total) of rows (respondents) x columns (items) under a one-factor
/// model fitted to the item correlation matrix by minimum residuals: principal axes
/// iterated from squared multiple correlations until the communalities settle, each
/// uniqueness kept in [0.005, 1] as factor_analyzer's minres bounds it.
/// omega = (sum of loadings)^2 / ((sum of loadings)^2 + sum of uniquenesses).
/// None with fewer than 3 items (one factor is not identified) or 3 respondents, or
/// when an item does not vary. The bool says whether a uniqueness sat at its bound (a
/// Heywood case: the estimate is then unstable).
pub fn mcdonald_omega(rows: &[Vec<f64>]) -> Option<(f64, bool)> {
    let k = rows.first()?.len();
    if k < 3 || rows.len() < 3 {
        return None;
    }
    let corr = correlation_matrix(rows)?;
    const MIN_UNIQUENESS: f64 = 0.005;
    let mut communality: Vec<f64> = match inverse(&corr) {
        Some(inv) => (0..k).map(|i| 1.0 - 1.0 / inv[i][i]).collect(),
        // A singular matrix (an item a linear function of others): start from each
        // item's largest correlation instead.
        None => (0..k)
            .map(|i| {
                (0..k)
                    .filter(|&j| j != i)
                    .map(|j| corr[i][j].abs())
                    .fold(0.0, f64::max)
            })
            .collect(),
    };
    let mut loadings = vec![0.0; k];
    for _ in 0..10_000 {
        let mut reduced = corr.clone();
        for (i, h) in communality.iter().enumerate() {
            reduced[i][i] = h.clamp(0.0, 1.0 - MIN_UNIQUENESS);
        }
        let (value, vector) = top_eigenpair(&reduced);
        let scale = value.max(0.0).sqrt();
        loadings = vector.iter().map(|v| v * scale).collect();
        let next: Vec<f64> = loadings
            .iter()
            .map(|l| (l * l).clamp(0.0, 1.0 - MIN_UNIQUENESS))
            .collect();
        let change = next
            .iter()
            .zip(&communality)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        communality = next;
        if change < 1e-12 {
            break;
        }
    }
    let sum: f64 = loadings.iter().sum();
    let uniqueness: f64 = communality.iter().map(|h| 1.0 - h).sum();
    let heywood = communality
        .iter()
        .any(|h| *h >= 1.0 - MIN_UNIQUENESS - 1e-9);
    let omega = sum * sum / (sum * sum + uniqueness);
    omega.is_finite().then_some((omega, heywood))
}

/// Pearson correlations between the columns of `rows`; None if a column is constant.
fn correlation_matrix(rows: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let k = rows[0].len();
    let columns: Vec<Vec<f64>> = (0..k)
        .map(|j| rows.iter().map(|r| r[j]).collect())
        .collect();
    let mut out = vec![vec![1.0; k]; k];
    for i in 0..k {
        for j in (i + 1)..k {
            let r = pearson(&columns[i], &columns[j])?;
            out[i][j] = r;
            out[j][i] = r;
        }
    }
    Some(out)
}

/// Gauss-Jordan inverse with partial pivoting; None when (near) singular.
fn inverse(m: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = m.len();
    let mut a: Vec<Vec<f64>> = m
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let mut r = row.clone();
            r.extend((0..n).map(|j| if i == j { 1.0 } else { 0.0 }));
            r
        })
        .collect();
    for col in 0..n {
        let pivot = (col..n).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        let p = a[col][col];
        for v in a[col].iter_mut() {
            *v /= p;
        }
        for r in 0..n {
            if r != col {
                let factor = a[r][col];
                if factor != 0.0 {
                    let pivot_row = a[col].clone();
                    for (v, pv) in a[r].iter_mut().zip(&pivot_row) {
                        *v -= factor * pv;
                    }
                }
            }
        }
    }
    Some(a.into_iter().map(|r| r[n..].to_vec()).collect())
}

/// The largest eigenvalue of a symmetric matrix and its unit eigenvector (cyclic
/// Jacobi rotations: exact enough and simple for the few items of a scale).
fn top_eigenpair(m: &[Vec<f64>]) -> (f64, Vec<f64>) {
    let n = m.len();
    let mut a = m.to_vec();
    let mut v: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    for _ in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off < 1e-30 {
            break;
        }
        for p in 0..n {
            for q in (p + 1)..n {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in a.iter_mut() {
                    let (arp, arq) = (row[p], row[q]);
                    row[p] = c * arp - s * arq;
                    row[q] = s * arp + c * arq;
                }
                let (row_p, row_q) = (a[p].clone(), a[q].clone());
                for (r, (apr, aqr)) in row_p.iter().zip(&row_q).enumerate() {
                    a[p][r] = c * apr - s * aqr;
                    a[q][r] = s * apr + c * aqr;
                }
                for row in v.iter_mut() {
                    let (vp, vq) = (row[p], row[q]);
                    row[p] = c * vp - s * vq;
                    row[q] = s * vp + c * vq;
                }
            }
        }
    }
    let top = (0..n)
        .max_by(|&x, &y| a[x][x].total_cmp(&a[y][y]))
        .unwrap_or(0);
    let mut vector: Vec<f64> = v.iter().map(|row| row[top]).collect();
    // The factor's direction is arbitrary; take the one most items load positively on.
    if vector.iter().sum::<f64>() < 0.0 {
        vector.iter_mut().for_each(|x| *x = -*x);
    }
    (a[top][top], vector)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Items that vary together only through their condition's mean: orthogonal noise
    /// within each condition, a shift of 10 between them.
    fn shifted_conditions() -> Vec<(&'static str, Vec<f64>)> {
        let noise = [
            [1.0, 1.0, 1.0],
            [-1.0, 1.0, -1.0],
            [1.0, -1.0, -1.0],
            [-1.0, -1.0, 1.0],
        ];
        ["low", "high"]
            .into_iter()
            .enumerate()
            .flat_map(|(g, name)| {
                noise
                    .iter()
                    .map(move |e| (name, e.iter().map(|x| x + 10.0 * g as f64).collect()))
            })
            .collect()
    }

    #[test]
    fn condition_means_alone_make_pooled_alpha_high_and_centred_alpha_zero() {
        let rows = shifted_conditions();
        let pooled: Vec<Vec<f64>> = rows.iter().map(|(_, r)| r.clone()).collect();
        assert!(cronbach_alpha(&pooled).unwrap() > 0.9);
        let centred = centre_within_groups(&rows);
        assert_eq!(centred.len(), 8);
        // The noise columns are orthogonal: no covariance is left between items.
        assert!(cronbach_alpha(&centred).unwrap().abs() < 1e-12);
    }

    #[test]
    fn a_condition_with_one_respondent_is_left_out_of_the_centred_rows() {
        let mut rows = shifted_conditions();
        rows.push(("alone", vec![3.0, 4.0, 5.0]));
        assert_eq!(centre_within_groups(&rows).len(), 8);
    }
}
