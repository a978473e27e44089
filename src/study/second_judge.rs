//! `affectbench judge`: another model judges a finished run's completions with the same
//! judge question (the run's own snapshot of its task files), so the report can say
//! whether the valence read-out depends on which model judges. Appends one record per
//! completion to `RUN_DIR/judges/<label>.jsonl`, flushed as written: an interrupted
//! judge continues where it stopped.

use super::known_answers::ensure_known_answers;
use super::progress::Progress;
use super::readouts::{judge_content_free, judge_valence};
use super::runner::{default_scenarios_root, resume_design};
use crate::error::{Error, IoContext, Result};
use crate::interrupt;
use crate::model::Model;
use crate::results::known_answers::known_answers_path;
use crate::results::second_judge::{read_second_judge, second_judge_path};
use crate::results::{read_header, read_trials, Question, SecondJudgeRecord};
use crate::scenario::{Library, Study};
use std::collections::{BTreeMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `judge_run` did.
#[derive(Debug)]
pub struct SecondJudgeOutcome {
    pub path: PathBuf,
    /// Completions with a judge question in the run.
    pub judgeable: usize,
    /// Judged by this call, found judged by an earlier call, and left out because the
    /// judging model wrote them (its own judgement is the run's primary judge).
    pub judged_now: usize,
    pub already: usize,
    pub own_completions: usize,
    /// The signal that stopped the call early, if one did.
    pub interrupted: Option<i32>,
    /// The judging model's known-answer check, where the run holds one.
    pub known_answers: Option<PathBuf>,
}

fn judge_err(message: String) -> Error {
    Error::Run(message)
}

/// Judges every completion in run directory `dir` with `model` (weights sha256
/// `judge_sha256`), skipping those an earlier call recorded.
pub fn judge_run(
    dir: &Path,
    model: &mut Model,
    judge_sha256: &str,
    show_progress: bool,
    progress_every: Duration,
) -> Result<SecondJudgeOutcome> {
    let header = read_header(dir)?;
    let (study_path, root) = resume_design(dir, &header);
    let root = root.unwrap_or_else(|| default_scenarios_root(&study_path));
    let lib = Library::load(&root)?;
    let mut study = Study::load(&study_path, &lib)?;
    // The judge question is asked as the run asked its own.
    if let Some(t) = model.chat_template.as_mut() {
        t.set_thinking(Some(study.thinking));
    }
    let model: &Model = model;
    let own: HashSet<&str> = header
        .models
        .iter()
        .filter(|m| m.sha256 == judge_sha256)
        .map(|m| m.label.as_str())
        .collect();

    let trials = read_trials(&dir.join("trials.jsonl"), header.seed)?;
    let mut judgeable = Vec::new();
    let mut own_completions = 0;
    let mut judged_task: Option<String> = None;
    for (_, rec) in trials.records {
        let Question::Completion { task, .. } = &rec.question else {
            continue;
        };
        let (Some(text), None) = (&rec.completion, &rec.error) else {
            continue;
        };
        let Some(judge) = lib.tasks.get(task).and_then(|t| t.judge.as_ref()) else {
            continue;
        };
        judged_task.get_or_insert_with(|| task.clone());
        if own.contains(rec.model.as_str()) {
            own_completions += 1;
            continue;
        }
        judgeable.push((
            rec.trial_id.clone(),
            rec.seed,
            rec.model.clone(),
            text.clone(),
            task.clone(),
            judge,
        ));
    }
    let path = second_judge_path(dir, &model.info.label);
    let known_answers = known_answers_path(dir, &model.info.label);
    if judgeable.is_empty() && own_completions > 0 {
        // The run's own judge: nothing to judge again, but its known-answer check may
        // be missing (runs made before the check existed).
        ensure_known_answers(
            dir,
            &study,
            &lib,
            model,
            judged_task.as_deref().unwrap_or_default(),
        )?;
        return Ok(SecondJudgeOutcome {
            path,
            judgeable: 0,
            judged_now: 0,
            already: 0,
            own_completions,
            interrupted: None,
            known_answers: known_answers.exists().then_some(known_answers.clone()),
        });
    }
    if judgeable.is_empty() {
        return Err(judge_err(format!(
            "{} holds no completion another model could judge ({} completions with a judge question, {own_completions} of them written by {} itself, whose judgement is the run's own judge)",
            dir.display(),
            own_completions,
            model.info.label
        )));
    }

    let parent = path.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).with_path(parent)?;
    let lock_path = path.with_extension("lock");
    let crate::lock::Attempt::Held(_lock) = crate::lock::try_lock(&lock_path)? else {
        return Err(judge_err(format!(
            "{} is being written by another affectbench judge (it holds {}); wait for it to finish",
            path.display(),
            lock_path.display()
        )));
    };
    let existing = read_second_judge(&path)?;
    if let Some(other) = existing
        .records
        .iter()
        .find(|r| r.judge_sha256 != judge_sha256)
    {
        return Err(judge_err(format!(
            "{} holds judgements by a different file under the label '{}' (sha256 {} vs {judge_sha256}); give this model another label (its file path, or a registry entry of its own), or move that file away",
            path.display(),
            model.info.label,
            other.judge_sha256
        )));
    }
    let done: HashSet<(String, u64, String)> = existing
        .records
        .iter()
        .map(|r| (r.trial_id.clone(), r.seed, r.model.clone()))
        .collect();
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_path(&path)?;
    if existing.torn_tail {
        out.set_len(existing.complete_bytes).with_path(&path)?;
    }

    let todo: Vec<_> = judgeable
        .iter()
        .filter(|(id, seed, m, ..)| !done.contains(&(id.clone(), *seed, m.clone())))
        .collect();
    let already = judgeable.len() - todo.len();
    let mut progress = Progress::new(show_progress, progress_every, todo.len());
    progress.set_message(format!("{} judging", model.info.label));
    let mut bias: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut judged_now = 0;
    let mut interrupted = None;
    for (trial_id, seed, generator, text, task, judge) in todo {
        if let Some(sig) = interrupt::requested() {
            interrupted = Some(sig);
            break;
        }
        // The judge's draw comes from the trial's own run seed, as the primary judge's.
        study.seed = *seed;
        // A pass cut short by a stop fails; it is the stop that ends the call.
        let stopped = |e: Error| match interrupt::requested() {
            Some(sig) => Ok(sig),
            None => Err(e),
        };
        if !bias.contains_key(task) {
            match judge_content_free(&study, model, judge) {
                Ok(b) => bias.insert(task.clone(), b),
                Err(e) => {
                    interrupted = Some(stopped(e)?);
                    break;
                }
            };
        }
        let (readout, detail) =
            match judge_valence(&study, model, judge, text, trial_id, &bias[task]) {
                Ok(v) => v,
                Err(e) => {
                    interrupted = Some(stopped(e)?);
                    break;
                }
            };
        let record = SecondJudgeRecord {
            trial_id: trial_id.clone(),
            seed: *seed,
            model: generator.clone(),
            judge_model: model.info.label.clone(),
            judge_sha256: judge_sha256.to_string(),
            judge: readout,
            judge_detail: detail,
        };
        let mut line = serde_json::to_vec(&record)
            .map_err(|e| judge_err(format!("a judge record could not be serialised: {e}")))?;
        line.push(b'\n');
        out.write_all(&line)
            .and_then(|_| out.flush())
            .with_path(&path)?;
        judged_now += 1;
        progress.inc();
    }
    progress.finish();
    // The judging model's known-answer check, unless the run already holds it (the run
    // writes its own models'; this covers second judges and runs made before the check).
    if interrupted.is_none() {
        if let Some(task) = &judged_task {
            ensure_known_answers(dir, &study, &lib, model, task)?;
        }
    }
    Ok(SecondJudgeOutcome {
        known_answers: known_answers.exists().then_some(known_answers.clone()),
        path,
        judgeable: judgeable.len(),
        judged_now,
        already,
        own_completions,
        interrupted,
    })
}
