//! How far two runs of the same study agree, trial by trial: the cross-engine check
//! (`affectbench compare`), e.g. a GGUF run here against the same file behind
//! llama.cpp's server. Trials pair by id, so the two runs must share the study, seed
//! and model label (a server's `label=`). Per pair: whether the most probable option
//! is the same, the largest gap between the two option distributions, the expected
//! values, whether the generated answers read the same value and whether the texts
//! (replies, completions) are identical.

use super::csv_table::{write_rows, Num};
use super::read::{read_header, read_trials};
use super::TrialRecord;
use crate::error::{Error, Result};
use crate::stats::descriptives::mean;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// One paired trial, as compare.csv writes it.
#[derive(Debug, Clone, Serialize)]
pub struct PairRow {
    pub trial_id: String,
    pub condition: String,
    /// `item`, `content_free` or `completion`.
    pub kind: String,
    /// The most probable option's label in each run (NA: no choice read-out).
    pub top_a: String,
    pub top_b: String,
    pub same_top: Option<bool>,
    /// Largest |p_a - p_b| over the options.
    pub max_prob_gap: Num,
    pub expected_a: Num,
    pub expected_b: Num,
    /// The option mass in each run.
    pub mass_a: Num,
    pub mass_b: Num,
    /// The generated answer's value in each run (NA: not read).
    pub value_a: Num,
    pub value_b: Num,
    /// The first reply (an item) or the completion, identical in both runs.
    pub same_text: Option<bool>,
}

/// What `compare` prints: counts and the distribution of gaps.
#[derive(Debug, Clone, PartialEq)]
pub struct Agreement {
    pub paired: usize,
    pub only_a: usize,
    pub only_b: usize,
    /// Pairs with a choice read-out in both, and how many share their top option.
    pub choices: usize,
    pub same_top: usize,
    /// Median, 90th percentile and largest per-trial probability gap.
    pub gap_median: f64,
    pub gap_p90: f64,
    pub gap_max: f64,
    /// Mean |expected_a - expected_b| in scale points.
    pub expected_mean_abs: f64,
    /// Pairs where both runs read a generated value, and how many read the same one.
    pub values: usize,
    pub same_value: usize,
    /// Pairs with text in both (first replies, completions), and how many are identical.
    pub texts: usize,
    pub same_texts: usize,
}

impl Agreement {
    /// The share of paired choice read-outs whose top option agrees (NaN: none).
    pub fn top_agreement(&self) -> f64 {
        self.same_top as f64 / self.choices as f64
    }
}

/// A run's trials that finished without an error, by id (`seed`: the run's, for
/// records older than per-trial seeds).
fn trial_records(dir: &Path, seed: u64) -> Result<BTreeMap<String, TrialRecord>> {
    let file = read_trials(&dir.join("trials.jsonl"), seed)?;
    Ok(file
        .records
        .into_iter()
        .map(|(_, r)| (r.trial_id.clone(), r))
        .filter(|(_, r)| r.error.is_none())
        .collect())
}

fn top_label(r: &TrialRecord) -> Option<&str> {
    let c = r.choice.as_ref()?;
    let best = c
        .probs
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))?
        .0;
    c.labels.get(best).map(String::as_str)
}

/// The text a trial produced: its completion, else its first reply.
fn text(r: &TrialRecord) -> Option<&str> {
    r.completion
        .as_deref()
        .or_else(|| r.generate.as_ref()?.replies.first().map(String::as_str))
}

fn pair(a: &TrialRecord, b: &TrialRecord) -> PairRow {
    let gap = match (&a.choice, &b.choice) {
        (Some(x), Some(y)) if x.labels == y.labels => x
            .probs
            .iter()
            .zip(&y.probs)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f64::max),
        _ => f64::NAN,
    };
    let kind = serde_json::to_value(&a.question)
        .ok()
        .and_then(|v| v["kind"].as_str().map(String::from))
        .unwrap_or_default();
    let value = |r: &TrialRecord| r.generate.as_ref().and_then(|g| g.value);
    PairRow {
        trial_id: a.trial_id.clone(),
        condition: a.condition.clone(),
        kind,
        top_a: top_label(a).unwrap_or("NA").to_string(),
        top_b: top_label(b).unwrap_or("NA").to_string(),
        same_top: top_label(a).zip(top_label(b)).map(|(x, y)| x == y),
        max_prob_gap: Num(gap),
        expected_a: Num::or_na(a.choice.as_ref().map(|c| c.expected)),
        expected_b: Num::or_na(b.choice.as_ref().map(|c| c.expected)),
        mass_a: Num::or_na(a.choice.as_ref().map(|c| c.mass)),
        mass_b: Num::or_na(b.choice.as_ref().map(|c| c.mass)),
        value_a: Num::or_na(value(a)),
        value_b: Num::or_na(value(b)),
        same_text: text(a).zip(text(b)).map(|(x, y)| x.trim() == y.trim()),
    }
}

/// The q-quantile of sorted values (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Pairs the trials of runs `a` and `b` and summarises their agreement. Errors where
/// the runs are not of the same study and seed (their trials would not pair).
pub fn compare_runs(a: &Path, b: &Path) -> Result<(Agreement, Vec<PairRow>)> {
    let (ha, hb) = (read_header(a)?, read_header(b)?);
    if ha.study.sha256 != hb.study.sha256 || ha.seed != hb.seed {
        return Err(Error::Report(format!(
            "{} and {} are not runs of the same study file and seed ({} seed {} vs {} seed \
             {}); compare runs of one design",
            a.display(),
            b.display(),
            ha.study.id,
            ha.seed,
            hb.study.id,
            hb.seed
        )));
    }
    let (ra, rb) = (trial_records(a, ha.seed)?, trial_records(b, hb.seed)?);
    let rows: Vec<PairRow> = ra
        .iter()
        .filter_map(|(id, x)| rb.get(id).map(|y| pair(x, y)))
        .collect();
    if rows.is_empty() {
        return Err(Error::Report(format!(
            "{} and {} share no trial: trial ids derive from the model's label, so label \
             the server model as the local one (label= in its spec)",
            a.display(),
            b.display()
        )));
    }
    let mut gaps: Vec<f64> = rows
        .iter()
        .map(|r| r.max_prob_gap.0)
        .filter(|g| g.is_finite())
        .collect();
    gaps.sort_by(f64::total_cmp);
    let expected: Vec<f64> = rows
        .iter()
        .map(|r| (r.expected_a.0 - r.expected_b.0).abs())
        .filter(|d| d.is_finite())
        .collect();
    let count = |f: &dyn Fn(&PairRow) -> Option<bool>| {
        let known: Vec<bool> = rows.iter().filter_map(f).collect();
        (known.len(), known.iter().filter(|x| **x).count())
    };
    let (choices, same_top) = count(&|r| r.same_top);
    let (texts, same_texts) = count(&|r| r.same_text);
    let (values, same_value) = count(&|r| {
        (r.value_a.0.is_finite() && r.value_b.0.is_finite()).then_some(r.value_a.0 == r.value_b.0)
    });
    let agreement = Agreement {
        paired: rows.len(),
        only_a: ra.keys().filter(|k| !rb.contains_key(*k)).count(),
        only_b: rb.keys().filter(|k| !ra.contains_key(*k)).count(),
        choices,
        same_top,
        gap_median: quantile(&gaps, 0.5),
        gap_p90: quantile(&gaps, 0.9),
        gap_max: gaps.last().copied().unwrap_or(f64::NAN),
        expected_mean_abs: mean(&expected),
        values,
        same_value,
        texts,
        same_texts,
    };
    Ok((agreement, rows))
}

/// Writes the paired rows as CSV.
pub fn write_pairs(path: &Path, rows: &[PairRow]) -> Result<()> {
    write_rows(path, rows)
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v = [0.1, 0.2, 0.3, 0.4];
        assert_eq!(quantile(&v, 0.5), 0.2);
        assert_eq!(quantile(&v, 0.9), 0.4);
        assert_eq!(quantile(&v, 0.0), 0.1);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
