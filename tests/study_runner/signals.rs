//! Stop signals: the first is acknowledged and abandons the unit in progress, a second
//! stops at once; either way run.json says `interrupted` and a resume completes the run.

use super::*;

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
        resume_to_the_end(&stopped);
        assert_eq!(
            records_by_id(&stopped),
            records_by_id(&whole),
            "SIG{signal}"
        );
    }
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
