//! Reading one or more run directories (run.json + trials.jsonl, any known schema) into
//! one data set for a report, with each instrument's scoring rule.

use crate::error::{Error, Result};
use crate::measures::{calibrate, CalibrationTable};
use crate::results::{
    read_header, read_second_judges, read_trials, InstrumentScoring, RunHeader, RunStatus,
    SecondJudgeRecord, TrialRecord,
};
use crate::scenario::Instrument;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// Everything a report is built from.
pub struct RunData {
    pub dirs: Vec<PathBuf>,
    pub headers: Vec<RunHeader>,
    /// Item and completion trials (item trials with their calibrated read-out).
    pub trials: Vec<TrialRecord>,
    /// The content-free calibration records, and their mean distribution per arrangement.
    pub content_free: Vec<TrialRecord>,
    pub calibration: CalibrationTable,
    pub scoring: BTreeMap<String, InstrumentScoring>,
    /// Other models' judgements of the completions (`affectbench judge`), each once.
    pub second_judges: Vec<SecondJudgeRecord>,
    /// Each judging model's known-answer check (`known-answers/`), once per model and
    /// sentence.
    pub known_answers: Vec<crate::results::known_answers::KnownAnswerRecord>,
    /// What `affectbench probe` wrote into the runs (`probes/`), if it ran.
    pub probes: crate::results::probes::SavedProbes,
    /// The preregistration each run kept (`run --prereg`), with its run directory.
    pub preregistrations: Vec<(PathBuf, crate::study::prereg::Preregistration)>,
    /// Notes for the reader: truncated last lines, duplicate trials across runs.
    pub notes: Vec<String>,
}

impl RunData {
    /// The distinct run seeds of the trials, ascending.
    pub fn seeds(&self) -> Vec<u64> {
        let seeds: BTreeSet<u64> = self
            .trials
            .iter()
            .map(|t| t.seed)
            .chain(self.headers.iter().map(|h| h.seed))
            .collect();
        seeds.into_iter().collect()
    }
}

/// Reads runs in order. A trial's identity is (trial id, seed, model sha256): the same
/// trial given twice (a shard listed twice, a run and its copy) counts once, with a
/// note; replications with other seeds and other model files are all kept. One model
/// label naming two different files is refused (the report would mix them). A
/// malformed line is an error naming file and line, except a torn last line (a run
/// still writing or killed mid-write), which is left out with a note.
pub fn load_runs(dirs: &[PathBuf]) -> Result<RunData> {
    if dirs.is_empty() {
        return Err(Error::Report("no run directory given".into()));
    }
    let mut data = RunData {
        dirs: dirs.to_vec(),
        headers: Vec::new(),
        trials: Vec::new(),
        content_free: Vec::new(),
        calibration: CalibrationTable::new(),
        scoring: BTreeMap::new(),
        second_judges: Vec::new(),
        known_answers: Vec::new(),
        probes: Default::default(),
        preregistrations: Vec::new(),
        notes: Vec::new(),
    };
    let mut judged = HashSet::new();
    let mut seen = HashSet::new();
    // model label -> (sha256, the run directory that first named it)
    let mut files: BTreeMap<String, (String, PathBuf)> = BTreeMap::new();
    for dir in dirs {
        if !dir.join("run.json").exists() {
            return Err(Error::Report(format!("{} has no run.json; give the directory `affectbench run` wrote (e.g. results/<run-id>)", dir.display())));
        }
        let header = read_header(dir)?;
        for m in &header.models {
            match files.get(&m.label) {
                Some((sha, first)) if *sha != m.sha256 => {
                    return Err(Error::Report(format!(
                        "model label '{}' names two different files: sha256 {sha} in {} and {} in {}; their trials would be mixed. Report them separately, or run one under another label (its file path, or a registry entry of its own)",
                        m.label,
                        first.display(),
                        m.sha256,
                        dir.display()
                    )))
                }
                Some(_) => {}
                None => {
                    files.insert(m.label.clone(), (m.sha256.clone(), dir.clone()));
                }
            }
        }
        let file = read_trials(&dir.join("trials.jsonl"), header.seed)?;
        if let Some((line, _)) = file.torn_tail {
            data.notes.push(format!(
                "{}: line {line} is incomplete (the run was writing it) and was left out",
                file.path.display()
            ));
        }
        let recorded = file.records.len();
        let mut duplicates = 0;
        for (_, rec) in file.records {
            let sha = files
                .get(&rec.model)
                .map(|(s, _)| s.clone())
                .unwrap_or_default();
            if seen.insert((rec.trial_id.clone(), rec.seed, sha)) {
                data.trials.push(rec);
            } else {
                duplicates += 1;
            }
        }
        if duplicates > 0 {
            data.notes.push(format!(
                "{}: {duplicates} trials (same trial, seed and model file) were already in an earlier run given and were counted once",
                file.path.display()
            ));
        }
        if header.status != RunStatus::Success {
            data.notes.push(format!(
                "{}: run status is '{}' ({recorded} of {} planned trials recorded)",
                dir.display(),
                header.status,
                header.trials_planned
            ));
        }
        for j in read_second_judges(dir)? {
            let key = (
                j.trial_id.clone(),
                j.seed,
                j.model.clone(),
                j.judge_sha256.clone(),
            );
            if judged.insert(key) {
                data.second_judges.push(j);
            }
        }
        for k in crate::results::known_answers::read_known_answers(dir)? {
            if !data.known_answers.iter().any(|x| {
                x.judge_model == k.judge_model && x.sentence == k.sentence && x.task == k.task
            }) {
                data.known_answers.push(k);
            }
        }
        let prereg = dir.join(crate::study::prereg::FILE_NAME);
        if prereg.exists() {
            data.preregistrations.push((
                dir.clone(),
                crate::study::prereg::Preregistration::read(&prereg)?,
            ));
        }
        let saved = crate::results::probes::read_probes(dir)?;
        data.probes.accuracy.extend(saved.accuracy);
        data.probes.self_report.extend(saved.self_report);
        data.probes.best.extend(saved.best);
        for s in instrument_scoring(&header)? {
            data.scoring.entry(s.id.clone()).or_insert(s);
        }
        data.headers.push(header);
    }
    let calibrated = calibrate(std::mem::take(&mut data.trials), &data.scoring);
    data.trials = calibrated.trials;
    data.content_free = calibrated.content_free;
    data.calibration = calibrated.table;
    let studies: BTreeSet<&str> = data.headers.iter().map(|h| h.study.id.as_str()).collect();
    if studies.len() > 1 {
        data.notes.push(format!(
            "the runs are of different studies ({}); conditions are compared only where the names match, so contrasts between studies are absent",
            studies.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    let seeds = data.seeds();
    if seeds.len() > 1 {
        data.notes.push(format!(
            "{} replications (seeds {}) are pooled in every table (the `seeds` column); trials.csv has each trial's seed",
            seeds.len(),
            seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        ));
    }
    let unscored = data
        .trials
        .iter()
        .filter(|t| {
            t.question
                .instrument()
                .is_some_and(|i| !data.scoring.contains_key(i))
        })
        .count();
    if unscored > 0 {
        data.notes.push(format!("{unscored} item trials name an instrument no run records a scoring rule for; they are left out of the scale scores"));
    }
    Ok(data)
}

/// The scoring rules recorded in run.json, or, for schema-1 runs made before they were
/// recorded, read from the instrument files the run names, checked against their sha256.
fn instrument_scoring(header: &RunHeader) -> Result<Vec<InstrumentScoring>> {
    if !header.scoring.is_empty() {
        return Ok(header.scoring.clone());
    }
    let mut out = Vec::new();
    for f in header
        .scenario_files
        .iter()
        .filter(|f| f.path.contains("instruments"))
    {
        let ins = Instrument::load(Path::new(&f.path)).map_err(|e| {
            Error::Report(format!("this run's run.json predates recorded scoring rules, and its instrument file could not be read ({e}); run the report from the directory the run was made in"))
        })?;
        if f.sha256 != ins.info.sha256 {
            return Err(Error::Report(format!("{} has changed since the run (sha256 differs from run.json); check out the revision {} to report this run", f.path, header.git_revision)));
        }
        out.push(InstrumentScoring::from_instrument(&ins));
    }
    Ok(out)
}
