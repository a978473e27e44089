//! The completion judge's known-answer check: `RUN_DIR/known-answers/<label>.jsonl`, one
//! `KnownAnswerRecord` per sentence of known valence (`scenarios/judges/
//! known-valence.toml`) as the judging model rated it, written whole by the run (or by
//! `affectbench judge`) and read by the report, which treats the judge as an instrument.

use crate::error::{Error, IoContext, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where a run directory keeps the known-answer checks, one file per judging model.
pub const KNOWN_ANSWERS_DIR: &str = "known-answers";

/// One sentence of known valence as a judge rated it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KnownAnswerRecord {
    /// The judging model's label and the task whose judge question was asked.
    pub judge_model: String,
    pub task: String,
    /// The sentence set (id and sha256 of its file) and the sentence.
    pub set: String,
    pub set_sha256: String,
    pub sentence: String,
    /// The known side: +1 positive, -1 negative.
    pub valence: i8,
    /// The expected valence of the judge's mean distribution over the orders asked.
    pub expected: f64,
    /// The expected valence in each order asked (listed order first).
    pub by_order: Vec<f64>,
    /// The expected valence with the judge's content-free bias divided out.
    pub calibrated_expected: f64,
    /// The probability mass on the judge's labels (low: the judge answers otherwise).
    pub mass: f64,
}

/// The known-answer file of the judge labelled `label` in run directory `dir`.
pub fn known_answers_path(dir: &Path, label: &str) -> PathBuf {
    dir.join(KNOWN_ANSWERS_DIR).join(format!(
        "{}.jsonl",
        super::second_judge::safe_file_stem(label)
    ))
}

/// Writes a judge's records whole (through a temporary file and a rename, so a crash
/// leaves either no file or a complete one).
pub fn write_known_answers(path: &Path, records: &[KnownAnswerRecord]) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_path(parent)?;
    let mut text = String::new();
    for r in records {
        text.push_str(&serde_json::to_string(r).expect("records serialise"));
        text.push('\n');
    }
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, text).with_path(&tmp)?;
    std::fs::rename(&tmp, path).with_path(path)
}

/// Every known-answer record in run directory `dir` (none: empty).
pub fn read_known_answers(dir: &Path) -> Result<Vec<KnownAnswerRecord>> {
    let folder = dir.join(KNOWN_ANSWERS_DIR);
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(&folder) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_path(&folder),
    };
    entries.sort();
    let mut out = Vec::new();
    for path in entries {
        let text = std::fs::read_to_string(&path).with_path(&path)?;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            out.push(serde_json::from_str(line).map_err(|e| Error::DataFile {
                path: path.clone(),
                line: i + 1,
                message: format!("not a known-answer record ({e}); delete the file and run `affectbench judge RUN --model MODEL` to check the judge again"),
            })?);
        }
    }
    Ok(out)
}
