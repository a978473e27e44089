//! `crate::stats` against independent implementations, on fixed data: descriptives,
//! tests, effect sizes, bootstrap intervals and Holm's correction from scipy and
//! statsmodels (`scripts/stats_reference.py` -> `tests/data/stats_reference.json`);
//! Cronbach's alpha from pingouin, McDonald's omega from factor_analyzer's one-factor
//! minres fit, Pearson's r, the paired and one-sample t tests from scipy and the
//! completions' mixed model from statsmodels (`scripts/consistency_reference.py` ->
//! `tests/data/consistency_reference.json`); the crossed random-effects model with
//! Satterthwaite's df from lme4 + lmerTest (`scripts/crossed_reference.R` ->
//! `tests/data/crossed_reference.json`).

use affectbench::stats::{
    bootstrap, cronbach_alpha, describe, hedges_g, holm, mann_whitney, mcdonald_omega, mean,
    mean_difference, pearson, welch,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde_json::Value;

fn stats_reference() -> Value {
    serde_json::from_str(include_str!("data/stats_reference.json")).expect("reference parses")
}

fn consistency_reference() -> Value {
    serde_json::from_str(include_str!("data/consistency_reference.json")).expect("reference parses")
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
        "{what}: ours {ours}, the reference {theirs} (tolerance {tol})"
    );
}

#[test]
fn descriptives_tests_and_effect_sizes_match_scipy() {
    for pair in stats_reference()["pairs"].as_array().unwrap() {
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
    let reference = stats_reference();
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
    let reference = stats_reference();
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

#[test]
fn cronbach_alpha_matches_pingouin() {
    let r = consistency_reference();
    let cases = r["alpha"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let rows: Vec<Vec<f64>> = case["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(floats)
            .collect();
        let want = case["alpha"].as_f64().unwrap();
        let got = cronbach_alpha(&rows).expect("alpha defined");
        assert!(
            (got - want).abs() < 1e-10,
            "{}: {got} vs pingouin {want}",
            case["name"]
        );
    }
}

#[test]
fn mcdonald_omega_matches_factor_analyzer_minres() {
    let cases = consistency_reference()["omega"].as_array().unwrap().clone();
    assert!(cases.len() >= 5);
    for case in cases {
        let rows: Vec<Vec<f64>> = case["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(floats)
            .collect();
        let want = case["omega"].as_f64().unwrap();
        let (got, _) = mcdonald_omega(&rows).expect("omega defined");
        // factor_analyzer minimises the residuals with L-BFGS-B; we iterate principal
        // axes to a fixed point of the same objective: agreement to the optimiser's
        // tolerance, not to the last bit.
        assert!(
            (got - want).abs() < 1e-4,
            "{}: {got} vs factor_analyzer {want}",
            case["name"]
        );
    }
}

#[test]
fn pearson_matches_scipy() {
    for case in consistency_reference()["pearson"].as_array().unwrap() {
        let got = pearson(&floats(&case["x"]), &floats(&case["y"])).expect("r defined");
        let want = case["r"].as_f64().unwrap();
        assert!(
            (got - want).abs() < 1e-10,
            "{}: {got} vs scipy {want}",
            case["name"]
        );
    }
}

#[test]
fn paired_t_matches_scipy_ttest_rel() {
    for case in consistency_reference()["paired_t"].as_array().unwrap() {
        let got = affectbench::stats::paired_t(&floats(&case["a"]), &floats(&case["b"]));
        for (name, g, w) in [
            ("t", got.t, case["t"].as_f64().unwrap()),
            ("df", got.df, case["df"].as_f64().unwrap()),
            ("p", got.p, case["p"].as_f64().unwrap()),
        ] {
            assert!(
                (g - w).abs() < 1e-9 * w.abs().max(1.0),
                "{} {name}: {g} vs scipy {w}",
                case["name"]
            );
        }
    }
}

#[test]
fn one_sample_t_matches_scipy_ttest_1samp() {
    let cases = consistency_reference()["one_sample_t"]
        .as_array()
        .unwrap()
        .clone();
    assert!(cases.len() >= 2);
    for case in cases {
        let got =
            affectbench::stats::one_sample_t(&floats(&case["a"]), case["c"].as_f64().unwrap());
        for (name, g, w) in [
            ("t", got.t, case["t"].as_f64().unwrap()),
            ("df", got.df, case["df"].as_f64().unwrap()),
            ("p", got.p, case["p"].as_f64().unwrap()),
        ] {
            assert!(
                (g - w).abs() < 1e-9 * w.abs().max(1.0),
                "{} {name}: {g} vs scipy {w}",
                case["name"]
            );
        }
    }
}

#[test]
fn the_completions_mixed_model_matches_statsmodels_mixedlm() {
    use affectbench::stats::mixed::{fit, Observation};
    let cases = consistency_reference()["mixed"].as_array().unwrap().clone();
    assert!(cases.len() >= 3);
    for case in cases {
        let rows = case["rows"].as_array().unwrap();
        let obs: Vec<Observation> = rows
            .iter()
            .map(|r| Observation {
                y: r["y"].as_f64().unwrap(),
                in_a: r["a"].as_bool().unwrap(),
                stem: r["stem"].as_str().unwrap(),
                conversation: r["conversation"].as_str().unwrap(),
            })
            .collect();
        let got = fit(&obs).expect("the model is identified");
        // statsmodels optimises the REML criterion numerically (and may stop on the
        // boundary); agreement to its tolerance, not to the last bit.
        for (name, g, w, tol) in [
            (
                "estimate",
                got.estimate,
                case["estimate"].as_f64().unwrap(),
                1e-4,
            ),
            ("se", got.se, case["se"].as_f64().unwrap(), 1e-3),
            ("p", got.p, case["p"].as_f64().unwrap(), 1e-3),
            (
                "var_conversation",
                got.var_conversation,
                case["var_conversation"].as_f64().unwrap(),
                1e-3,
            ),
            (
                "var_residual",
                got.var_residual,
                case["var_residual"].as_f64().unwrap(),
                1e-3,
            ),
        ] {
            assert!(
                (g - w).abs() <= tol * w.abs().max(1.0),
                "{} {name}: {g} vs statsmodels {w}",
                case["name"]
            );
        }
    }
}

#[test]
fn the_crossed_random_effects_model_matches_lme4_and_lmertest() {
    use affectbench::stats::crossed::{fit, Observation};
    let reference: Value =
        serde_json::from_str(include_str!("data/crossed_reference.json")).expect("parses");
    let cases = reference["fits"].as_array().unwrap();
    assert!(cases.len() >= 4);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let factors: Vec<&str> = case["factors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        let obs: Vec<Observation> = case["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| Observation {
                y: r["y"].as_f64().unwrap(),
                in_a: r["in_a"].as_bool().unwrap(),
                block: r["block"].as_str().unwrap(),
                levels: r["levels"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l.as_str())
                    .collect(),
            })
            .collect();
        let got = fit(&factors, &obs).expect("the model is identified");
        // Both sides optimise the REML criterion numerically (lme4 by BOBYQA, ours by
        // Nelder-Mead) and take Satterthwaite's derivatives by finite differences, so
        // the agreement is to the optimisers' tolerance, stated per quantity.
        let mut checks = vec![
            (
                "estimate",
                got.estimate,
                case["estimate"].as_f64().unwrap(),
                1e-5,
            ),
            ("se", got.se, case["se"].as_f64().unwrap(), 1e-4),
            ("df", got.df, case["df"].as_f64().unwrap(), 1e-3),
            ("t", got.t, case["t"].as_f64().unwrap(), 1e-4),
            ("p", got.p, case["p"].as_f64().unwrap(), 1e-3),
            (
                "residual",
                got.var_residual,
                case["residual"].as_f64().unwrap(),
                1e-4,
            ),
        ];
        for (c, want) in got
            .components
            .iter()
            .zip(case["variances"].as_array().unwrap())
        {
            checks.push(("variance", c.variance, want.as_f64().unwrap(), 1e-3));
        }
        assert_eq!(got.components.len(), factors.len(), "{name}");
        for (what, ours, theirs, relative) in checks {
            assert!(
                (ours - theirs).abs() <= relative * theirs.abs().max(1.0),
                "{name} {what}: ours {ours}, lmerTest {theirs} (relative tolerance {relative})"
            );
        }
    }
}
