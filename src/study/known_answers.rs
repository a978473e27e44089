//! The completion judge's known-answer check: the judging model rates every sentence of
//! the known-valence set with the task's judge question, in every order the task asks
//! it, exactly as it rates completions (`readouts::judge_valence`), so the report can
//! show its accuracy and lean before any result it feeds.

use super::readouts::{judge_content_free, judge_valence, ConversationScorer};
use crate::error::Result;
use crate::model::Model;
use crate::results::known_answers::{known_answers_path, write_known_answers, KnownAnswerRecord};
use crate::scenario::known_valence::KnownValence;
use crate::scenario::{Judge, Library, Study};
use std::path::{Path, PathBuf};

/// The records of `model` (labelled `label`) judging `set` with `task`'s `judge`.
pub(crate) fn check_judge(
    study: &Study,
    model: &dyn ConversationScorer,
    label: &str,
    task: &str,
    judge: &Judge,
    set: &KnownValence,
) -> Result<Vec<KnownAnswerRecord>> {
    let content_free = judge_content_free(study, model, judge)?;
    let values: Vec<f64> = judge.options.iter().map(|(_, v)| *v).collect();
    let expected = |p: &[f64]| p.iter().zip(&values).map(|(p, v)| p * v).sum::<f64>();
    set.sentences
        .iter()
        .map(|s| {
            let id = format!("known-answer/{}/{}", set.info.id, s.id);
            let (readout, detail) =
                judge_valence(study, model, judge, &s.text, &id, &content_free)?;
            Ok(KnownAnswerRecord {
                judge_model: label.to_string(),
                task: task.to_string(),
                set: set.info.id.clone(),
                set_sha256: set.info.sha256.clone(),
                sentence: s.id.clone(),
                valence: s.valence,
                expected: readout.expected,
                by_order: detail.by_order.iter().map(|p| expected(p)).collect(),
                calibrated_expected: detail.calibrated_expected,
                mass: readout.mass,
            })
        })
        .collect()
}

/// `model`'s known-answer check with `task`'s judge question, written to the run
/// directory unless it holds one already (a resumed run or a repeated `judge` does not
/// redo it) or the task has no judge. Returns the path when this call wrote it.
pub fn ensure_known_answers(
    dir: &Path,
    study: &Study,
    lib: &Library,
    model: &Model,
    task: &str,
) -> Result<Option<PathBuf>> {
    ensure_known_answers_by(dir, study, lib, model, &model.info.label, task)
}

/// `ensure_known_answers` for any judging model (a local one, or a server) labelled
/// `label`.
pub(crate) fn ensure_known_answers_by(
    dir: &Path,
    study: &Study,
    lib: &Library,
    model: &dyn ConversationScorer,
    label: &str,
    task: &str,
) -> Result<Option<PathBuf>> {
    let path = known_answers_path(dir, label);
    let Some(judge) = lib.tasks.get(task).and_then(|t| t.judge.as_ref()) else {
        return Ok(None);
    };
    if path.exists() {
        return Ok(None);
    }
    let set = KnownValence::shipped();
    let records = check_judge(study, model, label, task, judge, &set)?;
    write_known_answers(&path, &records)?;
    Ok(Some(path))
}

/// After a complete, unsharded run: each model's known-answer check for the study's
/// judged task. Returns the files written.
pub(crate) fn check_run_judges(
    dir: &Path,
    study: &Study,
    lib: &Library,
    models: &[(&str, &dyn ConversationScorer)],
) -> Result<Vec<PathBuf>> {
    let Some(completion) = &study.completion else {
        return Ok(Vec::new());
    };
    let mut written = Vec::new();
    for (label, m) in models {
        written.extend(ensure_known_answers_by(
            dir,
            study,
            lib,
            *m,
            label,
            &completion.task,
        )?);
    }
    Ok(written)
}
