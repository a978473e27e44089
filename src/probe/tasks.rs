//! What the probes decode: pairs of a run's conditions (an induced emotion vs the
//! neutral text, a regulated condition vs the same induction unregulated, the instructed
//! high vs low state), the samples of each, and the folds that hold out whole
//! induction variants.

use crate::results::states::States;
use crate::results::{Question, TrialRecord};
use crate::scenario::study::{PositiveControl, CONTROL_HIGH, CONTROL_LOW};
use crate::scenario::Condition;
use std::collections::{BTreeMap, BTreeSet};

/// Two conditions to tell apart; `direction` names the mean difference a - b.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeTask {
    pub direction: String,
    pub a: String,
    pub b: String,
    /// `induction`, `regulation` or `instructed`.
    pub kind: &'static str,
}

/// A name of letters, digits, '-' and '_'.
fn name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The tasks a run's design supports: every unregulated induction (but the neutral one)
/// against the unregulated neutral text, every regulated condition against its
/// induction unregulated, and the positive control's high against low.
pub fn tasks(conditions: &[Condition], control: Option<&PositiveControl>) -> Vec<ProbeTask> {
    let plain = |c: &Condition| c.regulation.is_none() && c.steering.is_none();
    let mut out = Vec::new();
    let neutral = conditions
        .iter()
        .find(|c| plain(c) && c.induction.as_deref() == Some("neutral"));
    let reserved = [CONTROL_LOW, CONTROL_HIGH];
    for c in conditions
        .iter()
        .filter(|c| plain(c) && !reserved.contains(&c.name.as_str()))
    {
        match (&c.induction, neutral) {
            (Some(e), Some(n)) if e != "neutral" => out.push(ProbeTask {
                direction: name(e),
                a: c.name.clone(),
                b: n.name.clone(),
                kind: "induction",
            }),
            _ => {}
        }
    }
    for c in conditions.iter().filter(|c| c.steering.is_none()) {
        let (Some(e), Some(r)) = (&c.induction, &c.regulation) else {
            continue;
        };
        if let Some(base) = conditions
            .iter()
            .find(|b| plain(b) && b.induction.as_deref() == Some(e))
        {
            out.push(ProbeTask {
                direction: name(&format!("{e}-{}", r.strategy)),
                a: c.name.clone(),
                b: base.name.clone(),
                kind: "regulation",
            });
        }
    }
    if let Some(pc) = control {
        out.push(ProbeTask {
            direction: "instructed".into(),
            a: pc.high_condition.clone(),
            b: pc.low_condition.clone(),
            kind: "instructed",
        });
    }
    out
}

/// One trial a probe reads.
#[derive(Debug, Clone)]
pub struct Sample {
    pub trial_id: String,
    pub group: String,
    /// In condition a (else b).
    pub is_a: bool,
    pub fold: usize,
    /// The record of its states.
    pub record: usize,
    /// The self-report (probability read-out's expected value after reverse keying),
    /// standardised within its item across the task's samples.
    pub self_report: Option<f64>,
    /// Its group's conversation is longer than the median (the control task).
    pub long: bool,
}

/// A task's samples and folds, or why it cannot be probed.
pub struct TaskData {
    /// Item trials of items asked in both conditions.
    pub samples: Vec<Sample>,
    pub folds: usize,
}

/// The samples of `task` among `trials` (one model's), with folds by induction variant:
/// variants are ranked within each condition and rank r goes to fold r mod k, k the
/// smaller number of variants, so each fold holds out whole texts of both conditions.
pub fn task_data(
    task: &ProbeTask,
    trials: &[&TrialRecord],
    states: &States,
) -> Result<TaskData, String> {
    let item_key = |t: &TrialRecord| match &t.question {
        Question::Item {
            instrument,
            item: Some(item),
            ..
        } => Some((instrument.clone(), item.clone())),
        _ => None,
    };
    let usable = |t: &&&TrialRecord| {
        t.error.is_none() && item_key(t).is_some() && states.index.contains_key(&t.trial_id)
    };
    let of = |c: &str| -> Vec<&TrialRecord> {
        trials
            .iter()
            .filter(|t| t.condition == c)
            .filter(usable)
            .copied()
            .collect()
    };
    let (a, b) = (of(&task.a), of(&task.b));
    let keys = |v: &[&TrialRecord]| -> BTreeSet<(String, String)> {
        v.iter().filter_map(|t| item_key(t)).collect()
    };
    let shared: BTreeSet<_> = keys(&a).intersection(&keys(&b)).cloned().collect();
    if shared.is_empty() {
        return Err(format!(
            "'{}' and '{}' share no item with captured states",
            task.a, task.b
        ));
    }
    let variants = |v: &[&TrialRecord]| -> Vec<Option<String>> {
        let set: BTreeSet<Option<String>> = v.iter().map(|t| t.induction_variant.clone()).collect();
        set.into_iter().collect()
    };
    let (va, vb) = (variants(&a), variants(&b));
    if va.contains(&None) || vb.contains(&None) {
        return Err("a condition without an induction text has no variants to hold out".into());
    }
    let folds = va.len().min(vb.len());
    if folds < 2 {
        return Err(format!(
            "'{}' and '{}' need at least two induction variants each to hold one out (have {} and {})",
            task.a,
            task.b,
            va.len(),
            vb.len()
        ));
    }
    let mut samples = Vec::new();
    let mut group_len: BTreeMap<String, usize> = BTreeMap::new();
    for (is_a, list, vars) in [(true, &a, &va), (false, &b, &vb)] {
        for t in list
            .iter()
            .filter(|t| item_key(t).is_some_and(|k| shared.contains(&k)))
        {
            let rank = vars
                .iter()
                .position(|v| v == &t.induction_variant)
                .expect("collected above");
            let len = group_len.entry(t.group_id.clone()).or_insert(usize::MAX);
            *len = (*len).min(t.prompt_tokens);
            samples.push(Sample {
                trial_id: t.trial_id.clone(),
                group: t.group_id.clone(),
                is_a,
                fold: rank % folds,
                record: states.index[&t.trial_id],
                self_report: t.choice.as_ref().map(|c| c.keyed_expected),
                long: false,
            });
        }
    }
    // The control label: the group's shortest prompt above the median of the groups.
    let mut lens: Vec<usize> = group_len.values().copied().collect();
    lens.sort_unstable();
    let median = lens[lens.len() / 2];
    for s in &mut samples {
        s.long = group_len[&s.group] >= median;
    }
    standardise_self_reports(&mut samples, trials);
    Ok(TaskData { samples, folds })
}

/// Self-reports as z-scores within each item (instrument scales differ).
fn standardise_self_reports(samples: &mut [Sample], trials: &[&TrialRecord]) {
    let key_of: BTreeMap<&str, String> = trials
        .iter()
        .map(|t| {
            (
                t.trial_id.as_str(),
                format!("{:?}{:?}", t.question.instrument(), t.question.item()),
            )
        })
        .collect();
    let mut by_item: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for s in samples.iter() {
        if let Some(v) = s.self_report {
            by_item
                .entry(key_of[s.trial_id.as_str()].clone())
                .or_default()
                .push(v);
        }
    }
    let stats: BTreeMap<String, (f64, f64)> = by_item
        .into_iter()
        .map(|(k, v)| {
            let n = v.len() as f64;
            let mean = v.iter().sum::<f64>() / n;
            let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
            (k, (mean, sd))
        })
        .collect();
    for s in samples.iter_mut() {
        let (mean, sd) = stats
            .get(&key_of[s.trial_id.as_str()])
            .copied()
            .unwrap_or((0.0, 0.0));
        s.self_report = s
            .self_report
            .filter(|_| sd > 1e-12)
            .map(|v| (v - mean) / sd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::study::{Order, RegulationRef};

    fn cond(name: &str, induction: Option<&str>, regulation: Option<&str>) -> Condition {
        Condition {
            name: name.into(),
            induction: induction.map(String::from),
            regulation: regulation.map(|r| RegulationRef {
                strategy: r.into(),
                variant: None,
            }),
            order: Order::InductionFirst,
            instruments: vec![],
            steering: None,
            setup: Default::default(),
        }
    }

    #[test]
    fn tasks_pair_inductions_with_neutral_and_regulations_with_their_induction() {
        let conditions = vec![
            cond("baseline", None, None),
            cond("neutral/none", Some("neutral"), None),
            cond("anxiety/none", Some("anxiety"), None),
            cond("anxiety/breathing", Some("anxiety"), Some("breathing")),
            cond(
                "anxiety/neutral-control:appliance-manual",
                Some("anxiety"),
                Some("neutral-control"),
            ),
        ];
        let t = tasks(&conditions, None);
        let names: Vec<(&str, &str, &str)> = t
            .iter()
            .map(|t| (t.direction.as_str(), t.a.as_str(), t.b.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("anxiety", "anxiety/none", "neutral/none"),
                ("anxiety-breathing", "anxiety/breathing", "anxiety/none"),
                (
                    "anxiety-neutral-control",
                    "anxiety/neutral-control:appliance-manual",
                    "anxiety/none"
                ),
            ]
        );
    }
}
