//! What `affectbench probe` writes into `RUN_DIR/probes/`, as types: the rows of
//! `probe_accuracy.csv` and `probe_self_report.csv`, and `probe.json` (settings, method,
//! the best block per task, what was skipped). `probe` writes them; the report reads them.

use crate::error::{Error, IoContext, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Where a run directory keeps the probe results.
pub const PROBES_DIR: &str = "probes";

/// The probe run's summary file inside `PROBES_DIR`.
pub const PROBE_FILE: &str = "probe.json";

fn run_err(m: String) -> Error {
    Error::Run(m)
}

/// The settings a probe run used.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeSettings {
    /// Label permutations for the null.
    pub permutations: usize,
    /// L2 strength on standardised features (mean loss + lambda/2 |w|^2).
    pub lambda: f64,
    /// Seed of the permutations.
    pub seed: u64,
}

/// `probe.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeFile {
    pub settings: ProbeSettings,
    pub method: String,
    pub best_blocks: Vec<BestBlock>,
    #[serde(default)]
    pub skipped: Vec<String>,
}

impl ProbeFile {
    /// Writes the file as JSON (keys in serde_json's map order, as before this type
    /// existed).
    pub fn write(&self, path: &Path) -> Result<()> {
        let value =
            serde_json::to_value(self).map_err(|e| run_err(format!("{}: {e}", path.display())))?;
        std::fs::write(
            path,
            serde_json::to_string_pretty(&value).unwrap_or_default(),
        )
        .with_path(path)
    }
}

/// One row of `probe_accuracy.csv`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccuracyRow {
    pub model: String,
    pub task: String,
    pub kind: String,
    pub a: String,
    pub b: String,
    /// `answer` (the answer position) or `prefix` (mean over the conversation).
    pub site: String,
    pub block: usize,
    pub accuracy: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub null_mean: f64,
    pub null_p95: f64,
    pub p_permutation: f64,
    /// Accuracy of decoding the conversation's length (above the median) instead.
    pub control_accuracy: f64,
    /// Share of conversations whose length label equals their condition label.
    pub control_agreement: f64,
    pub samples: usize,
    pub conversations: usize,
    pub folds: usize,
    pub permutations: usize,
}

/// One row of `probe_self_report.csv`: the answer-site probe's out-of-fold score
/// against the self-report (z within item), across trials and within condition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SelfReportRow {
    pub model: String,
    pub task: String,
    pub block: usize,
    pub r: f64,
    pub r_within_condition: f64,
    pub trials: usize,
}

/// The best block of a task at the answer site, with its family-wise p (the max over
/// blocks of each permutation's accuracy is the null).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BestBlock {
    pub model: String,
    pub task: String,
    pub block: usize,
    pub accuracy: f64,
    pub p_max_over_blocks: f64,
    pub self_report_r: f64,
}

/// What `probe` wrote into a run directory (all empty where it has not run).
#[derive(Debug, Clone, Default)]
pub struct SavedProbes {
    pub accuracy: Vec<AccuracyRow>,
    pub self_report: Vec<SelfReportRow>,
    pub best: Vec<BestBlock>,
}

/// Reads `RUN_DIR/probes/` if `probe` wrote it.
pub fn read_probes(run_dir: &Path) -> Result<SavedProbes> {
    let dir = run_dir.join(PROBES_DIR);
    if !dir.join("probe_accuracy.csv").exists() {
        return Ok(SavedProbes::default());
    }
    fn rows<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
        let mut r = csv::Reader::from_path(path)
            .map_err(|e| run_err(format!("{}: {e}", path.display())))?;
        r.deserialize()
            .collect::<std::result::Result<Vec<T>, _>>()
            .map_err(|e| run_err(format!("{}: {e}", path.display())))
    }
    let meta_path = dir.join(PROBE_FILE);
    let meta: ProbeFile =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).with_path(&meta_path)?)
            .map_err(|e| run_err(format!("{}: {e}", meta_path.display())))?;
    Ok(SavedProbes {
        accuracy: rows(&dir.join("probe_accuracy.csv"))?,
        self_report: rows(&dir.join("probe_self_report.csv"))?,
        best: meta.best_blocks,
    })
}
