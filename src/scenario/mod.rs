//! Experiments as data: the files under `scenarios/` (inductions, regulations,
//! instruments, tasks, studies), read with serde (unknown fields rejected) and validated
//! into domain types. Every error names the file, the line and what to change.
//!
//! Each file carries `id`, `version`, `description`, `source` and `licence`; results
//! record the id, version and sha256 of every file a run used.

pub mod induction;
pub mod instrument;
pub mod internal_states;
pub mod known_valence;
pub mod study;
pub mod task;

pub use induction::{Induction, Regulation, Turn, Variant};
pub use instrument::{Instrument, Item, OptionSpec, Response, Scoring};
pub use study::{Condition, Order, Study};
pub use task::{Judge, StemTask};

use crate::chat::sha256_hex;
use crate::error::{toml_error, Error, IoContext, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Identity of a scenario file, as recorded in results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileInfo {
    pub id: String,
    pub version: u32,
    pub path: PathBuf,
    pub sha256: String,
    pub source: String,
    pub licence: String,
}

/// Reads and deserialises a TOML file, returning the value, its text and its info.
pub(crate) fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<(T, String)> {
    let text = std::fs::read_to_string(path).with_path(path)?;
    let value = toml::from_str(&text).map_err(|e| toml_error(path, &text, e))?;
    Ok((value, text))
}

/// A validation error pointing at the first line that contains `needle`.
pub(crate) fn invalid(path: &Path, text: &str, needle: &str, message: String) -> Error {
    let line = text
        .lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or(1);
    Error::DataFile {
        path: path.to_path_buf(),
        line,
        message,
    }
}

pub(crate) fn info(
    path: &Path,
    text: &str,
    id: &str,
    version: u32,
    source: &str,
    licence: &str,
) -> Result<FileInfo> {
    if !is_plain_id(id) {
        return Err(invalid(path, text, "id", format!("id '{id}' must be letters, digits, '.', '_' or '-' (no '/', no '..'): ids name files and directories of results")));
    }
    Ok(FileInfo {
        id: id.to_string(),
        version,
        path: path.to_path_buf(),
        sha256: sha256_hex(text.as_bytes()),
        source: source.to_string(),
        licence: licence.to_string(),
    })
}

/// Refuses a name that a report or run directory turns into a file or folder name (an
/// induction's emotion becomes `figures/emotion-NAME.svg`, a subscale a score column),
/// at load, naming the file and line: found only at report time, after every trial
/// had run, it cost the whole run its report.
pub(crate) fn check_plain_name(path: &Path, text: &str, field: &str, value: &str) -> Result<()> {
    if is_plain_id(value) {
        return Ok(());
    }
    Err(invalid(
        path,
        text,
        &format!("\"{value}\""),
        format!(
            "{field} '{value}' must be letters, digits, '.', '_' or '-' (no '/', no '..', \
             at most 100 characters): it names files and columns of results"
        ),
    ))
}

/// An id that is safe as a path component and readable in tables.
pub(crate) fn is_plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && !id.starts_with('.')
        && !id.contains("..")
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Everything under a `scenarios/` directory, by key.
#[derive(Debug, Clone, Default)]
pub struct Library {
    pub root: PathBuf,
    /// Keyed by emotion (`anxiety`, ..., `neutral`).
    pub inductions: BTreeMap<String, Induction>,
    /// Keyed by strategy (`breathing`, `reappraisal`, `neutral-control`, `none`).
    pub regulations: BTreeMap<String, Regulation>,
    /// Keyed by id (`vas`, `anxiety-state`, ...).
    pub instruments: BTreeMap<String, Instrument>,
    pub tasks: BTreeMap<String, StemTask>,
}

impl Library {
    /// Loads every `.toml` file in the four data directories under `root`.
    pub fn load(root: &Path) -> Result<Self> {
        let mut lib = Library {
            root: root.to_path_buf(),
            ..Default::default()
        };
        for path in toml_files(&root.join("inductions"))? {
            let ind = Induction::load(&path)?;
            if let Some(prev) = lib.inductions.insert(ind.emotion.clone(), ind) {
                return Err(Error::DataFile {
                    path,
                    line: 1,
                    message: format!(
                        "emotion '{}' is already defined in {}",
                        prev.emotion,
                        prev.info.path.display()
                    ),
                });
            }
        }
        for path in toml_files(&root.join("regulations"))? {
            let reg = Regulation::load(&path)?;
            if let Some(prev) = lib.regulations.insert(reg.strategy.clone(), reg) {
                return Err(Error::DataFile {
                    path,
                    line: 1,
                    message: format!(
                        "strategy '{}' is already defined in {}",
                        prev.strategy,
                        prev.info.path.display()
                    ),
                });
            }
        }
        for path in toml_files(&root.join("instruments"))? {
            let ins = Instrument::load(&path)?;
            if let Some(prev) = lib.instruments.insert(ins.info.id.clone(), ins) {
                return Err(Error::DataFile {
                    path,
                    line: 1,
                    message: format!(
                        "instrument id '{}' is already used by {}",
                        prev.info.id,
                        prev.info.path.display()
                    ),
                });
            }
        }
        for path in toml_files(&root.join("tasks"))? {
            let task = StemTask::load(&path)?;
            lib.tasks.insert(task.info.id.clone(), task);
        }
        Ok(lib)
    }
}

fn toml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_path(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    Ok(files)
}
