//! Resuming: an interrupted or killed run resumes to the uninterrupted run's trials,
//! from its own snapshot of the scenario files and from another cache holding the same
//! model; `RunTarget::resume` reads the design back from the run directory.

use super::*;

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
fn resume_reads_the_runs_design_back_from_its_directory() {
    use affectbench::registry::Registry;
    use affectbench::study::target::RunTarget;
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let out = dir.path().join("partial");
    let mut cfg = config(&model, &out, Some(3), Some(11));
    cfg.repetitions = Some(3);
    cfg.shard = Some((1, 2));
    cfg.sources.insert("shard".into(), "--shard".into());
    cfg.sources.insert("threads".into(), "--threads".into());
    run_study(&cfg).unwrap();

    let target = RunTarget::resume(&out, &Registry::builtin(), &[]).unwrap();
    assert_eq!(target.out_dir, out);
    assert_eq!(target.seed, Some(11));
    assert_eq!(target.repetitions, Some(3));
    assert_eq!(target.shard, Some((1, 2)));
    // A model the registry does not know is found again by the path the run recorded.
    assert_eq!(target.models, vec![model.display().to_string()]);
    // The design comes from the run's snapshot, not the working tree's study file.
    assert_eq!(
        target.study_path,
        out.join("scenarios").join("studies").join("smoke.toml")
    );
    assert_eq!(target.scenarios_root, Some(out.join("scenarios")));
    // The shard's source is the run's; threads describe the machine, not the run.
    assert_eq!(
        target.sources.get("shard").map(String::as_str),
        Some("--shard")
    );
    assert!(!target.sources.contains_key("threads"));

    let not_a_run = RunTarget::resume(dir.path(), &Registry::builtin(), &[]).unwrap_err();
    assert!(
        not_a_run.to_string().contains("not a run directory"),
        "{not_a_run}"
    );
}
