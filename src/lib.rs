//! affectbench: psychology experiments (affect induction, regulation, negativity bias)
//! on open-weight language models, run locally and reproducibly.
//!
//! Layers, bottom up:
//! - `registry`, `cache`, `fetch`: which models exist, where their files come from, and
//!   how they reach the local cache verified.
//! - `gguf`, `tokenizer`, `chat`: reading model files, building the tokenizer from GGUF
//!   metadata, rendering chat templates.
//! - `kernels`, `model`: the forward pass (our own, on candle ops, with packed int8 CPU
//!   kernels) and candle-transformers' as a reference.
//! - `sampling`, `generate`: seeded, per-sequence sampling and the generation loop.

pub mod cache;
pub mod chat;
pub mod error;
pub mod fetch;
pub mod generate;
pub mod gguf;
pub mod kernels;
pub mod model;
pub mod registry;
pub mod sampling;
pub mod tokenizer;

pub use error::{Error, Result};
