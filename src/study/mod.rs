//! Running a study: expansion into trials (`plan`), conversation assembly (`prompt`),
//! the two answer read-outs (`parse` for generated answers, `choice` for option
//! probabilities), result records (`record`) and the resumable runner (`runner`).
//!
//! Concepts:
//! - A *group* is (model, condition, repetition): the conversation prefix its items
//!   share (system prompt, induction, regulation, with any generated assistant turns).
//! - A *trial* is one question asked after a group's prefix (an item, or a whole
//!   instrument with `items_per_conversation = "all"`) or one sentence completion.
//! - Ids are hashes of coordinates, never indices, so adding a condition or reordering
//!   the study file leaves every other trial's id, seed and result unchanged.

pub mod choice;
pub mod parse;
pub mod plan;
pub mod prompt;
pub mod record;
pub mod runner;
