//! The results contract: schema-1 runs read into the current types, a schema-2 rerun of
//! a schema-1 run agrees on every value, newer schemas are refused, and the run
//! directory protocol (lock, what resume repairs and what it refuses to touch).

use crate::common;

use affectbench::engine::EngineConfig;
use affectbench::registry::{ModelRef, Registry};
use affectbench::results::{read_header, read_trials, Question, RunStatus, TrialRecord, SCHEMA};
use affectbench::study::run_dir::RunDir;
use affectbench::study::runner::{run_study, RunConfig};
use std::path::Path;

const SCHEMA1_RUN: &str = "tests/data/schema1-smoke";

fn trials_of(dir: &Path, seed: u64) -> Vec<TrialRecord> {
    read_trials(&dir.join("trials.jsonl"), seed)
        .unwrap()
        .records
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

#[test]
fn a_schema_1_run_reads_into_the_current_types() {
    let header = read_header(Path::new(SCHEMA1_RUN)).unwrap();
    assert_eq!(header.schema, 1);
    assert_eq!(header.status, RunStatus::Success);
    assert_eq!(header.study.id, "smoke");
    assert_eq!(
        (
            header.engine.device.as_str(),
            header.engine.weights.as_deref()
        ),
        ("cpu", None),
        "schema 1 recorded no engine choices"
    );
    let trials = trials_of(Path::new(SCHEMA1_RUN), header.seed);
    assert_eq!(trials.len(), 24);
    assert!(
        trials.iter().all(|t| t.seed == 7),
        "the seed of schema-1 trials is the run's"
    );
    let items = trials.iter().filter(|t| matches!(&t.question, Question::Item { instrument, .. } if instrument == "sadness-state")).count();
    assert_eq!(items, 16);
    assert!(trials
        .iter()
        .filter(|t| t.question.is_item())
        .all(|t| t.timing.prefill_ms.is_some()));
    // The older fixture of the report tests is schema 1 too.
    let h = read_header(Path::new("tests/data/report-fixture")).unwrap();
    assert_eq!(
        trials_of(Path::new("tests/data/report-fixture"), h.seed).len(),
        72
    );
}

#[test]
fn a_schema_1_run_and_its_schema_2_rerun_agree_on_every_value() {
    // The committed run was made by the schema-1 code (the revision before the results
    // module) on the smoke study and SmolLM2; rerun it now and compare every field but
    // the schema number and the timings.
    common::real_model("smollm2-135m-instruct");
    let old_header = read_header(Path::new(SCHEMA1_RUN)).unwrap();
    let registry = Registry::builtin();
    let out = tempfile::tempdir().unwrap();
    // The scenario files the run used, as they were then (`then/`: the shipped ones have
    // since changed, e.g. the counterbalanced label design and the judge asked in both
    // orders), each checked against the sha256 the run recorded.
    let scenarios = out.path().join("scenarios");
    common::copy_tree(Path::new("scenarios"), &scenarios);
    let then = Path::new(SCHEMA1_RUN).join("then");
    for dir in std::fs::read_dir(&then).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let rel = path.strip_prefix(&then).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let recorded = old_header
                .scenario_files
                .iter()
                .find(|f| Path::new(&f.path) == Path::new("scenarios").join(rel))
                .unwrap_or_else(|| panic!("{} is not in the run's scenario files", rel.display()));
            assert_eq!(
                affectbench::chat::sha256_hex(&bytes),
                recorded.sha256,
                "{} is not the file the run used",
                path.display()
            );
            std::fs::write(scenarios.join(rel), bytes).unwrap();
        }
    }
    let cfg = RunConfig {
        study_path: scenarios.join("studies/smoke.toml"),
        scenarios_root: Some(scenarios.clone()),
        models: vec![ModelRef::resolve(&registry, "smollm2-135m-instruct").unwrap()],
        out_dir: out.path().join("run"),
        seed: Some(old_header.seed),
        repetitions: Some(old_header.repetitions),
        max_trials: None,
        repetitions_now: None,
        engine: EngineConfig {
            threads: 2,
            ..EngineConfig::default()
        },
        show_progress: false,
        progress_every: std::time::Duration::from_secs(30),
        sources: Default::default(),
        shard: None,
        directions: Vec::new(),
        server: Default::default(),
    };
    run_study(&cfg).unwrap();
    let new_header = read_header(&cfg.out_dir).unwrap();
    assert_eq!(new_header.schema, SCHEMA);
    // The study as recorded then; the acknowledgement, the thinking switch and the
    // assignment are recorded since (the same fixed text the study file gives).
    assert_eq!(
        new_header.study.acknowledgement,
        Some(affectbench::scenario::study::Acknowledgement::Fixed {
            text: "I have read this.".into()
        })
    );
    // And whether hybrid reasoning templates think (SmolLM2's has no switch).
    assert_eq!(new_header.study.thinking, Some(false));
    assert!(!new_header.models[0].thinking_switch);
    // And the assignment (the smoke study's is the default, modulo).
    assert_eq!(
        new_header.study.assignment,
        Some(affectbench::scenario::study::Assignment::Modulo)
    );
    assert_eq!(
        affectbench::results::StudyRecord {
            acknowledgement: None,
            thinking: None,
            assignment: None,
            ..new_header.study.clone()
        },
        old_header.study
    );
    // The same model by identity; the path is wherever this machine's cache is.
    let identity = |h: &affectbench::results::RunHeader| {
        h.models
            .iter()
            .map(|m| {
                (
                    m.label.clone(),
                    m.sha256.clone(),
                    m.tokenizer_sha256.clone(),
                    m.chat_template_sha256.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(identity(&new_header), identity(&old_header));
    assert_eq!(new_header.scoring, old_header.scoring);
    let normalise = |t: &TrialRecord| TrialRecord {
        schema: 0,
        ..t.without_timing()
    };
    let mut old: Vec<TrialRecord> = trials_of(Path::new(SCHEMA1_RUN), old_header.seed)
        .iter()
        .map(normalise)
        .collect();
    // The rerun adds what schema-1 runs did not record: the content-free calibration
    // prompts, and for completions the judge's detail and the stem-compliance check.
    // Every value the old run had must come out the same.
    let mut new: Vec<TrialRecord> = trials_of(&cfg.out_dir, new_header.seed)
        .iter()
        .filter(|t| !t.question.is_content_free())
        .map(|t| TrialRecord {
            judge_detail: None,
            continues_stem: None,
            ..normalise(t)
        })
        .collect();
    old.sort_by(|a, b| a.trial_id.cmp(&b.trial_id));
    new.sort_by(|a, b| a.trial_id.cmp(&b.trial_id));
    assert_eq!(old.len(), new.len());
    for (a, b) in old.iter().zip(&new) {
        assert_eq!(a, b, "trial {}", a.trial_id);
    }
}

#[test]
fn a_newer_schema_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(Path::new(SCHEMA1_RUN).join("run.json"))
        .unwrap()
        .replacen("\"schema\": 1", "\"schema\": 99", 1);
    std::fs::write(dir.path().join("run.json"), text).unwrap();
    let err = read_header(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("run.json") && err.contains("schema 99"),
        "{err}"
    );
}

/// A copy of the schema-1 run in a temporary directory.
fn copy_of_run() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["run.json", "trials.jsonl"] {
        std::fs::copy(Path::new(SCHEMA1_RUN).join(f), dir.path().join(f)).unwrap();
    }
    dir
}

#[test]
fn a_corrupt_line_in_the_middle_is_an_error_and_nothing_is_deleted() {
    // Regression: resume cut trials.jsonl at the first unparsable line, silently
    // deleting every valid record after it (25 lines -> 4).
    let dir = copy_of_run();
    let path = dir.path().join("trials.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = "{\"type\": \"trial\", garbage";
    let corrupted = lines.join("\n") + "\n";
    std::fs::write(&path, &corrupted).unwrap();
    let err = read_trials(&path, 7).unwrap_err().to_string();
    assert!(err.contains("trials.jsonl:3:"), "{err}");
    let mut run = RunDir::open(dir.path()).unwrap();
    assert!(run.finished_trials(7).is_err());
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        corrupted,
        "the file is untouched"
    );
}

#[test]
fn only_a_torn_last_line_is_repaired() {
    let dir = copy_of_run();
    let path = dir.path().join("trials.jsonl");
    let whole = std::fs::read(&path).unwrap();
    // A crash mid-write: the last record cut short.
    std::fs::write(&path, &whole[..whole.len() - 100]).unwrap();
    let mut run = RunDir::open(dir.path()).unwrap();
    assert_eq!(run.finished_trials(7).unwrap().len(), 23);
    let repaired = std::fs::read(&path).unwrap();
    assert!(repaired.ends_with(b"\n") && whole.starts_with(&repaired));
    // A crash between a whole record and its newline: the record is kept.
    std::fs::write(&path, &whole[..whole.len() - 1]).unwrap();
    assert_eq!(run.finished_trials(7).unwrap().len(), 24);
    assert_eq!(std::fs::read(&path).unwrap(), whole);
}

#[test]
fn a_second_writer_is_refused_while_the_first_holds_the_directory() {
    // Regression: two processes running into the same --out both wrote every trial.
    let dir = copy_of_run();
    let first = RunDir::open(dir.path()).unwrap();
    let err = RunDir::open(dir.path())
        .err()
        .expect("the second writer is refused")
        .to_string();
    assert!(err.contains("another affectbench process"), "{err}");
    drop(first);
    RunDir::open(dir.path()).expect("free again once the first is gone");
}

#[test]
fn numbers_survive_a_read_and_write_to_the_last_bit() {
    // Regression: serde_json's default float parsing is not exact, so a merge (which
    // reads and rewrites records) changed the last bit of 42 of 72 probabilities; the
    // SLURM end-to-end test found it.
    let text = std::fs::read_to_string(Path::new(SCHEMA1_RUN).join("trials.jsonl")).unwrap();
    let probs = |line: &str| {
        line.split("\"probs\":[")
            .nth(1)
            .map(|rest| rest.split(']').next().unwrap().to_string())
    };
    let mut compared = 0;
    for line in text.lines() {
        let rewritten = serde_json::to_string(
            &affectbench::results::read::parse_trial(line.as_bytes(), 7).unwrap(),
        )
        .unwrap();
        assert_eq!(probs(line), probs(&rewritten));
        compared += probs(line).is_some() as usize;
    }
    assert!(compared >= 16);
    assert_eq!(
        serde_json::to_string(&serde_json::from_str::<f64>("0.9128021556732685").unwrap()).unwrap(),
        "0.9128021556732685"
    );
}
