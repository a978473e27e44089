//! Servers that lie, fail, switch models, echo keys, send too much or keep a run
//! waiting: what a run records of each, on the scripted server.

use super::fake_server::{FakeServer, Fault};
use super::{all_text_under, records, status, tiny_model};
use crate::common;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// `affectbench run` of the smoke study on `spec` into `out`, at most `max_trials`.
fn run_on(spec: &str, out: &Path, max_trials: usize, env: &[(&str, &str)]) -> Output {
    let mut cmd = common::affectbench_command();
    cmd.args(["run", "scenarios/studies/smoke.toml", "--no-report"])
        .args(["--model", spec, "--out"])
        .arg(out)
        .args(["--max-trials", &max_trials.to_string()])
        .args(["--server-retries", "1", "--server-timeout", "20"])
        .env_remove("OPENAI_API_KEY")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The errors of a run's records.
fn errors(out: &Path) -> Vec<String> {
    records(out)
        .iter()
        .filter_map(|r| r["error"].as_str().map(String::from))
        .collect()
}

#[test]
fn an_honest_scripted_server_runs_the_smoke_study_with_exact_option_scores() {
    // The baseline the faults below are judged against: the same server without a
    // fault connects with prompt log-probabilities and records trials without errors.
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(Fault::None);
    let out = dir.path().join("run");
    let o = run_on(&server.spec(&tiny_model(dir.path()), ""), &out, 8, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let header = affectbench::results::read_header(&out).unwrap();
    let record = serde_json::to_string(&header.models[0].server).unwrap();
    assert!(record.contains("prompt_logprobs"), "{record}");
    assert_eq!(records(&out).len(), 8);
    assert!(errors(&out).is_empty(), "{:?}", errors(&out));
}

#[test]
fn a_positive_log_probability_from_a_server_is_recorded_as_a_failure_not_a_number() {
    // Regression: an option mass of 29.6 was recorded as valid.
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(Fault::PositiveLogprob);
    let out = dir.path().join("run");
    run_on(&server.spec(&tiny_model(dir.path()), ""), &out, 6, &[]);
    let errors = errors(&out);
    assert_eq!(
        errors.len(),
        records(&out).len(),
        "every trial refused: {errors:?}"
    );
    assert!(
        errors.iter().all(|e| e.contains("no distribution has")),
        "{errors:?}"
    );
}

#[test]
fn an_echoed_reply_one_position_longer_than_sent_is_refused_not_read_shifted() {
    // Regression: the values were read one position late and recorded as valid.
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(Fault::ExtraPosition);
    let out = dir.path().join("run");
    run_on(&server.spec(&tiny_model(dir.path()), ""), &out, 6, &[]);
    let errors = errors(&out);
    assert_eq!(errors.len(), records(&out).len(), "{errors:?}");
    assert!(
        errors.iter().all(|e| e.contains("positions for the")),
        "{errors:?}"
    );
}

#[test]
fn another_model_answering_mid_run_stops_the_run() {
    // Regression: a reply's `model` field changing mid-run went unnoticed.
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(Fault::SwitchModelAfter(3));
    let out = dir.path().join("run");
    let o = run_on(&server.spec(&tiny_model(dir.path()), ""), &out, 40, &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("changed mid-run"), "{}", stderr(&o));
    assert_eq!(status(&out), "error");
    assert!(records(&out).len() <= 3, "{}", records(&out).len());
}

#[test]
fn trials_the_server_keeps_failing_are_left_for_resume_not_recorded_as_done() {
    // Regression: HTTP 500s were kept as error records, never asked again on --resume,
    // in a run marked success.
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(Fault::Fail500);
    let out = dir.path().join("run");
    let o = run_on(&server.spec(&tiny_model(dir.path()), ""), &out, 6, &[]);
    assert!(records(&out).is_empty(), "{:?}", records(&out));
    assert_ne!(status(&out), "success");
    assert!(stderr(&o).contains("--resume"), "{}", stderr(&o));
}

#[test]
fn a_key_the_server_repeats_is_redacted_everywhere_the_run_writes() {
    // Regression: the key was stored in trials.jsonl's and run.json's error fields and
    // printed on stderr.
    let key = "sk-hostile-echo-0123456789abcdef";
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(Fault::EchoKey);
    let out = dir.path().join("run");
    let spec = server.spec(&tiny_model(dir.path()), "&key_env=LAB_KEY");
    let o = run_on(&spec, &out, 12, &[("LAB_KEY", key)]);
    assert!(
        server
            .seen
            .authorization
            .lock()
            .unwrap()
            .iter()
            .any(|a| a.contains(key)),
        "the key was sent"
    );
    // The refusal ends the run where its first request is made (rendering a group's
    // protocol turns): run.json's error and stderr carry the server's words.
    let header = affectbench::results::read_header(&out).unwrap();
    assert_eq!(header.status.name(), "error");
    assert!(
        header
            .error
            .as_deref()
            .is_some_and(|e| e.contains("[redacted key]")),
        "{:?}",
        header.error
    );
    let everything = format!(
        "{}{}{}",
        all_text_under(&out),
        stderr(&o),
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(!everything.contains(key), "the key leaked");
    assert!(everything.contains("[redacted key]"));
}

#[test]
fn a_key_the_server_repeats_in_a_trials_own_request_is_redacted_in_its_record() {
    let key = "sk-hostile-trial-0123456789abcdef";
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(Fault::EchoKeyOnOptions);
    let out = dir.path().join("run");
    let spec = server.spec(&tiny_model(dir.path()), "&key_env=LAB_KEY");
    let o = run_on(&spec, &out, 6, &[("LAB_KEY", key)]);
    let errors = errors(&out);
    assert!(!errors.is_empty(), "{}", stderr(&o).replace(key, "KEY"));
    assert!(
        errors.iter().all(|e| e.contains("[redacted key]")),
        "{errors:?}"
    );
    assert!(!all_text_under(&out).contains(key) && !stderr(&o).contains(key));
}

#[test]
fn a_reply_over_the_limit_is_said_to_be_too_large_and_where_the_limit_is_set() {
    // Regression: a reply over ureq's 10 MB was reported as an unreachable server.
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(Fault::Huge(2 << 20));
    let out = dir.path().join("run");
    let o = run_on(
        &server.spec(&tiny_model(dir.path()), ""),
        &out,
        2,
        &[("AFFECTBENCH_SERVER_MAX_REPLY_MB", "1")],
    );
    let said = format!("{}{:?}", stderr(&o), errors(&out));
    assert!(
        said.contains("larger than 1 MiB") && said.contains("AFFECTBENCH_SERVER_MAX_REPLY_MB"),
        "{said}"
    );
    assert!(!said.contains("no answer after"), "{said}");
}

#[test]
fn a_stop_signal_during_server_retries_ends_the_run_within_seconds() {
    // Regression: SIGTERM was not acted on until every retry chain ended (here 1 + 2 +
    // 4 + 8 + 16 s of backoff).
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(Fault::Unavailable);
    let out = dir.path().join("run");
    let mut child = common::affectbench_command()
        .args(["run", "scenarios/studies/smoke.toml", "--no-report"])
        .args([
            "--model",
            &server.spec(&tiny_model(dir.path()), ""),
            "--out",
        ])
        .arg(&out)
        .args(["--server-retries", "5"])
        .env_remove("OPENAI_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while server
        .seen
        .study_requests
        .load(std::sync::atomic::Ordering::SeqCst)
        == 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no study request came"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    super::send_signal(child.id(), "TERM");
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(20),
            "still running 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(code.code(), Some(143));
    assert_eq!(status(&out), "interrupted");
}

#[test]
fn resume_sends_a_key_only_where_the_command_vouches_for_its_destination() {
    // Regression: --resume sent whatever variable run.json's spec named (key_env=) to
    // whatever host it named, so an edited run.json could exfiltrate any variable.
    let secret = "the-value-of-another-variable-0123";
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(Fault::None);
    let out = dir.path().join("run");
    let spec = server.spec(&tiny_model(dir.path()), "&key_env=LAB_KEY");
    let o = run_on(&spec, &out, 2, &[("LAB_KEY", "sk-lab-key-0123456789")]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Someone edits run.json to send another variable.
    let header = out.join("run.json");
    let text = std::fs::read_to_string(&header).unwrap();
    assert!(text.contains("key_env=LAB_KEY"), "{text}");
    std::fs::write(
        &header,
        text.replace("key_env=LAB_KEY", "key_env=OTHER_SECRET"),
    )
    .unwrap();
    let resume = |extra: &[&str]| {
        common::affectbench_command()
            .args(["run", "--no-report", "--max-trials", "2", "--resume"])
            .arg(&out)
            .args(extra)
            .env("OTHER_SECRET", secret)
            .env_remove("OPENAI_API_KEY")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let refused = resume(&[]);
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(
        err.contains("$OTHER_SECRET") && err.contains("--send-key-to"),
        "{err}"
    );
    assert!(!err.contains(secret), "{err}");
    let sent = server.seen.authorization.lock().unwrap().clone();
    assert!(!sent.iter().any(|a| a.contains(secret)), "{sent:?}");
    // Vouched for, the resume goes ahead.
    let url = format!("http://127.0.0.1:{}/v1", server.port);
    let vouched = resume(&["--send-key-to", &url]);
    assert!(vouched.status.success(), "{}", stderr(&vouched));
}
