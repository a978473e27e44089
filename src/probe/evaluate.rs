//! One probe at one block: cross-validated accuracy over held-out induction variants,
//! its permutation null (condition labels shuffled between whole conversations), the
//! control task (the conversation's length) under the same folds, and the out-of-fold
//! decision values that the self-report is correlated with.
//!
//! The unit of analysis is the conversation (a group): trials of one conversation share
//! its text, so accuracy is averaged per conversation first and its interval counts
//! conversations, not trials.

use super::logistic::{gram, DualProblem, Standardiser};

/// One sample's features at the block, its conversation, fold and labels.
pub struct Row<'a> {
    pub features: &'a [f32],
    pub group: usize,
    pub fold: usize,
}

/// Results at one block.
#[derive(Debug, Clone)]
pub struct BlockResult {
    pub accuracy: f64,
    pub ci: (f64, f64),
    /// Accuracies under permuted labels.
    pub null: Vec<f64>,
    pub control_accuracy: f64,
    /// Out-of-fold decision values (positive: condition a), per row.
    pub decisions: Vec<f64>,
}

/// Cross-validates a probe for every labelling at once: `labelings[0]` is the observed
/// condition, `[1]` the control task, the rest permutations; each is per group (+1/-1).
pub fn evaluate(
    rows: &[Row<'_>],
    folds: usize,
    labelings: &[Vec<f64>],
    lambda: f64,
) -> BlockResult {
    let groups = labelings[0].len();
    let mut decisions = vec![vec![0f64; rows.len()]; labelings.len()];
    for fold in 0..folds {
        let train: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].fold != fold).collect();
        let test: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].fold == fold).collect();
        if train.is_empty() || test.is_empty() {
            continue;
        }
        let train_rows: Vec<&[f32]> = train.iter().map(|&i| rows[i].features).collect();
        let standardiser = Standardiser::fit(&train_rows);
        let x_train: Vec<Vec<f64>> = train_rows.iter().map(|r| standardiser.apply(r)).collect();
        let x_test: Vec<Vec<f64>> = test
            .iter()
            .map(|&i| standardiser.apply(rows[i].features))
            .collect();
        let kernel = gram(&x_train, &x_train);
        let cross = gram(&x_test, &x_train);
        let problem = DualProblem::new(&kernel, lambda);
        for (labels, out) in labelings.iter().zip(decisions.iter_mut()) {
            let y: Vec<f64> = train.iter().map(|&i| labels[rows[i].group]).collect();
            let a = problem.fit(&y);
            for (&i, d) in test.iter().zip(DualProblem::decide(&cross, &a)) {
                out[i] = d;
            }
        }
    }
    let accuracy_of = |labels: &[f64], decided: &[f64]| -> f64 {
        // (correct, seen) per conversation; a decision of exactly 0 (features that are
        // the same for every sample, e.g. the embedding of one answer token) is a tie.
        let mut correct = vec![(0f64, 0usize); groups];
        for (r, d) in rows.iter().zip(decided) {
            let c = &mut correct[r.group];
            c.1 += 1;
            let signed = d * labels[r.group];
            c.0 += if signed > 0.0 {
                1.0
            } else if signed == 0.0 {
                0.5
            } else {
                0.0
            };
        }
        let per_group: Vec<f64> = correct
            .iter()
            .filter(|c| c.1 > 0)
            .map(|c| c.0 / c.1 as f64)
            .collect();
        per_group.iter().sum::<f64>() / per_group.len().max(1) as f64
    };
    let accuracy = accuracy_of(&labelings[0], &decisions[0]);
    let observed_groups = {
        let mut seen = vec![false; groups];
        rows.iter().for_each(|r| seen[r.group] = true);
        seen.iter().filter(|s| **s).count()
    };
    BlockResult {
        accuracy,
        ci: wilson(accuracy, observed_groups),
        null: labelings[2..]
            .iter()
            .zip(&decisions[2..])
            .map(|(l, d)| accuracy_of(l, d))
            .collect(),
        control_accuracy: accuracy_of(&labelings[1], &decisions[1]),
        decisions: decisions.swap_remove(0),
    }
}

/// The Wilson score interval (95%) of a proportion over `n` units.
pub fn wilson(p: f64, n: usize) -> (f64, f64) {
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let z = 1.959_963_984_540_054;
    let n = n as f64;
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
    (centre - half, centre + half)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Rows of `groups` conversations (half a, half b) with `per` trials each, noise in
    /// `dim` dimensions plus `signal` on each of the first 8 axes for condition a.
    fn planted(signal: f32, seed: u64) -> (Vec<Vec<f32>>, Vec<usize>, Vec<usize>, Vec<f64>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (groups, per, dim, folds) = (20, 4, 64, 5);
        let mut feats = Vec::new();
        let mut group = Vec::new();
        let mut fold = Vec::new();
        let labels: Vec<f64> = (0..groups)
            .map(|g| if g % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        for (g, label) in labels.iter().enumerate() {
            for _ in 0..per {
                let mut v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
                if *label > 0.0 {
                    v[..8].iter_mut().for_each(|x| *x += signal);
                }
                feats.push(v);
                group.push(g);
                fold.push((g / 2) % folds);
            }
        }
        (feats, group, fold, labels)
    }

    fn run(signal: f32) -> BlockResult {
        let (feats, group, fold, labels) = planted(signal, 11);
        let rows: Vec<Row<'_>> = feats
            .iter()
            .zip(&group)
            .zip(&fold)
            .map(|((f, &g), &k)| Row {
                features: f,
                group: g,
                fold: k,
            })
            .collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut labelings = vec![
            labels.clone(),
            labels
                .iter()
                .map(|_| if rng.random_bool(0.5) { 1.0 } else { -1.0 })
                .collect(),
        ];
        for _ in 0..20 {
            let mut p = labels.clone();
            rand::seq::SliceRandom::shuffle(&mut p[..], &mut rng);
            labelings.push(p);
        }
        evaluate(&rows, 5, &labelings, 0.1)
    }

    #[test]
    fn a_planted_direction_is_decoded_and_noise_is_not() {
        let strong = run(1.0);
        assert!(strong.accuracy > 0.95, "accuracy {}", strong.accuracy);
        let null_mean = strong.null.iter().sum::<f64>() / strong.null.len() as f64;
        assert!(null_mean < 0.7, "null mean {null_mean}");
        let none = run(0.0);
        assert!(
            none.accuracy < 0.8,
            "accuracy without signal {}",
            none.accuracy
        );
    }

    #[test]
    fn wilson_and_pearson_match_hand_values() {
        let (lo, hi) = wilson(0.5, 10);
        assert!((lo - 0.2366).abs() < 1e-3 && (hi - 0.7634).abs() < 1e-3);
        assert!(
            (crate::stats::correlation_or_nan(&[1.0, 2.0, 3.0], &[2.0, 4.0, 7.0]) - 0.9934).abs()
                < 1e-3
        );
    }
}
