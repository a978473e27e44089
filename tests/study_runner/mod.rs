//! The study runner on a tiny random-weight model, one file per topic; the helpers
//! here (a tiny model, a smoke-study configuration, records without timings, a
//! long run to signal) are shared by them.

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

mod design;
mod failures;
mod readouts;
mod resume;
mod shards;
mod signals;

fn tiny_model(dir: &Path) -> PathBuf {
    common::tiny_study_model(dir)
}

/// The smoke study's records: 32 trials (2 conditions x 2 repetitions x 6 items, and 8
/// completions), and 12 content-free calibration prompts (its one instrument x 2 label
/// styles x 2 counterbalanced orders x 3 content-free texts).
const SMOKE_RECORDS: usize = 32 + 12;

fn config(model: &Path, out: &Path, max_trials: Option<usize>, seed: Option<u64>) -> RunConfig {
    RunConfig {
        study_path: PathBuf::from("scenarios/studies/smoke.toml"),
        scenarios_root: None,
        models: vec![ModelRef::GgufFile(model.to_path_buf())],
        out_dir: out.to_path_buf(),
        seed,
        repetitions: None,
        max_trials,
        repetitions_now: None,
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
        server: Default::default(),
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
pub(crate) fn records_by_id(dir: &Path) -> Vec<(String, serde_json::Value)> {
    let mut v = records(dir);
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// `affectbench run` of the smoke study with 20 repetitions (long enough to stop or
/// fail mid-way) into `out`.
fn long_smoke_command(model: &Path, out: &Path) -> std::process::Command {
    let mut run = common::affectbench_command();
    run.args([
        "run",
        "scenarios/studies/smoke.toml",
        "--repetitions",
        "20",
        "--no-report",
        "--model",
    ])
    .arg(model)
    .arg("--out")
    .arg(out);
    run
}

/// Spawns `long_smoke_command`, stderr into `out.log`.
fn spawn_long_run(model: &Path, out: &Path) -> std::process::Child {
    let log = std::fs::File::create(out.with_extension("log")).unwrap();
    long_smoke_command(model, out)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// `run --resume dir`, which must succeed.
pub(crate) fn resume_to_the_end(dir: &Path) {
    let resumed = common::affectbench_command()
        .args(["run", "--no-report", "--resume"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
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
