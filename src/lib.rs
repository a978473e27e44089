//! affectbench: psychology experiments (affect induction, regulation, negativity bias)
//! on open-weight language models, run locally and reproducibly.
//!
//! Layers, roughly bottom up (`tests/module_dependencies.rs` checks that no top-level
//! module depends on itself round a cycle, and that `error` and `stats` import nothing
//! of ours):
//! - Importing nothing of ours: `error` (one error type, its text carried by its
//!   variants), `stats` (descriptives, bootstrap, effect sizes, the mixed model), `rng`
//!   (the seeded streams), `quant` (packed types), `interrupt` (stop signals), `cluster`
//!   (what a batch scheduler says: shard, CPUs), `secrets` (the keys read, and the one
//!   redaction of them applied to every text written). Then `lock` (one writer per run
//!   directory).
//! - `kernels`, `device_info`, `arch`: the int8 kernels and their dispatch, the CPU and
//!   GPU by name, the architecture table.
//! - `registry`, `cache`, `fetch`: which models exist, where their files come from, and
//!   how they reach the local cache verified. `endpoint`: an OpenAI-compatible server
//!   named as a model; `server`: the client that talks to it and a trial's requests.
//! - `gguf`, `gguf_check`, `tokenizer`, `chat`: reading model files, building the
//!   tokenizer from GGUF metadata, rendering chat templates.
//! - `model`: the forward pass (our own, on candle ops, with the packed int8 CPU
//!   kernels) and candle-transformers' as a reference.
//! - `sampling`, `generate`, `option_scoring`, `engine`, `unit_work`: seeded per-row
//!   sampling, generation, option log-probabilities, the engine configuration, and a
//!   batch unit's work on either device.
//! - `scenario`, `study`, `results`, `measures`: experiments as data, the resumable
//!   runner, the typed results contract every reader uses (and its one CSV writer), and
//!   what is computed from the records (scale scores, the validity gate, calibration).
//! - `report`, `probe`, `bench`, `bench_units`: statistics, tables and figures from run
//!   directories; linear probes of captured hidden states and the steering directions
//!   they give; the throughput benchmarks.

#![deny(unsafe_op_in_unsafe_fn)]

/// A line on stderr that is dropped, not a panic, where stderr is closed (a pipe to
/// `head` that ended, a closed terminal, a job log on a full disk): `eprintln!` panics
/// there, which turned a run whose progress nobody reads into a run recorded as failed.
/// Every line of ours to stderr goes through this.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod arch;
pub mod bench;
pub mod bench_units;
pub mod cache;
pub mod chat;
pub mod cluster;
pub mod device_info;
pub mod endpoint;
pub mod engine;
pub mod error;
pub mod fetch;
pub mod generate;
pub mod gguf;
pub mod gguf_check;
pub mod interrupt;
pub mod kernels;
pub mod lock;
pub mod measures;
pub mod model;
pub mod option_scoring;
pub mod probe;
pub mod quant;
pub mod registry;
pub mod report;
pub mod results;
pub mod rng;
pub mod sampling;
pub mod scenario;
pub mod secrets;
pub mod server;
pub mod stats;
pub mod study;
pub mod tokenizer;
pub mod unit_work;

pub use error::{Error, Result};

/// All available cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Sets the compute threads for candle's ops and our kernels. Call once, before any
/// model work. candle reads `RAYON_NUM_THREADS` on every op and otherwise re-counts the
/// CPUs each time (reading /proc), which cost ~10% of decode time.
///
/// `candle_pool` says whether candle's own barrier pool gets the threads too: only the
/// candle-op paths (`--candle-kernels`, `--ops reference`) compute on it. Otherwise it
/// runs a few large elementwise ops inline, because its workers spin between uses and
/// would take cores from the kernel pool (idle prefill was ~10% faster without it), and
/// its caller spins without bound on a shared node (see `kernels::pool`).
pub fn set_threads(
    n: usize,
    candle_pool: bool,
) -> std::result::Result<(), rayon::ThreadPoolBuildError> {
    kernels::pool::configure(n);
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        let candle = if candle_pool { n.max(1) } else { 1 };
        std::env::set_var("CANDLE_NUM_THREADS", candle.to_string());
    }
    std::env::set_var("RAYON_NUM_THREADS", n.max(1).to_string());
    match rayon::ThreadPoolBuilder::new()
        .num_threads(n.max(1))
        .build_global()
    {
        Ok(()) => Ok(()),
        // Already initialised (e.g. in tests): keep the existing pool.
        Err(_) if rayon::current_num_threads() > 0 => Ok(()),
        Err(e) => Err(e),
    }
}
