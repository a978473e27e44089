//! Run directories that are not what they seem, a disk that fills, a study too large to
//! plan naively, stop signals at every phase, and a closed stderr.

use super::{files_under, records, send_signal, status, tiny_model};
use crate::common;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `affectbench run STUDY --model MODEL --no-report` with `extra` arguments.
fn run(study: &str, model: &Path, extra: &[&str]) -> Command {
    let mut cmd = common::affectbench_command();
    cmd.args(["run", study, "--no-report", "--model"])
        .arg(model)
        .args(extra)
        .stdin(Stdio::null());
    cmd
}

#[test]
fn a_run_into_the_folder_that_holds_scenarios_leaves_every_scenario_file_intact() {
    // Regression: `--out .` copied every scenario file onto itself for the snapshot,
    // which truncated the study and every library file to 0 bytes, and exited 0.
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let project = dir.path().join("project");
    common::copy_tree(Path::new("scenarios"), &project.join("scenarios"));
    let before = files_under(&project.join("scenarios"));
    let o = run(
        "scenarios/studies/smoke.toml",
        &model,
        &["--out", ".", "--max-trials", "2"],
    )
    .current_dir(&project)
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(files_under(&project.join("scenarios")), before);
    assert_eq!(records(&project).len(), 2);
    // The run resumes from that snapshot, the files themselves.
    let resumed = common::affectbench_command()
        .args(["run", "--no-report", "--max-trials", "2", "--resume", "."])
        .current_dir(&project)
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(files_under(&project.join("scenarios")), before);
}

#[test]
fn a_folder_with_trial_records_but_no_run_json_is_refused_not_adopted() {
    // Regression: another run's trials.jsonl in a folder without run.json was adopted
    // as done, and its report.html overwritten.
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let elsewhere = dir.path().join("elsewhere");
    let o = run(
        "scenarios/studies/smoke.toml",
        &model,
        &["--max-trials", "3", "--seed", "99", "--out"],
    )
    .arg(&elsewhere)
    .output()
    .unwrap();
    assert!(o.status.success());
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    let trials = std::fs::read(elsewhere.join("trials.jsonl")).unwrap();
    std::fs::write(foreign.join("trials.jsonl"), &trials).unwrap();
    let o = run("scenarios/studies/smoke.toml", &model, &["--out"])
        .arg(&foreign)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no run.json") && err.contains("another --out"),
        "{err}"
    );
    assert_eq!(std::fs::read(foreign.join("trials.jsonl")).unwrap(), trials);
    assert!(!foreign.join("run.json").exists());
    // A report without records is protected the same way.
    let reported = dir.path().join("reported");
    std::fs::create_dir_all(&reported).unwrap();
    std::fs::write(reported.join("report.html"), "<p>someone's report</p>").unwrap();
    let o = run("scenarios/studies/smoke.toml", &model, &["--out"])
        .arg(&reported)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert_eq!(
        std::fs::read_to_string(reported.join("report.html")).unwrap(),
        "<p>someone's report</p>"
    );
}

#[test]
fn a_header_that_cannot_be_replaced_leaves_the_last_good_one_and_resume_completes_identically() {
    // Regression: where the temporary header could not be written (a full disk), run.json
    // was rewritten in place, which a full disk truncates; --resume then said "not a run
    // directory". The temporary file's place is taken by a folder here, which fails the
    // write the same way on any file system.
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let whole = dir.path().join("whole");
    assert!(run("scenarios/studies/smoke.toml", &model, &["--out"])
        .arg(&whole)
        .status()
        .unwrap()
        .success());
    let cut = dir.path().join("cut");
    assert!(run(
        "scenarios/studies/smoke.toml",
        &model,
        &["--max-trials", "5", "--out"]
    )
    .arg(&cut)
    .status()
    .unwrap()
    .success());
    let good = std::fs::read(cut.join("run.json")).unwrap();
    std::fs::create_dir(cut.join("run.json.tmp")).unwrap();
    let o = common::affectbench_command()
        .args(["run", "--no-report", "--resume"])
        .arg(&cut)
        .output()
        .unwrap();
    assert!(!o.status.success(), "the header could not be written");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("run.json.tmp"), "{err}");
    assert_eq!(
        std::fs::read(cut.join("run.json")).unwrap(),
        good,
        "left as it was"
    );
    std::fs::remove_dir(cut.join("run.json.tmp")).unwrap();
    crate::study_runner::resume_to_the_end(&cut);
    assert_eq!(status(&cut), "success");
    assert_eq!(
        crate::study_runner::records_by_id(&cut),
        crate::study_runner::records_by_id(&whole)
    );
}

/// The smoke study with `repetitions = 100000` (1.6 M trials, within the plan limit),
/// written into a copy of the scenarios under `dir`.
fn huge_study(dir: &Path) -> PathBuf {
    let root = dir.join("scenarios");
    common::copy_tree(Path::new("scenarios"), &root);
    let study = root.join("studies/smoke.toml");
    let text = std::fs::read_to_string(&study).unwrap();
    std::fs::write(
        &study,
        text.replace("repetitions = 2", "repetitions = 100000"),
    )
    .unwrap();
    study
}

#[test]
fn a_study_at_the_largest_plan_with_two_trials_to_run_finishes_in_seconds() {
    // Regression: planning which groups to run was quadratic in the trials; with
    // --max-trials 2 the run wrote its 2 trials, then spun for more than 10 minutes.
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let study = huge_study(dir.path());
    let out = dir.path().join("run");
    let mut child = run(
        study.to_str().unwrap(),
        &model,
        &["--max-trials", "2", "--out"],
    )
    .arg(&out)
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let started = Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            panic!("still running after 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(code.success());
    assert_eq!(records(&out).len(), 2);
    assert_eq!(status(&out), "partial");
}

#[test]
fn a_stop_signal_while_a_huge_plan_is_prepared_ends_the_run_as_interrupted() {
    // Regression: SIGTERM was ignored while the plan was being prepared.
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let study = huge_study(dir.path());
    for delay in [300u64, 1500] {
        let out = dir.path().join(format!("run-{delay}"));
        let mut child = run(study.to_str().unwrap(), &model, &["--out"])
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let signalled = Instant::now();
        send_signal(child.id(), "TERM");
        let code = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                signalled.elapsed() < Duration::from_secs(30),
                "ignored SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            signalled.elapsed() < Duration::from_secs(3),
            "{:?}",
            signalled.elapsed()
        );
        assert_eq!(code.code(), Some(143), "after {delay} ms");
        if out.join("run.json").exists() {
            assert_eq!(status(&out), "interrupted", "after {delay} ms");
        }
    }
}

#[test]
fn a_stop_signal_during_the_report_stops_it_and_says_how_to_build_it() {
    // Regression: SIGTERM during the report said it was abandoning the work, then
    // finished the report and exited 0.
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let out = dir.path().join("run");
    let mut child = common::affectbench_command()
        .args([
            "run",
            "scenarios/studies/smoke.toml",
            "--repetitions",
            "20",
            "--model",
        ])
        .arg(&model)
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // The line printed once the trials are done, right before the report.
    for line in lines.by_ref() {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        if line.contains(" trials in ") {
            send_signal(child.id(), "TERM");
            break;
        }
    }
    for line in lines {
        said.push_str(&line.unwrap());
        said.push('\n');
    }
    let code = child.wait().unwrap();
    assert_eq!(code.code(), Some(143), "{said}");
    assert!(said.contains("affectbench report"), "{said}");
    assert!(!out.join("report.html").exists(), "{said}");
    assert_eq!(status(&out), "success", "the run itself was whole");
}

#[test]
fn a_closed_stderr_does_not_fail_the_run() {
    // Regression: writing progress to a closed stderr (a pipe to `head` that ended, a
    // closed terminal) panicked: the run was recorded as `error` and exited 101.
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let out = dir.path().join("run");
    let mut child = run("scenarios/studies/smoke.toml", &model, &["--out"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    drop(child.stdout.take());
    let code = child.wait().unwrap();
    assert!(code.success(), "{code:?}");
    assert_eq!(status(&out), "success");
}
