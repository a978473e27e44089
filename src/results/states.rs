//! Hidden states captured per item trial, beside `trials.jsonl`:
//!
//! - `states/<model>.f16`: fixed-size records, little-endian f16, each shaped
//!   (2, blocks, d_model): `[0]` the residual stream at the trial's answer position (the
//!   last prompt token, whose logits are the answer's), `[1]` its mean over the group's
//!   shared prefix (system prompt, texts, replies and the start of the question turn).
//! - `states/<model>.index.jsonl`: one line per record, `{"trial_id", "record"}`.
//!
//! A record's bytes are written and flushed before its index line, and the index line
//! before the trial's record in `trials.jsonl`; opening for append cuts whatever a crash
//! left past the last whole index line. A trial recomputed after such a crash is
//! recorded again with the same bits; readers keep its first record.
//!
//! In numpy: `np.fromfile(f, "<f2").reshape(-1, 2, len(blocks), d_model)`, with `blocks`
//! and `d_model` from run.json (`models[].capture`).

use crate::error::{Error, IoContext, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// The capture of one model, as run.json records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CaptureRecord {
    /// Block positions captured (0: the embeddings, n_layer: the last block's output).
    pub blocks: Vec<usize>,
    pub d_model: usize,
    /// Paths relative to the run directory.
    pub states_file: String,
    pub index_file: String,
    /// Always `"f16 (records, 2, blocks, d_model): [answer position, shared-prefix mean]"`.
    pub layout: String,
}

/// The layout string of `CaptureRecord`.
pub const STATES_LAYOUT: &str =
    "f16 little-endian (records, 2, blocks, d_model): [answer position, shared-prefix mean]";

/// The directory of states files in a run directory.
pub const STATES_DIR: &str = "states";

/// A model label as a file name (anything but letters, digits, '.', '-', '_' becomes '_').
pub fn file_stem(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl CaptureRecord {
    pub fn new(label: &str, blocks: Vec<usize>, d_model: usize) -> Self {
        let stem = file_stem(label);
        CaptureRecord {
            blocks,
            d_model,
            states_file: format!("{STATES_DIR}/{stem}.f16"),
            index_file: format!("{STATES_DIR}/{stem}.index.jsonl"),
            layout: STATES_LAYOUT.to_string(),
        }
    }

    /// Bytes per record.
    pub fn record_bytes(&self) -> usize {
        2 * self.blocks.len() * self.d_model * 2
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct IndexLine {
    trial_id: String,
    record: u64,
}

/// Appends records for one model.
pub struct StatesWriter {
    capture: CaptureRecord,
    data_path: PathBuf,
    index_path: PathBuf,
    data: File,
    index: File,
    records: u64,
}

impl StatesWriter {
    /// Opens (creating) the model's files in `run_dir`, first cutting what a crash left
    /// past the last whole index line whose record is complete.
    pub fn open(run_dir: &Path, capture: &CaptureRecord) -> Result<Self> {
        let dir = run_dir.join(STATES_DIR);
        std::fs::create_dir_all(&dir).with_path(&dir)?;
        let data_path = run_dir.join(&capture.states_file);
        let index_path = run_dir.join(&capture.index_file);
        let bytes = capture.record_bytes() as u64;
        let data_len = std::fs::metadata(&data_path).map(|m| m.len()).unwrap_or(0);
        let (lines, kept_bytes) = whole_index_lines(&index_path)?;
        let records = (lines as u64).min(data_len / bytes.max(1));
        let index_keep = if records == lines as u64 {
            kept_bytes
        } else {
            index_prefix_bytes(&index_path, records as usize)?
        };
        let index = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&index_path)
            .with_path(&index_path)?;
        index.set_len(index_keep).with_path(&index_path)?;
        let data = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&data_path)
            .with_path(&data_path)?;
        data.set_len(records * bytes).with_path(&data_path)?;
        Ok(StatesWriter {
            capture: capture.clone(),
            data_path,
            index_path,
            data,
            index,
            records,
        })
    }

    /// Appends one trial's states: `answer[k]` and `prefix[k]` are the d_model-vectors
    /// after block `blocks[k]`.
    pub fn append(
        &mut self,
        trial_id: &str,
        answer: &[Vec<f32>],
        prefix: &[Vec<f32>],
    ) -> Result<()> {
        let (n, d) = (self.capture.blocks.len(), self.capture.d_model);
        if answer.len() != n
            || prefix.len() != n
            || answer.iter().chain(prefix).any(|v| v.len() != d)
        {
            return Err(Error::Run(format!(
                "internal: a trial's captured states are not {n} blocks of {d} values"
            )));
        }
        let mut buf = Vec::with_capacity(self.capture.record_bytes());
        for v in answer.iter().chain(prefix) {
            for x in v {
                buf.extend_from_slice(&half::f16::from_f32(*x).to_le_bytes());
            }
        }
        self.data
            .write_all(&buf)
            .and_then(|_| self.data.flush())
            .with_path(&self.data_path)?;
        let mut line = serde_json::to_vec(&IndexLine {
            trial_id: trial_id.to_string(),
            record: self.records,
        })
        .map_err(|e| Error::Run(format!("a states index line could not be serialised: {e}")))?;
        line.push(b'\n');
        self.index
            .write_all(&line)
            .and_then(|_| self.index.flush())
            .with_path(&self.index_path)?;
        self.records += 1;
        Ok(())
    }
}

/// How many whole (newline-ended, parseable) lines the index starts with, and their bytes.
fn whole_index_lines(path: &Path) -> Result<(usize, u64)> {
    let Ok(f) = File::open(path) else {
        return Ok((0, 0));
    };
    let mut reader = BufReader::new(f);
    let (mut lines, mut bytes) = (0usize, 0u64);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).with_path(path)?;
        if n == 0 || !line.ends_with('\n') || serde_json::from_str::<IndexLine>(&line).is_err() {
            return Ok((lines, bytes));
        }
        lines += 1;
        bytes += n as u64;
    }
}

/// The bytes of the first `lines` lines of the index.
fn index_prefix_bytes(path: &Path, lines: usize) -> Result<u64> {
    let text = std::fs::read_to_string(path).with_path(path)?;
    Ok(text
        .split_inclusive('\n')
        .take(lines)
        .map(|l| l.len() as u64)
        .sum())
}

/// One model's captured states, read whole.
pub struct States {
    pub capture: CaptureRecord,
    /// Trial id -> record number (the first record of a trial recorded twice).
    pub index: HashMap<String, usize>,
    data: Vec<u16>,
}

impl States {
    /// Reads the files `capture` names in `run_dir` (whole records only).
    pub fn read(run_dir: &Path, capture: &CaptureRecord) -> Result<Self> {
        let data_path = run_dir.join(&capture.states_file);
        let index_path = run_dir.join(&capture.index_file);
        let mut raw = Vec::new();
        File::open(&data_path)
            .and_then(|mut f| f.read_to_end(&mut raw))
            .with_path(&data_path)?;
        let complete = raw.len() / capture.record_bytes().max(1);
        let data: Vec<u16> = raw[..complete * capture.record_bytes()]
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        let text = std::fs::read_to_string(&index_path).with_path(&index_path)?;
        let mut index = HashMap::new();
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            let Ok(entry) = serde_json::from_str::<IndexLine>(line) else {
                break;
            };
            if (entry.record as usize) < complete {
                index.entry(entry.trial_id).or_insert(entry.record as usize);
            }
        }
        Ok(States {
            capture: capture.clone(),
            index,
            data,
        })
    }

    /// Appends the record of each of `trial_ids` that this file holds to `to` (bit for
    /// bit: f16 widens to f32 and narrows back exactly); returns how many it copied.
    pub fn copy_to<'a>(
        &self,
        trial_ids: impl Iterator<Item = &'a str>,
        to: &mut StatesWriter,
    ) -> Result<usize> {
        let n = self.capture.blocks.len();
        let mut copied = 0;
        for id in trial_ids {
            let Some(&record) = self.index.get(id) else {
                continue;
            };
            let site = |s: usize| {
                (0..n)
                    .map(|k| self.vector(record, s, k))
                    .collect::<Vec<_>>()
            };
            to.append(id, &site(0), &site(1))?;
            copied += 1;
        }
        Ok(copied)
    }

    /// The vector of `record` at `site` (0: answer position, 1: shared-prefix mean)
    /// after the k-th captured block.
    pub fn vector(&self, record: usize, site: usize, k: usize) -> Vec<f32> {
        let (n, d) = (self.capture.blocks.len(), self.capture.d_model);
        let start = ((record * 2 + site) * n + k) * d;
        self.data[start..start + d]
            .iter()
            .map(|&b| half::f16::from_bits(b).to_f32())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_tail_is_cut_and_records_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let cap = CaptureRecord::new("m/x", vec![0, 2], 3);
        let v = |a: f32| vec![vec![a, a + 1.0, a + 2.0], vec![-a, 0.5, 1.0]];
        {
            let mut w = StatesWriter::open(dir.path(), &cap).unwrap();
            w.append("t1", &v(1.0), &v(2.0)).unwrap();
            w.append("t2", &v(3.0), &v(4.0)).unwrap();
        }
        // A crash mid-record: half a record of bytes and a torn index line.
        let data = dir.path().join(&cap.states_file);
        let mut f = OpenOptions::new().append(true).open(&data).unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        let index = dir.path().join(&cap.index_file);
        let mut f = OpenOptions::new().append(true).open(&index).unwrap();
        f.write_all(b"{\"trial_id\":\"t3\"").unwrap();
        {
            let mut w = StatesWriter::open(dir.path(), &cap).unwrap();
            w.append("t3", &v(5.0), &v(6.0)).unwrap();
            // A trial recomputed after a crash: the first record is kept.
            w.append("t1", &v(9.0), &v(9.0)).unwrap();
        }
        let s = States::read(dir.path(), &cap).unwrap();
        assert_eq!(
            std::fs::metadata(&data).unwrap().len(),
            4 * cap.record_bytes() as u64
        );
        assert_eq!(s.index.len(), 3);
        assert_eq!(s.vector(s.index["t1"], 0, 0), vec![1.0, 2.0, 3.0]);
        assert_eq!(s.vector(s.index["t3"], 1, 1), vec![-6.0, 0.5, 1.0]);
        assert_eq!(s.vector(s.index["t2"], 0, 1), vec![-3.0, 0.5, 1.0]);
        assert_eq!(cap.states_file, "states/m_x.f16");
    }
}
