//! Reading one or more run directories (run.json + trials.jsonl) into one data set for
//! a report, with each instrument's scoring rule.

use crate::error::{Error, IoContext, Result};
use crate::scenario::Instrument;
use crate::study::record::{InstrumentScoring, RunHeader, TrialRecord};
use crate::study::runner::read_header;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// Everything a report is built from.
pub struct RunData {
    pub dirs: Vec<PathBuf>,
    pub headers: Vec<RunHeader>,
    pub trials: Vec<TrialRecord>,
    pub scoring: BTreeMap<String, InstrumentScoring>,
    /// Notes for the reader: truncated last lines, duplicate trials across runs.
    pub notes: Vec<String>,
}

/// Reads runs in order; a trial id seen in an earlier run is kept from that run only.
/// A malformed line is an error naming file and line, except a truncated last line (a
/// run still writing or killed mid-write), which is skipped with a note.
pub fn load_runs(dirs: &[PathBuf]) -> Result<RunData> {
    if dirs.is_empty() {
        return Err(Error::Report("no run directory given".into()));
    }
    let mut data = RunData { dirs: dirs.to_vec(), headers: Vec::new(), trials: Vec::new(), scoring: BTreeMap::new(), notes: Vec::new() };
    let mut seen = HashSet::new();
    for dir in dirs {
        if !dir.join("run.json").exists() {
            return Err(Error::Report(format!("{} has no run.json; give the directory `affectbench run` wrote (e.g. results/<run-id>)", dir.display())));
        }
        let header = read_header(dir)?;
        let path = dir.join("trials.jsonl");
        let text = std::fs::read_to_string(&path).with_path(&path)?;
        let lines: Vec<&str> = text.lines().collect();
        let mut duplicates = 0;
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let rec: TrialRecord = match serde_json::from_str(line) {
                Ok(r) => r,
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {
                    data.notes.push(format!("{}: the last line is incomplete (the run was writing it) and was left out", path.display()));
                    continue;
                }
                Err(e) => return Err(Error::DataFile { path: path.clone(), line: i + 1, message: format!("not a trial record: {e}") }),
            };
            if seen.insert(rec.trial_id.clone()) {
                data.trials.push(rec);
            } else {
                duplicates += 1;
            }
        }
        if duplicates > 0 {
            data.notes.push(format!("{}: {duplicates} trials were already in an earlier run given and were counted once", path.display()));
        }
        if header.status != "success" {
            data.notes.push(format!("{}: run status is '{}' ({} of {} planned trials recorded)", dir.display(), header.status, lines.len(), header.trials_planned));
        }
        for s in instrument_scoring(&header)? {
            data.scoring.entry(s.id.clone()).or_insert(s);
        }
        data.headers.push(header);
    }
    Ok(data)
}

/// The scoring rules recorded in run.json, or, for runs made before they were recorded,
/// read from the instrument files the run names, checked against their recorded sha256.
fn instrument_scoring(header: &RunHeader) -> Result<Vec<InstrumentScoring>> {
    if !header.scoring.is_empty() {
        return Ok(header.scoring.clone());
    }
    let mut out = Vec::new();
    for f in &header.scenario_files {
        let Some(path) = f["path"].as_str() else { continue };
        if !path.contains("instruments") {
            continue;
        }
        let ins = Instrument::load(Path::new(path)).map_err(|e| {
            Error::Report(format!("this run's run.json predates recorded scoring rules, and its instrument file could not be read ({e}); run the report from the directory the run was made in"))
        })?;
        if f["sha256"].as_str() != Some(ins.info.sha256.as_str()) {
            return Err(Error::Report(format!("{path} has changed since the run (sha256 differs from run.json); check out the revision {} to report this run", header.git_revision)));
        }
        out.push(InstrumentScoring::from_instrument(&ins));
    }
    Ok(out)
}
