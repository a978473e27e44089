//! Running a study: expansion into trials (`plan`), conversation assembly (`prompt`),
//! answer parsing (`parse`), a group's shared prefix and scheduling (`group`), each
//! trial's read-outs (`readouts`; the generated answers with their re-asks, `answers`;
//! the judge's shared prompt prefix, `judge_prefix`), the run directory protocol (`run_dir`), provenance
//! (`provenance`), the end-of-run table (`summary`), the positive-control study of
//! `validate-instrument` (`validate`), a second model judging a finished run's
//! completions (`second_judge`), what a run is of, new or resumed (`target`),
//! capture and steering set-up (`internals`), trials on server models
//! (`server_trials`) and the sequence that ties them together (`runner`). What a run writes is defined in `crate::results`.
//!
//! Concepts:
//! - A *group* is (model, condition, repetition): the conversation prefix its items
//!   share (system prompt, induction, regulation, with any generated assistant turns).
//! - A *trial* is one question asked after a group's prefix (an item, or a whole
//!   instrument with `items_per_conversation = "all"`) or one sentence completion.
//! - Ids are hashes of coordinates, never indices, so adding a condition or reordering
//!   the study file leaves every other trial's id, seed and result unchanged.

pub mod answers;
pub mod group;
pub mod internals;
pub mod judge_prefix;
pub mod known_answers;
pub mod merge;
pub mod parse;
pub mod plan;
pub mod prereg;
pub mod progress;
pub mod prompt;
pub mod provenance;
pub mod readouts;
pub mod run_dir;
pub mod runner;
pub mod second_judge;
pub mod server_trials;
pub mod summary;
pub mod target;
pub mod validate;
