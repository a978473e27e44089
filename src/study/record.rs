//! What a run writes: `run.json` (the header: provenance and status) and `trials.jsonl`
//! (one tagged, versioned record per trial, appended and flushed one at a time). These
//! are wire types: renaming a field is a format change, so `SCHEMA` is bumped with it.

use crate::scenario::FileInfo;
use serde::{Deserialize, Serialize};

pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunHeader {
    pub schema: u32,
    pub affectbench_version: String,
    pub git_revision: String,
    pub status: String,
    pub error: Option<String>,
    pub started: String,
    pub ended: Option<String>,
    pub study_path: String,
    pub study: serde_json::Value,
    pub scenario_files: Vec<serde_json::Value>,
    pub models: Vec<ModelProvenance>,
    pub seed: u64,
    pub repetitions: usize,
    pub device: String,
    pub threads: usize,
    pub trials_planned: usize,
    /// "index/count" when this directory holds one shard of the plan.
    #[serde(default)]
    pub shard: Option<String>,
    /// How each instrument used turns item answers into scores, so a report needs no
    /// scenario files (absent in runs made before it was recorded).
    #[serde(default)]
    pub scoring: Vec<InstrumentScoring>,
}

/// An instrument's scoring rule as recorded in run.json.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InstrumentScoring {
    pub id: String,
    /// "sum" or "mean" of keyed item values, per subscale.
    pub scoring: String,
    pub multiplier: f64,
    pub min: f64,
    pub max: f64,
    pub items: Vec<ScoredItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScoredItem {
    pub id: String,
    /// The subscale the item scores on (the instrument id when it has none).
    pub subscale: String,
    pub reverse: bool,
}

impl InstrumentScoring {
    pub fn from_instrument(ins: &crate::scenario::Instrument) -> Self {
        let (min, max) = ins.response.range();
        InstrumentScoring {
            id: ins.info.id.clone(),
            scoring: match ins.scoring {
                crate::scenario::Scoring::Sum => "sum".into(),
                crate::scenario::Scoring::Mean => "mean".into(),
            },
            multiplier: ins.score_multiplier,
            min,
            max,
            items: ins
                .items
                .iter()
                .map(|it| ScoredItem { id: it.id.clone(), subscale: it.subscale.clone().unwrap_or_else(|| ins.info.id.clone()), reverse: it.reverse })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelProvenance {
    pub label: String,
    pub path: String,
    pub sha256: String,
    pub architecture: String,
    pub tokenizer_sha256: String,
    pub chat_template_sha256: Option<String>,
}

pub fn file_info_json(f: &FileInfo) -> serde_json::Value {
    serde_json::json!({ "id": f.id, "version": f.version, "path": f.path.display().to_string(), "sha256": f.sha256, "source": f.source, "licence": f.licence })
}

/// The generated read-out of one trial.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GenerateReadout {
    /// Every reply, including those that were re-asked.
    pub replies: Vec<String>,
    /// Why each unreadable reply failed (one per re-ask).
    pub failures: Vec<String>,
    /// The answer's value on the instrument's scale (before reverse keying), if read.
    pub value: Option<f64>,
    /// The value after reverse keying (what enters the scale score).
    pub keyed: Option<f64>,
    /// "greedy" or the temperature used.
    pub sampling: serde_json::Value,
    pub tokens: usize,
}

/// The probability read-out of one trial.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChoiceReadout {
    /// Labels in display order, the option value each stands for, and its probability.
    pub labels: Vec<String>,
    pub values: Vec<f64>,
    pub probs: Vec<f64>,
    /// Total probability the model put on the options before renormalising.
    pub mass: f64,
    pub expected: f64,
    pub argmax: f64,
    /// A seeded draw from the option distribution.
    pub draw: f64,
    /// The expected value after reverse keying.
    pub keyed_expected: f64,
}

/// One trial's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrialRecord {
    #[serde(rename = "type")]
    pub kind: String,
    pub schema: u32,
    pub trial_id: String,
    pub group_id: String,
    pub model: String,
    pub condition: String,
    pub induction: Option<String>,
    pub induction_variant: Option<String>,
    pub regulation: Option<String>,
    pub regulation_variant: Option<String>,
    pub repetition: usize,
    pub question: serde_json::Value,
    pub prompt: String,
    pub prompt_sha256: String,
    pub prompt_tokens: usize,
    pub generate: Option<GenerateReadout>,
    pub choice: Option<ChoiceReadout>,
    /// Sentence completions: the generated text.
    pub completion: Option<String>,
    /// Sentence completions: the model-as-judge valence read-out of the text (absent in
    /// runs made before it existed, and for tasks without a `[judge]`).
    #[serde(default)]
    pub judge: Option<ChoiceReadout>,
    pub error: Option<String>,
    pub timing: serde_json::Value,
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
