//! Reading a run directory in any schema this version knows, into the current types.
//!
//! `trials.jsonl` policy: every complete line (ending in a newline) must be a record, or
//! reading fails naming the file and line. Only the text after the last newline may be
//! incomplete, because only a crash mid-write produces it: it is reported as a torn tail
//! (a writer repairs it by cutting it off; a reader leaves it out with a note).

use super::schema_v1::{header_to_v2, trial_to_v2};
use super::{RunHeader, TrialRecord, SCHEMA};
use crate::error::{Error, IoContext, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Just the schema number of a JSON object.
#[derive(Deserialize)]
struct SchemaOnly {
    schema: u32,
}

fn data_error(path: &Path, line: usize, message: String) -> Error {
    Error::DataFile {
        path: path.to_path_buf(),
        line,
        message,
    }
}

/// Reads `dir/run.json`, mapping older schemas onto the current header.
pub fn read_header(dir: &Path) -> Result<RunHeader> {
    let path = dir.join("run.json");
    let text = std::fs::read_to_string(&path).with_path(&path)?;
    let bad = |e: serde_json::Error| data_error(&path, e.line(), e.to_string());
    let SchemaOnly { schema } = serde_json::from_str(&text).map_err(bad)?;
    match schema {
        1 => {
            let v1: serde_json::Value = serde_json::from_str(&text).map_err(bad)?;
            let v2 = header_to_v2(v1).map_err(|m| data_error(&path, 1, format!("schema 1: {m}")))?;
            serde_json::from_value(v2).map_err(|e| data_error(&path, 1, format!("schema 1: {e}")))
        }
        SCHEMA => serde_json::from_str(&text).map_err(bad),
        newer => Err(data_error(&path, 1, format!("schema {newer} is newer than this affectbench reads ({SCHEMA}); use the affectbench version that wrote it, or a newer one"))),
    }
}

/// A trials file as read.
#[derive(Debug, Default)]
pub struct TrialsFile {
    pub path: PathBuf,
    /// The records with their 1-based line numbers.
    pub records: Vec<(usize, TrialRecord)>,
    /// Bytes of the file that hold complete records (and their newlines).
    pub complete_bytes: u64,
    /// The last record is whole but its newline is missing (a crash between the two).
    pub missing_final_newline: bool,
    /// Text after the last newline that is not a record: (line number, its length).
    pub torn_tail: Option<(usize, usize)>,
}

/// Parses one line of a trials file in its own schema; `seed` stands in for fields a
/// schema-1 record did not carry.
pub fn parse_trial(line: &[u8], seed: u64) -> std::result::Result<TrialRecord, String> {
    let SchemaOnly { schema } = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    match schema {
        1 => {
            let v1: serde_json::Value = serde_json::from_slice(line).map_err(|e| e.to_string())?;
            serde_json::from_value(trial_to_v2(v1, seed)?).map_err(|e| format!("schema 1: {e}"))
        }
        SCHEMA => serde_json::from_slice(line).map_err(|e| e.to_string()),
        newer => Err(format!(
            "schema {newer} is newer than this affectbench reads ({SCHEMA})"
        )),
    }
}

/// Reads `trials.jsonl` (a missing file reads as empty). `seed` is the run's, for
/// schema-1 records.
pub fn read_trials(path: &Path, seed: u64) -> Result<TrialsFile> {
    let mut file = TrialsFile {
        path: path.to_path_buf(),
        ..Default::default()
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(file),
        Err(e) => return Err(e).with_path(path),
    };
    let mut start = 0usize;
    let mut line_no = 0usize;
    while start < bytes.len() {
        line_no += 1;
        let (line, next, complete) = match bytes[start..].iter().position(|&b| b == b'\n') {
            Some(nl) => (&bytes[start..start + nl], start + nl + 1, true),
            None => (&bytes[start..], bytes.len(), false),
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            start = next;
            if complete {
                file.complete_bytes = next as u64;
            }
            continue;
        }
        match parse_trial(line, seed) {
            Ok(rec) => {
                file.records.push((line_no, rec));
                file.complete_bytes = next as u64;
                file.missing_final_newline = !complete;
            }
            Err(_) if !complete => file.torn_tail = Some((line_no, line.len())),
            Err(e) => {
                return Err(data_error(
                    path,
                    line_no,
                    format!("not a trial record ({e}); only an incomplete last line can come from a crash, so this file was changed by hand or by another program: restore it, or remove that line if you accept losing the trial"),
                ))
            }
        }
        start = next;
    }
    Ok(file)
}
