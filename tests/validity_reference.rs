//! The validity gate's statistics against independent implementations: Cronbach's alpha
//! from pingouin and Pearson's r from scipy, on fixed matrices
//! (`scripts/consistency_reference.py` -> `tests/data/consistency_reference.json`).

use affectbench::results::validity::{cronbach_alpha, pearson};

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
