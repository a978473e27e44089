//! Schema 1, frozen: the wire types of runs made before schema 2, and their mapping onto
//! the current types. Never edit these to follow the current schema: they describe
//! files that already exist.
//!
//! What changed in schema 2: `device` and `threads` moved into `engine` (which also
//! records the weights, int8 kernel and op path that ran; unknown for schema 1); the
//! trial's seed is recorded with each trial (schema 1: the header's seed); `scoring` may
//! be absent in the oldest schema-1 runs.

use super::header::{
    EngineRecord, InstrumentScoring, ModelProvenance, RunHeader, RunStatus, ScenarioFile,
    StudyRecord,
};
use super::trial::{ChoiceReadout, GenerateReadout, Question, RecordKind, Timing, TrialRecord};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub(super) struct HeaderV1 {
    pub schema: u32,
    pub affectbench_version: String,
    pub git_revision: String,
    pub status: RunStatus,
    pub error: Option<String>,
    pub started: String,
    pub ended: Option<String>,
    pub study_path: String,
    pub study: StudyRecord,
    pub scenario_files: Vec<ScenarioFile>,
    pub models: Vec<ModelProvenance>,
    pub seed: u64,
    pub repetitions: usize,
    pub device: String,
    pub threads: usize,
    pub trials_planned: usize,
    #[serde(default)]
    pub shard: Option<String>,
    #[serde(default)]
    pub scoring: Vec<InstrumentScoring>,
}

impl From<HeaderV1> for RunHeader {
    fn from(h: HeaderV1) -> Self {
        RunHeader {
            schema: h.schema,
            affectbench_version: h.affectbench_version,
            git_revision: h.git_revision,
            status: h.status,
            error: h.error,
            started: h.started,
            ended: h.ended,
            study_path: h.study_path,
            study: h.study,
            scenario_files: h.scenario_files,
            models: h.models,
            seed: h.seed,
            repetitions: h.repetitions,
            engine: EngineRecord {
                device: h.device,
                threads: h.threads,
                batch_size: None,
                weights: None,
                int8_kernel: None,
                ops: None,
            },
            trials_planned: h.trials_planned,
            shard: h.shard,
            scoring: h.scoring,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct TrialV1 {
    #[serde(rename = "type")]
    pub kind: RecordKind,
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
    pub question: Question,
    pub prompt: String,
    pub prompt_sha256: String,
    pub prompt_tokens: usize,
    pub generate: Option<GenerateReadout>,
    pub choice: Option<ChoiceReadout>,
    pub completion: Option<String>,
    #[serde(default)]
    pub judge: Option<ChoiceReadout>,
    pub error: Option<String>,
    pub timing: Timing,
}

impl TrialV1 {
    /// The current record; `seed` is the run's (schema 1 kept it in run.json only).
    pub fn into_current(self, seed: u64) -> TrialRecord {
        TrialRecord {
            kind: self.kind,
            schema: self.schema,
            trial_id: self.trial_id,
            seed,
            group_id: self.group_id,
            model: self.model,
            condition: self.condition,
            induction: self.induction,
            induction_variant: self.induction_variant,
            regulation: self.regulation,
            regulation_variant: self.regulation_variant,
            repetition: self.repetition,
            question: self.question,
            prompt: self.prompt,
            prompt_sha256: self.prompt_sha256,
            prompt_tokens: self.prompt_tokens,
            generate: self.generate,
            choice: self.choice,
            completion: self.completion,
            judge: self.judge,
            error: self.error,
            timing: self.timing,
        }
    }
}
