//! The run directory protocol: one writer at a time (an advisory lock the OS releases
//! when the process dies), `run.json` replaced atomically, `trials.jsonl` appended one
//! whole line per `write`, and on resume the trials already finished, after repairing
//! only what a crash can leave (a torn last line).

use crate::error::{Error, IoContext, Result};
use crate::results::{read_header, read_trials, RunHeader, TrialRecord};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An open run directory, locked for writing while this value lives.
pub struct RunDir {
    pub path: PathBuf,
    trials_path: PathBuf,
    trials: File,
    /// Held for the lock: dropping it (or the process dying) releases the directory.
    _lock: File,
}

fn run_err(message: String) -> Error {
    Error::Run(message)
}

impl RunDir {
    /// Creates (or reopens) `path` and takes its lock; refuses if another process
    /// holds it.
    pub fn open(path: &Path) -> Result<RunDir> {
        std::fs::create_dir_all(path).with_path(path)?;
        let lock_path = path.join("run.lock");
        let lock = match crate::lock::try_lock(&lock_path)? {
            crate::lock::Attempt::Held(f) => f,
            crate::lock::Attempt::Busy(_) => {
                return Err(run_err(format!(
                    "{} is being written by another affectbench process (it holds {}); wait for it to finish, or choose another --out",
                    path.display(),
                    lock_path.display()
                )))
            }
        };
        let trials_path = path.join("trials.jsonl");
        let trials = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&trials_path)
            .with_path(&trials_path)?;
        Ok(RunDir {
            path: path.to_path_buf(),
            trials_path,
            trials,
            _lock: lock,
        })
    }

    /// Refuses a directory without run.json that holds what a run would adopt or
    /// overwrite: trial records (another run's, adopted as done, would be kept as this
    /// run's) or a report. An empty trials.jsonl is what a run that failed before its
    /// first header leaves, and is fine.
    pub fn refuse_foreign_records(&self) -> Result<()> {
        let records = std::fs::metadata(&self.trials_path).map_or(0, |m| m.len());
        let report = self.path.join("report.html");
        let found = if records > 0 {
            format!(
                "{} ({records} bytes of trial records)",
                self.trials_path.display()
            )
        } else if report.exists() {
            report.display().to_string()
        } else {
            return Ok(());
        };
        Err(run_err(format!(
            "{} holds {found} but no run.json, so it is not a run affectbench can continue: \
             its records would be taken as this run's; choose another --out (or move those \
             files away)",
            self.path.display()
        )))
    }

    /// The header of an earlier run in this directory, if there is one.
    pub fn existing_header(&self) -> Result<Option<RunHeader>> {
        if !self.path.join("run.json").exists() {
            return Ok(None);
        }
        read_header(&self.path).map(Some)
    }

    /// Replaces run.json atomically (write a temporary file, then rename).
    pub fn write_header(&self, header: &RunHeader) -> Result<()> {
        write_header_in(&self.path, header, "run.json.tmp")
    }

    /// Marks run.json `interrupted` if a second signal ends the process before the run
    /// returns (`interrupt::on_forced_exit`), from the header as it is now. Its own
    /// temporary file: the run may be writing run.json at the same moment.
    pub fn mark_interrupted_on_forced_exit(&self, header: &RunHeader) {
        let (dir, mut header) = (self.path.clone(), header.clone());
        crate::interrupt::on_forced_exit(move |sig| {
            header.status = crate::results::RunStatus::Interrupted;
            header.error = Some(format!(
                "stopped at once by a second stop signal ({}); the unit in progress was not written",
                crate::interrupt::name(sig)
            ));
            header.ended = Some(crate::results::now_rfc3339());
            let _ = write_header_in(&dir, &header, "run.json.exit-tmp");
        });
    }
}

/// Space kept beside run.json (`.run.json.reserve`, zeros) so that the header can still
/// be replaced when the disk fills: at least this many bytes, or twice the header.
const RESERVE_MIN_BYTES: usize = 64 * 1024;
const RESERVE_NAME: &str = ".run.json.reserve";

/// Writes run.json in `dir` atomically through the temporary file `tmp_name`: written
/// whole and synced, then renamed over the old one, so run.json is always one whole
/// header, the new or the last good one. Where the temporary file cannot be written (a
/// full disk) the reserve kept beside it is given up to make room and the write tried
/// again; run.json is never rewritten in place (a full disk could truncate it, and
/// `--resume` would then find no run). Failing that too, the last good header stays.
fn write_header_in(dir: &Path, header: &RunHeader, tmp_name: &str) -> Result<()> {
    let text = serde_json::to_string_pretty(header)
        .map_err(|e| run_err(format!("run.json could not be serialised: {e}")))?;
    let reserve = dir.join(RESERVE_NAME);
    let written = replace_atomically(dir, tmp_name, &text).or_else(|e| {
        if std::fs::remove_file(&reserve).is_ok() {
            replace_atomically(dir, tmp_name, &text)
        } else {
            Err(e)
        }
    });
    if written.is_ok() {
        keep_reserve(&reserve, text.len());
    }
    written
}

/// Temporary file, sync, rename: the one way run.json is written.
fn replace_atomically(dir: &Path, tmp_name: &str, text: &str) -> Result<()> {
    let path = dir.join("run.json");
    let tmp = dir.join(tmp_name);
    let written = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    })()
    .with_path(&tmp)
    .and_then(|_| std::fs::rename(&tmp, &path).with_path(&path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Makes sure the reserve holds room for a header of `header_len` bytes; best effort (a
/// disk without room for it keeps none, and a later full disk then leaves the last
/// good header rather than a newer one).
fn keep_reserve(reserve: &Path, header_len: usize) {
    let wanted = RESERVE_MIN_BYTES.max(2 * header_len);
    if std::fs::metadata(reserve).is_ok_and(|m| m.len() >= wanted as u64) {
        return;
    }
    if std::fs::write(reserve, vec![0u8; wanted]).is_err() {
        let _ = std::fs::remove_file(reserve);
    }
}

impl RunDir {
    /// Trial ids already recorded. A torn last line (a crash mid-write) is cut off and a
    /// whole last record missing its newline gets one; any other unreadable line is an
    /// error naming it (nothing after it is ever deleted).
    pub fn finished_trials(&mut self, seed: u64) -> Result<HashSet<String>> {
        let file = read_trials(&self.trials_path, seed)?;
        if file.torn_tail.is_some() {
            let f = OpenOptions::new()
                .write(true)
                .open(&self.trials_path)
                .with_path(&self.trials_path)?;
            f.set_len(file.complete_bytes)
                .with_path(&self.trials_path)?;
        } else if file.missing_final_newline {
            self.trials.write_all(b"\n").with_path(&self.trials_path)?;
        }
        Ok(file.records.into_iter().map(|(_, r)| r.trial_id).collect())
    }

    /// Appends one record as one whole line, in a single write, and flushes it.
    pub fn append(&mut self, record: &TrialRecord) -> Result<()> {
        let mut line = serde_json::to_vec(record)
            .map_err(|e| run_err(format!("a trial record could not be serialised: {e}")))?;
        line.push(b'\n');
        self.trials
            .write_all(&line)
            .and_then(|_| self.trials.flush())
            .with_path(&self.trials_path)
    }
}
