//! The completion judge's known-answer check: the judging model rates every sentence of
//! the known-valence set with the task's judge question, in every order the task asks
//! it, exactly as it rates completions (`readouts::judge_valence`), so the report can
//! show its accuracy and lean before any result it feeds.

use super::readouts::{judge_content_free, judge_valence};
use crate::error::Result;
use crate::model::Model;
use crate::results::known_answers::KnownAnswerRecord;
use crate::scenario::known_valence::KnownValence;
use crate::scenario::{Judge, Study};

/// The records of `model` (labelled `label`) judging `set` with `task`'s `judge`.
pub fn check_judge(
    study: &Study,
    model: &Model,
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

/// After a complete, unsharded run: each model's known-answer check for each judged
/// task, unless the run directory already holds it (a resumed run does not redo it).
/// Returns the files written.
pub fn check_run_judges(
    dir: &std::path::Path,
    study: &Study,
    lib: &crate::scenario::Library,
    models: &[Model],
) -> Result<Vec<std::path::PathBuf>> {
    let Some(completion) = &study.completion else {
        return Ok(Vec::new());
    };
    let Some(judge) = lib
        .tasks
        .get(&completion.task)
        .and_then(|t| t.judge.as_ref())
    else {
        return Ok(Vec::new());
    };
    let set = KnownValence::shipped();
    let mut written = Vec::new();
    for m in models {
        let path = crate::results::known_answers::known_answers_path(dir, &m.info.label);
        if path.exists() {
            continue;
        }
        let records = check_judge(study, m, &m.info.label, &completion.task, judge, &set)?;
        crate::results::known_answers::write_known_answers(&path, &records)?;
        written.push(path);
    }
    Ok(written)
}
