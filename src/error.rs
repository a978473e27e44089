//! The library's error type: one enum whose variants carry the file, key or line a user
//! needs to find and fix the problem. The binary wraps these with `anyhow` for display.

use std::path::PathBuf;

/// Everything that can go wrong in the library, with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}:{line}: {message}")]
    DataFile {
        path: PathBuf,
        line: usize,
        message: String,
    },

    #[error("unknown model '{name}': not in the registry ({known}), not a .gguf file and not a directory with config.json. Run `affectbench models list`.")]
    UnknownModel { name: String, known: String },

    #[error("model '{name}' is not in the cache yet; run `affectbench models fetch {name}` first")]
    NotFetched { name: String },

    #[error("{path}: sha256 is {actual}, expected {expected}; the file is corrupt or incomplete and was not used. Run `affectbench models fetch --force {name}`.")]
    Checksum {
        name: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },

    #[error("fetching '{name}' failed: {message}")]
    Fetch { name: String, message: String },

    #[error("{path}: not a readable GGUF file: {message}")]
    Gguf { path: PathBuf, message: String },

    #[error("{path}: metadata key '{key}' {problem}")]
    Metadata {
        path: PathBuf,
        key: String,
        problem: String,
    },

    /// `supported` lists the architectures this build runs (`model::arch::supported_names`).
    #[error("{path}: architecture '{arch}' is not supported (supported: {supported})")]
    UnsupportedArchitecture {
        path: PathBuf,
        arch: String,
        supported: String,
    },

    #[error("{path}: tensor '{tensor}': {message}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        message: String,
    },

    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },

    #[error("chat template: {0}")]
    ChatTemplate(String),

    #[error("prompt has {tokens} tokens but the model's context is {context} tokens; shorten the prompt or lower --max-tokens")]
    ContextOverflow { tokens: usize, context: usize },

    #[error("invalid sampling settings: {0}")]
    Sampling(String),

    #[error("device '{0}' is not available: {1}")]
    Device(String, String),

    #[error("run: {0}")]
    Run(String),

    #[error("the model produced non-finite numbers ({0}); its file is broken (check metadata such as the rms epsilon, and the tensor data) or the arithmetic overflowed")]
    NonFinite(String),

    /// A signal stopped the work (a run after the trial in progress, a report before it
    /// wrote anything more); `resume` is the command that continues it.
    /// `signal_name` is the signal as a user knows it (`study::interrupt::name`).
    #[error("interrupted by {signal_name}; what was finished is kept; continue with: {resume}")]
    Interrupted {
        signal: i32,
        signal_name: &'static str,
        resume: String,
    },

    #[error("report: {0}")]
    Report(String),

    /// An OpenAI-compatible server model: its spec, or what the server answered, with
    /// the fix. Never carries the API key.
    #[error("server model {0}")]
    Server(String),

    /// A server that did not answer after every retry (down, restarting, unreachable):
    /// a run stops here as interrupted, not failed, since a resume completes it.
    #[error("server model {0}")]
    ServerUnreachable(String),

    /// A request the server kept failing (HTTP 500 after its retries): the trial is not
    /// recorded, so that `--resume` asks it again instead of keeping a hole.
    #[error("server model {0}")]
    ServerFailed(String),

    /// The server is no longer the one the run started on (another model id answers):
    /// the run stops at once, since every later number would belong to another model.
    #[error("server model {0}")]
    ServerChanged(String),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path to an I/O error.
pub(crate) trait IoContext<T> {
    fn with_path(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn with_path(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
    }
}

/// Turns a toml deserialisation error into a `DataFile` error with a 1-based line number.
/// For an unknown field, the line is that of the field itself (toml reports the start of
/// its table).
pub(crate) fn toml_error(path: &std::path::Path, text: &str, err: toml::de::Error) -> Error {
    let start = err.span().map(|s| s.start.min(text.len())).unwrap_or(0);
    let mut line = text[..start].lines().count().max(1);
    if err.span().is_none() {
        line = 0;
    }
    let message = err.message().to_string();
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next())
    {
        let from = text[..start].matches('\n').count();
        if let Some(offset) = text.lines().skip(from).position(|l| {
            let l = l.trim_start();
            l.starts_with(field) && l[field.len()..].trim_start().starts_with('=')
        }) {
            line = from + offset + 1;
        }
    }
    Error::DataFile {
        path: path.to_path_buf(),
        line,
        message,
    }
}
