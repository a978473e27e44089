//! The results contract: what a run directory holds, as types. The runner writes these
//! and every reader (the report, the terminal summary, merges, tests) reads them; none
//! of them looks a field up by string.
//!
//! A run directory holds `run.json` (a `RunHeader`: study, provenance, engine, status)
//! and `trials.jsonl` (one `TrialRecord` per line). Both carry `schema`; the current one
//! is `SCHEMA`. Older schemas are read by `read` and mapped to the current types, so
//! every reader sees one shape whatever made the run.
//!
//! Modules: `header` (run.json), `trial` (one record), `read` (reading either schema),
//! `schema_v1` (the frozen schema-1 wire types), `second_judge` (another model's
//! judgement of the completions, `judges/*.jsonl`), `states` (hidden states captured per
//! trial, `states/`), `directions` (steering directions, written by `probe` and read by
//! `run --directions`), `probes` (what `probe` writes: `probe.json` and the accuracy
//! rows), `csv_table` (the one CSV writer every table goes through), `compare` (two runs' agreement,
//! trial by trial). What is computed from these records (scale scores, the validity gate, the
//! calibrated read-out) lives in `crate::measures`.

pub mod compare;
pub mod csv_table;
pub mod directions;
pub mod header;
pub mod known_answers;
pub mod probes;
pub mod read;
mod schema_v1;
pub mod second_judge;
pub mod states;
pub mod trial;

pub use header::{
    EngineRecord, InstrumentScoring, MergedInput, ModelProvenance, RunHeader, RunStatus,
    ScenarioFile, ScoredItem, StudyRecord,
};
pub use read::{read_header, read_trials, TrialsFile};
pub use second_judge::{read_second_judges, SecondJudgeRecord};
pub use trial::{
    CalibratedReadout, ChoiceReadout, GenerateReadout, JudgeDetail, LabelBinding, Question,
    RecordKind, Timing, TrialRecord,
};

/// The schema `run.json` and `trials.jsonl` are written in. 2: typed question, timing,
/// status and study; the engine configuration in `engine`; each trial carries its seed.
pub const SCHEMA: u32 = 2;

/// The current time as RFC 3339 (seconds), as run.json records it.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
