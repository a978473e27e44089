//! Shards and merges: SLURM array tasks run their shard, merged shards equal one run,
//! and merges refuse inputs that do not belong together.

use super::*;

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
