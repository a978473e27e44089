//! The statistics floor every layer stands on: descriptives (one mean, one variance, one
//! Pearson's r), seeded bootstrap intervals, effect sizes and tests, the linear mixed
//! models (completions nested in conversations; crossed stimuli with Satterthwaite's
//! df), and the psychometrics of the validity
//! gate. Nothing here knows about runs, trials or reports: plain `f64` samples in,
//! numbers out. Reference values from scipy, statsmodels and lme4/lmerTest are checked in
//! `tests/stats_reference.rs`.

pub mod bootstrap;
pub mod crossed;
pub mod descriptives;
pub mod effects;
pub mod linalg;
pub mod mixed;
pub mod psychometrics;

pub use bootstrap::{bootstrap, BootstrapCi, Interval, MIN_N_BCA, MIN_N_INTERVAL};
pub use descriptives::{
    correlation_or_nan, describe, mean, pearson, quantile_sorted, variance, Describe,
};
pub use effects::{
    hedges_g, hedges_g_vs_constant, holm, mann_whitney, mean_difference, one_sample_t, paired_t,
    tost, welch, Equivalence, HedgesG, MannWhitney, PairedT, Tost, Welch,
};
pub use psychometrics::{centre_within_groups, cronbach_alpha, mcdonald_omega};

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

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
