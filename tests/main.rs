//! The integration tests, as one test binary: each module is one area (the command line,
//! determinism, the study runner, the report, parity with reference implementations...),
//! and `common` holds what they share (tiny model writers, real-model fetching, running
//! the binary). One binary is linked once instead of once per file: measured on a 2-core
//! AVX2 EPYC (2026-12-05), a rebuild after touching src/lib.rs took 150 s instead of
//! 184 s; a build from clean took the same time either way (8.5 min), being mostly the
//! dependencies.
//!
//! `workload_memory.rs` stays a binary of its own: it installs a counting global
//! allocator, which would count every other test's allocations here.

mod common;

mod cli;
mod confirmatory;
mod determinism;
mod fixed_plan;
mod forward_parity;
mod fuzz;
mod hostile;
mod internal_states;
mod iq4_quants;
mod llamacpp_parity;
mod module_dependencies;
mod portable_binary;
mod report;
mod results_contract;
mod scenarios;
mod server;
mod server_run;
mod stats_reference;
mod study_runner;
mod tiny_models;
mod tokenizer_parity;
mod tokenizer_vocab;
