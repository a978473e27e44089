//! Hostile inputs and hostile servers: each test is the regression test of one defect a
//! hostile probe of the binary found (issue 47), named for what now holds. Malformed
//! model files and scenario names are in `model_files`, run directories, signals and
//! closed streams in `run_dirs`, misbehaving servers (on the scripted server of
//! `fake_server`) in `servers`.

mod fake_server;
mod model_files;
mod run_dirs;
mod servers;

use crate::common;
use std::path::{Path, PathBuf};

/// The tiny study model in `dir`.
fn tiny_model(dir: &Path) -> PathBuf {
    common::tiny_study_model(dir)
}

/// Every file below `dir` with its bytes, by path.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Everything `dir` holds, as text (bytes that are not UTF-8 replaced), for checking
/// that a secret is nowhere.
fn all_text_under(dir: &Path) -> String {
    files_under(dir)
        .iter()
        .map(|(_, bytes)| String::from_utf8_lossy(bytes).into_owned())
        .collect()
}

/// The trial records of a run directory, as JSON values.
fn records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("trials.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// run.json's status.
fn status(dir: &Path) -> String {
    affectbench::results::read_header(dir)
        .unwrap()
        .status
        .name()
        .to_string()
}

/// Sends signal `name` (TERM, INT, HUP) to `pid`.
fn send_signal(pid: u32, name: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name} {pid}");
}
