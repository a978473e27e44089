//! The report's statistics against values computed independently with scipy and
//! statsmodels (`scripts/stats_reference.py` -> `tests/data/stats_reference.json`).

use affectbench::stats::{
    bootstrap, describe, hedges_g, holm, mann_whitney, mean, mean_difference, welch,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_str(include_str!("data/stats_reference.json")).expect("reference parses")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn close(what: &str, ours: f64, theirs: f64, tol: f64) {
    assert!(
        (ours - theirs).abs() <= tol,
        "{what}: ours {ours}, scipy {theirs} (tolerance {tol})"
    );
}

#[test]
fn descriptives_tests_and_effect_sizes_match_scipy() {
    for pair in reference()["pairs"].as_array().unwrap() {
        let name = pair["name"].as_str().unwrap();
        let (a, b) = (floats(&pair["a"]), floats(&pair["b"]));
        let d = describe(&a);
        assert_eq!(d.n as u64, pair["describe_a"]["n"].as_u64().unwrap());
        for (what, ours) in [("mean", d.mean), ("sd", d.sd), ("median", d.median)] {
            close(
                &format!("{name} {what}"),
                ours,
                pair["describe_a"][what].as_f64().unwrap(),
                1e-12,
            );
        }
        let w = welch(&a, &b);
        for (what, ours) in [("t", w.t), ("df", w.df), ("p", w.p)] {
            close(
                &format!("{name} welch {what}"),
                ours,
                pair["welch"][what].as_f64().unwrap(),
                1e-9,
            );
        }
        let mw = mann_whitney(&a, &b);
        close(
            &format!("{name} U"),
            mw.u,
            pair["mann_whitney"]["u"].as_f64().unwrap(),
            1e-12,
        );
        close(
            &format!("{name} U p"),
            mw.p,
            pair["mann_whitney"]["p"].as_f64().unwrap(),
            1e-9,
        );
        let g = hedges_g(&a, &b, 0.95);
        for (what, ours) in [
            ("g", g.g),
            ("se", g.se),
            ("low", g.ci.low),
            ("high", g.ci.high),
        ] {
            close(
                &format!("{name} hedges {what}"),
                ours,
                pair["hedges_g"][what].as_f64().unwrap(),
                1e-9,
            );
        }
    }
}

#[test]
fn bootstrap_intervals_match_scipy_within_resampling_noise() {
    let reference = reference();
    let resamples = reference["resamples"].as_u64().unwrap() as usize;
    for pair in reference["pairs"].as_array().unwrap() {
        let name = pair["name"].as_str().unwrap();
        let (a, b) = (floats(&pair["a"]), floats(&pair["b"]));
        let one = bootstrap(
            &[&a],
            |s| mean(s[0]),
            resamples,
            0.95,
            &mut ChaCha20Rng::seed_from_u64(7),
        );
        let two = bootstrap(
            &[&a, &b],
            mean_difference,
            resamples,
            0.95,
            &mut ChaCha20Rng::seed_from_u64(8),
        );
        for (label, ours, theirs) in [
            ("mean", one, &pair["bootstrap_mean_a"]),
            ("difference", two, &pair["bootstrap_difference"]),
        ] {
            for (method, interval) in [("percentile", ours.percentile), ("bca", ours.bca)] {
                let expected = floats(&theirs[method]);
                // Two independent 100,000-resample runs: endpoints agree to a few percent
                // of the interval's width (and exactly on the discrete grid they share).
                let tol = 0.03 * (expected[1] - expected[0]);
                close(
                    &format!("{name} {label} {method} low"),
                    interval.low,
                    expected[0],
                    tol,
                );
                close(
                    &format!("{name} {label} {method} high"),
                    interval.high,
                    expected[1],
                    tol,
                );
            }
        }
    }
}

#[test]
fn holm_matches_statsmodels() {
    let reference = reference();
    let ps: Vec<f64> = reference["holm"]["p"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap_or(f64::NAN))
        .collect();
    let expected: Vec<Option<f64>> = reference["holm"]["adjusted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64())
        .collect();
    for (ours, theirs) in holm(&ps).into_iter().zip(expected) {
        match theirs {
            Some(t) => close("holm", ours, t, 1e-12),
            None => assert!(ours.is_nan()),
        }
    }
}
