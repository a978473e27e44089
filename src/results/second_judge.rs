//! A second judge's read-outs of a run's completions: `RUN_DIR/judges/<label>.jsonl`,
//! one `SecondJudgeRecord` per judged completion, written by `affectbench judge` and
//! read by the report to say whether two judge models agree.

use super::trial::{ChoiceReadout, JudgeDetail};
use crate::error::{Error, IoContext, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where a run directory keeps its second judges' files.
pub const JUDGES_DIR: &str = "judges";

/// One completion as another model judged it, with the same judge question (both
/// orders where the task asks both) and its own content-free bias.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SecondJudgeRecord {
    /// The judged trial: its id, run seed and the model that wrote the completion.
    pub trial_id: String,
    pub seed: u64,
    pub model: String,
    /// The judging model: its label and weights sha256.
    pub judge_model: String,
    pub judge_sha256: String,
    pub judge: ChoiceReadout,
    pub judge_detail: JudgeDetail,
}

/// A second judge's file as read: the records, and where the whole records end (a
/// crash can leave a torn last line, which a resumed `judge` cuts off).
#[derive(Debug, Default)]
pub struct SecondJudgeFile {
    pub path: PathBuf,
    pub records: Vec<SecondJudgeRecord>,
    pub complete_bytes: u64,
    pub torn_tail: bool,
}

/// The file of the judge labelled `label` in run directory `dir`. Labels that are
/// paths (a .gguf given by path) keep only characters safe in a file name.
pub fn second_judge_path(dir: &Path, label: &str) -> PathBuf {
    dir.join(JUDGES_DIR)
        .join(format!("{}.jsonl", safe_file_stem(label)))
}

/// A model label as a file name: characters other than letters, digits, '-', '_' and
/// '.' become '_'.
pub(crate) fn safe_file_stem(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Reads one second judge's file (missing: empty). Only an incomplete last line is
/// tolerated; any other unreadable line is an error naming file and line.
pub fn read_second_judge(path: &Path) -> Result<SecondJudgeFile> {
    let mut file = SecondJudgeFile {
        path: path.to_path_buf(),
        ..Default::default()
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(file),
        Err(e) => return Err(e).with_path(path),
    };
    let mut start = 0;
    for (i, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        let complete = line.ends_with(b"\n");
        let end = start + line.len();
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        if text.iter().all(u8::is_ascii_whitespace) {
            if complete {
                file.complete_bytes = end as u64;
            }
        } else {
            // A last record without its newline counts as torn too: judging it again
            // costs one completion, and the file stays whole lines only.
            match (serde_json::from_slice::<SecondJudgeRecord>(text), complete) {
                (Ok(r), true) => {
                    file.records.push(r);
                    file.complete_bytes = end as u64;
                }
                (_, false) => file.torn_tail = true,
                (Err(e), true) => {
                    return Err(Error::DataFile {
                        path: path.to_path_buf(),
                        line: i + 1,
                        message: format!("not a second-judge record ({e}); only an incomplete last line can come from a crash: restore the file or remove that line (`affectbench judge` judges it again)"),
                    })
                }
            }
        }
        start = end;
    }
    Ok(file)
}

/// Every second judge's records in run directory `dir` (none: empty), files in name
/// order.
pub fn read_second_judges(dir: &Path) -> Result<Vec<SecondJudgeRecord>> {
    let judges = dir.join(JUDGES_DIR);
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(&judges) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_path(&judges),
    };
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        out.extend(read_second_judge(&p)?.records);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> SecondJudgeRecord {
        SecondJudgeRecord {
            trial_id: id.into(),
            seed: 7,
            model: "m".into(),
            judge_model: "j".into(),
            judge_sha256: "abc".into(),
            judge: ChoiceReadout {
                labels: vec!["negative".into(), "positive".into()],
                values: vec![-1.0, 1.0],
                probs: vec![0.25, 0.75],
                mass: 0.9,
                expected: 0.5,
                argmax: 1.0,
                draw: 1.0,
                keyed_expected: 0.5,
                unobserved: None,
            },
            judge_detail: JudgeDetail {
                orders: vec![vec![0, 1]],
                by_order: vec![vec![0.25, 0.75]],
                content_free: vec![0.5, 0.5],
                calibrated_expected: 0.5,
            },
        }
    }

    #[test]
    fn a_torn_last_line_is_left_out_and_a_bad_middle_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = second_judge_path(dir.path(), "a/b.gguf");
        assert!(path.ends_with("judges/a_b.gguf.jsonl"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut text = serde_json::to_string(&record("t1")).unwrap();
        text.push('\n');
        let whole = text.len() as u64;
        text.push_str(&serde_json::to_string(&record("t2")).unwrap()[..20]);
        std::fs::write(&path, &text).unwrap();
        let f = read_second_judge(&path).unwrap();
        assert_eq!(f.records, vec![record("t1")]);
        assert!(f.torn_tail);
        assert_eq!(f.complete_bytes, whole);
        assert_eq!(read_second_judges(dir.path()).unwrap().len(), 1);

        std::fs::write(
            &path,
            format!("{{\"oops\":1}}\n{}", &text[..whole as usize]),
        )
        .unwrap();
        let err = read_second_judge(&path).unwrap_err().to_string();
        assert!(err.contains(":1:"), "{err}");
    }
}
