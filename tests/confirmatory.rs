//! Confirmatory studies end to end on the tiny model: `affectbench prereg` freezes a
//! plan, `run --prereg` keeps it and refuses an edited one, and the report lists
//! every deviation; `plan` and `run --until-precision` refuse a study without a
//! precision target and name the fix.

use crate::common;
use std::path::Path;

fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// (aspect, deviation) rows of a report's preregistration.csv.
fn deviations(run: &Path) -> Vec<(String, bool)> {
    let mut r = csv::Reader::from_path(run.join("tables/preregistration.csv")).unwrap();
    r.deserialize::<(String, String, String, String, bool)>()
        .map(|row| {
            let (_, aspect, _, _, deviation) = row.unwrap();
            (aspect, deviation)
        })
        .collect()
}

#[test]
fn a_preregistered_run_reports_no_deviation_and_a_changed_seed_reports_one() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny_study_model(dir.path());
    let prereg = dir.path().join("smoke.prereg.json");
    let printed = ok(&common::affectbench(&[
        "prereg",
        "scenarios/studies/smoke.toml",
        "--out",
        prereg.to_str().unwrap(),
    ]));
    assert!(
        printed.starts_with(|c: char| c.is_ascii_hexdigit()),
        "{printed}"
    );
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "run",
            "scenarios/studies/smoke.toml",
            "--model",
            model.to_str().unwrap(),
            "--prereg",
            prereg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        common::affectbench(&args)
    };
    let same = dir.path().join("same");
    ok(&run(&same, &[]));
    assert!(same.join("preregistration.json").exists());
    let rows = deviations(&same);
    assert!(rows.iter().any(|(a, _)| a == "seed"), "{rows:?}");
    assert!(rows.iter().all(|(_, d)| !d), "{rows:?}");
    let summary = std::fs::read_to_string(same.join("summary.md")).unwrap();
    assert!(summary.contains("## Preregistration"), "no section");

    let other_seed = dir.path().join("other-seed");
    ok(&run(&other_seed, &["--seed", "8"]));
    let deviating: Vec<String> = deviations(&other_seed)
        .into_iter()
        .filter(|(_, d)| *d)
        .map(|(a, _)| a)
        .collect();
    assert_eq!(deviating, ["seed"]);
}

#[test]
fn an_edited_preregistration_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny_study_model(dir.path());
    let prereg = dir.path().join("p.json");
    ok(&common::affectbench(&[
        "prereg",
        "scenarios/studies/smoke.toml",
        "--out",
        prereg.to_str().unwrap(),
    ]));
    let text = std::fs::read_to_string(&prereg).unwrap();
    std::fs::write(&prereg, text.replace("\"seed\": 7", "\"seed\": 9")).unwrap();
    let o = common::affectbench(&[
        "run",
        "scenarios/studies/smoke.toml",
        "--model",
        model.to_str().unwrap(),
        "--prereg",
        prereg.to_str().unwrap(),
        "--out",
        dir.path().join("run").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("p.json") && err.contains("edited after"),
        "{err}"
    );
    assert!(!dir.path().join("run/trials.jsonl").exists());
}

#[test]
fn until_precision_without_a_sesoi_is_refused_before_any_trial_runs() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny_study_model(dir.path());
    let out = dir.path().join("run");
    let o = common::affectbench(&[
        "run",
        "scenarios/studies/smoke.toml",
        "--model",
        model.to_str().unwrap(),
        "--until-precision",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("smoke.toml") && err.contains("primary_readout") && err.contains("sesoi"),
        "{err}"
    );
    assert!(!out.join("trials.jsonl").exists());
}

#[test]
fn plan_writes_a_row_per_vignette_multiple_and_checks_the_pilots_precision() {
    // The committed fixture run as the pilot, planned under a study file that declares
    // a confirmatory question on its arms.
    let dir = tempfile::tempdir().unwrap();
    let scenarios = dir.path().join("scenarios");
    common::copy_tree(Path::new("scenarios"), &scenarios);
    let study = scenarios.join("studies/planned.toml");
    std::fs::write(
        &study,
        r#"id = "planned"
version = 1
description = "The fixture's design with a confirmatory question."
source = "affectbench tests"
licence = "CC0-1.0"
seed = 3
repetitions = 3
temperature = 0.5
items_per_conversation = "one"
max_answer_tokens = 6
max_reasks = 1
acknowledgement = "I have read this."
option_order = "counterbalanced"
label_styles = ["digits"]
primary_readout = "probability"

[[condition]]
name = "neutral/none"
induction = "neutral"
instruments = ["sadness-state"]

[[condition]]
name = "sadness/none"
induction = "sadness"
instruments = ["sadness-state"]

[[contrast]]
question = "Does the sadness induction raise sadness more than a neutral text?"
a = "sadness/none"
b = "neutral/none"
instrument = "sadness-state"
family = "induction"
direction = "a > b"
sesoi = 0.5
"#,
    )
    .unwrap();
    let csv_path = dir.path().join("plan.csv");
    let printed = ok(&common::affectbench(&[
        "plan",
        study.to_str().unwrap(),
        "--pilot",
        "tests/data/report-fixture",
        "--simulations",
        "40",
        "--max-repetitions",
        "200",
        "--out",
        csv_path.to_str().unwrap(),
    ]));
    assert!(printed.contains("Does the sadness induction"), "{printed}");
    let mut r = csv::Reader::from_path(&csv_path).unwrap();
    let headers = r.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    assert!(!rows.is_empty());
    for row in &rows {
        assert_eq!(&row[col("role")], "confirmatory");
        assert_eq!(&row[col("assumed_difference")], "0.5");
        let power: f64 = row[col("power")].parse().unwrap();
        assert!((0.0..=1.0).contains(&power), "{power}");
        let reps: usize = row[col("repetitions_per_arm")].parse().unwrap();
        assert!(reps >= 1);
    }
    let check = common::affectbench(&[
        "plan",
        study.to_str().unwrap(),
        "--pilot",
        "tests/data/report-fixture",
        "--check-precision",
    ]);
    let out = String::from_utf8_lossy(&check.stdout);
    match check.status.code() {
        Some(0) => assert!(out.contains("met ") && !out.contains("not met"), "{out}"),
        Some(3) => assert!(out.contains("not met"), "{out}"),
        other => panic!("exit {other:?}: {}", String::from_utf8_lossy(&check.stderr)),
    }
}
