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

/// Writes run.json in `dir` atomically through the temporary file `tmp_name`.
fn write_header_in(dir: &Path, header: &RunHeader, tmp_name: &str) -> Result<()> {
    {
        let path = dir.join("run.json");
        let tmp = dir.join(tmp_name);
        let text = serde_json::to_string_pretty(header)
            .map_err(|e| run_err(format!("run.json could not be serialised: {e}")))?;
        match std::fs::write(&tmp, &text)
            .with_path(&tmp)
            .and_then(|_| std::fs::rename(&tmp, &path).with_path(&path))
        {
            Ok(()) => Ok(()),
            Err(e) => {
                // A full disk refuses the temporary copy; rewriting run.json in place
                // needs no more blocks than it holds, so the status still gets recorded.
                let _ = std::fs::remove_file(&tmp);
                std::fs::write(&path, &text).with_path(&path).map_err(|_| e)
            }
        }
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
