//! The validity gate's statistics and the clustered tests against independent
//! implementations: Cronbach's alpha from pingouin, McDonald's omega from
//! factor_analyzer's one-factor minres fit, Pearson's r and the paired t test
//! from scipy, on fixed data (`scripts/consistency_reference.py` ->
//! `tests/data/consistency_reference.json`).

use affectbench::stats::pearson;
use affectbench::stats::{cronbach_alpha, mcdonald_omega};

fn reference() -> serde_json::Value {
    serde_json::from_str(include_str!("data/consistency_reference.json")).expect("reference parses")
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn cronbach_alpha_matches_pingouin() {
    let r = reference();
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
    let cases = reference()["omega"].as_array().unwrap().clone();
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
    for case in reference()["pearson"].as_array().unwrap() {
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
    for case in reference()["paired_t"].as_array().unwrap() {
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
    let cases = reference()["one_sample_t"].as_array().unwrap().clone();
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
    let cases = reference()["mixed"].as_array().unwrap().clone();
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
