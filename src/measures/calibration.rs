//! Contextual calibration (Zhao et al. 2021) of the probability read-out. A run asks each
//! answer format (instrument x label style x option arrangement) with content-free
//! statements ("N/A", "", "[MASK]") in place of an item; the mean option distribution
//! they get is what the format alone makes the model say. The calibrated read-out of an
//! item divides each option's probability by that distribution and renormalises, so an
//! option that wins only because of where or how it is shown loses that advantage.
//!
//! The calibrated read-out is derived when records are read, never stored: the raw
//! probabilities stay the record of what the model did.

use crate::results::{CalibratedReadout, InstrumentScoring, LabelBinding, Question, TrialRecord};
use crate::scenario::study::LabelStyle;
use std::collections::BTreeMap;

/// One answer format as shown: everything but the statement.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Arrangement {
    pub model: String,
    pub instrument: String,
    pub label_style: LabelStyle,
    pub label_binding: LabelBinding,
    pub option_order: Vec<usize>,
}

/// The content-free distribution of one arrangement.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentFreeDistribution {
    /// The labels in display order, as shown.
    pub labels: Vec<String>,
    /// The option values in display order.
    pub values: Vec<f64>,
    /// Mean probability per display position over the content-free prompts.
    pub probs: Vec<f64>,
    /// How many content-free prompts the mean is over.
    pub n: usize,
}

/// The content-free distributions of a run, by arrangement.
pub type CalibrationTable = BTreeMap<Arrangement, ContentFreeDistribution>;

fn arrangement(t: &TrialRecord) -> Option<Arrangement> {
    let (instrument, label_style, option_order, label_binding) = match &t.question {
        Question::Item {
            instrument,
            label_style,
            option_order,
            label_binding,
            ..
        }
        | Question::ContentFree {
            instrument,
            label_style,
            option_order,
            label_binding,
            ..
        } => (instrument, label_style, option_order, label_binding),
        Question::Completion { .. } => return None,
    };
    Some(Arrangement {
        model: t.model.clone(),
        instrument: instrument.clone(),
        label_style: *label_style,
        label_binding: *label_binding,
        option_order: option_order.clone(),
    })
}

/// Mean content-free distributions from the run's content-free records (errored ones
/// and ones whose options do not match their arrangement's are left out).
pub fn calibration_table(content_free: &[TrialRecord]) -> CalibrationTable {
    // arrangement -> (labels, values, probability sums, prompts)
    type Sums = (Vec<String>, Vec<f64>, Vec<f64>, usize);
    let mut acc: BTreeMap<Arrangement, Sums> = BTreeMap::new();
    for t in content_free.iter().filter(|t| t.error.is_none()) {
        let (Some(key), Some(c)) = (arrangement(t), &t.choice) else {
            continue;
        };
        if c.probs.is_empty() || c.probs.iter().any(|p| !p.is_finite()) {
            continue;
        }
        let entry = acc.entry(key).or_insert_with(|| {
            (
                c.labels.clone(),
                c.values.clone(),
                vec![0.0; c.probs.len()],
                0,
            )
        });
        if entry.2.len() != c.probs.len() {
            continue;
        }
        for (sum, p) in entry.2.iter_mut().zip(&c.probs) {
            *sum += p;
        }
        entry.3 += 1;
    }
    acc.into_iter()
        .map(|(k, (labels, values, sums, n))| {
            let probs = sums.iter().map(|s| s / n as f64).collect();
            (
                k,
                ContentFreeDistribution {
                    labels,
                    values,
                    probs,
                    n,
                },
            )
        })
        .collect()
}

/// `probs` with the content-free distribution divided out, renormalised (None when
/// nothing is left to normalise). Shared by items and the judge.
pub fn divide_out(probs: &[f64], content_free: &[f64]) -> Option<Vec<f64>> {
    // A content-free probability of 0 would make any mass on that option infinitely
    // strong; floor it at the smallest positive double's scale so the ratio stays finite.
    let ratios: Vec<f64> = probs
        .iter()
        .zip(content_free)
        .map(|(p, q)| p / q.max(1e-300))
        .collect();
    let total: f64 = ratios.iter().sum();
    (total.is_finite() && total > 0.0).then(|| ratios.iter().map(|r| r / total).collect())
}

/// The calibrated read-out of one item trial, if its arrangement was calibrated.
/// `reverse_range` is the (min, max) of the item's scale when it is reverse-keyed.
pub fn calibrated_readout(
    t: &TrialRecord,
    table: &CalibrationTable,
    reverse_range: Option<(f64, f64)>,
) -> Option<CalibratedReadout> {
    if !matches!(t.question, Question::Item { item: Some(_), .. }) {
        return None;
    }
    let c = t.choice.as_ref()?;
    let cf = table.get(&arrangement(t)?)?;
    if cf.probs.len() != c.probs.len() || cf.values != c.values {
        return None;
    }
    let probs = divide_out(&c.probs, &cf.probs)?;
    let expected: f64 = probs.iter().zip(&c.values).map(|(p, v)| p * v).sum();
    let best = probs
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)?;
    let keyed_expected = match reverse_range {
        Some((lo, hi)) => lo + hi - expected,
        None => expected,
    };
    Some(CalibratedReadout {
        argmax: c.values[best],
        probs,
        content_free: cf.probs.clone(),
        expected,
        keyed_expected,
    })
}

/// A run's records split, with the calibrated read-out filled in.
pub struct Calibrated {
    /// Item and completion trials; item trials carry `calibrated` where their
    /// arrangement was calibrated.
    pub trials: Vec<TrialRecord>,
    /// The content-free records, as read.
    pub content_free: Vec<TrialRecord>,
    /// The mean content-free distribution per arrangement.
    pub table: CalibrationTable,
}

/// Splits a run's records into the trials and the content-free records, and fills in
/// each item trial's calibrated read-out from the latter.
pub fn calibrate(
    records: Vec<TrialRecord>,
    rules: &BTreeMap<String, InstrumentScoring>,
) -> Calibrated {
    let (content_free, mut trials): (Vec<TrialRecord>, Vec<TrialRecord>) = records
        .into_iter()
        .partition(|t| t.question.is_content_free());
    let table = calibration_table(&content_free);
    for t in &mut trials {
        let reverse_range = match (
            &t.question,
            rules.get(t.question.instrument().unwrap_or("")),
        ) {
            (Question::Item { item: Some(id), .. }, Some(rule)) => rule
                .items
                .iter()
                .find(|i| &i.id == id)
                .filter(|i| i.reverse)
                .map(|_| (rule.min, rule.max)),
            _ => None,
        };
        t.calibrated = calibrated_readout(t, &table, reverse_range);
    }
    Calibrated {
        trials,
        content_free,
        table,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{ChoiceReadout, RecordKind, ScoredItem, Timing};
    use crate::scenario::Scoring;

    fn record(question: Question, probs: Vec<f64>) -> TrialRecord {
        let values = vec![1.0, 2.0, 3.0, 4.0];
        let expected = probs.iter().zip(&values).map(|(p, v)| p * v).sum();
        TrialRecord {
            kind: RecordKind::Trial,
            schema: 2,
            trial_id: "t".into(),
            seed: 1,
            group_id: "g".into(),
            model: "m".into(),
            condition: "c".into(),
            induction: None,
            induction_variant: None,
            regulation: None,
            regulation_variant: None,
            system_prompt_variant: None,
            repetition: 0,
            question,
            prompt: String::new(),
            prompt_sha256: String::new(),
            prompt_tokens: 0,
            generate: None,
            choice: Some(ChoiceReadout {
                labels: vec!["1".into(), "2".into(), "3".into(), "4".into()],
                values,
                probs,
                mass: 0.5,
                expected,
                argmax: 1.0,
                draw: 1.0,
                keyed_expected: expected,
                unobserved: None,
            }),
            completion: None,
            judge: None,
            error: None,
            timing: Timing::default(),
            calibrated: None,
            judge_detail: None,
            continues_stem: None,
            steering: None,
        }
    }

    fn item(id: &str) -> Question {
        Question::Item {
            instrument: "s".into(),
            item: Some(id.into()),
            label_style: LabelStyle::Digits,
            option_order: vec![0, 1, 2, 3],
            label_binding: LabelBinding::Option,
        }
    }

    fn content_free(content: &str) -> Question {
        Question::ContentFree {
            instrument: "s".into(),
            content: content.into(),
            label_style: LabelStyle::Digits,
            option_order: vec![0, 1, 2, 3],
            label_binding: LabelBinding::Option,
        }
    }

    fn rules() -> BTreeMap<String, InstrumentScoring> {
        let rule = InstrumentScoring {
            id: "s".into(),
            scoring: Scoring::Mean,
            multiplier: 1.0,
            min: 1.0,
            max: 4.0,
            items: vec![
                ScoredItem {
                    id: "a".into(),
                    subscale: "s".into(),
                    reverse: false,
                },
                ScoredItem {
                    id: "r".into(),
                    subscale: "s".into(),
                    reverse: true,
                },
            ],
        };
        BTreeMap::from([("s".to_string(), rule)])
    }

    #[test]
    fn the_content_free_bias_is_divided_out_by_hand() {
        // Content-free prompts favour position 1: mean of (0.7, 0.1, 0.1, 0.1) and
        // (0.5, 0.1, 0.2, 0.2) = (0.6, 0.1, 0.15, 0.15).
        let records = vec![
            record(content_free("N/A"), vec![0.7, 0.1, 0.1, 0.1]),
            record(content_free(""), vec![0.5, 0.1, 0.2, 0.2]),
            record(item("a"), vec![0.6, 0.2, 0.1, 0.1]),
            record(item("r"), vec![0.6, 0.2, 0.1, 0.1]),
        ];
        let Calibrated {
            trials,
            content_free,
            table,
        } = calibrate(records, &rules());
        assert_eq!(trials.len(), 2, "content-free records are split off");
        assert_eq!(content_free.len(), 2);
        let cf = table.values().next().unwrap();
        assert_eq!(cf.n, 2);
        for (got, want) in cf.probs.iter().zip([0.6, 0.1, 0.15, 0.15]) {
            assert!((got - want).abs() < 1e-12);
        }
        // Ratios 1, 2, 2/3, 2/3 (sum 13/3): probabilities 3/13, 6/13, 2/13, 2/13.
        let c = trials[0].calibrated.as_ref().unwrap();
        for (got, want) in c.probs.iter().zip([3.0, 6.0, 2.0, 2.0]) {
            assert!((got - want / 13.0).abs() < 1e-12, "{got} vs {want}/13");
        }
        let expected = (3.0 + 12.0 + 6.0 + 8.0) / 13.0;
        assert!((c.expected - expected).abs() < 1e-12);
        assert_eq!(
            c.argmax, 2.0,
            "option 2 wins once position 1's bias is removed"
        );
        assert!((c.keyed_expected - expected).abs() < 1e-12);
        let r = trials[1].calibrated.as_ref().unwrap();
        assert!(
            (r.keyed_expected - (5.0 - expected)).abs() < 1e-12,
            "reverse keyed"
        );
    }

    #[test]
    fn an_arrangement_without_content_free_records_is_not_calibrated() {
        let mut other = record(content_free("N/A"), vec![0.25; 4]);
        if let Question::ContentFree { option_order, .. } = &mut other.question {
            option_order.reverse();
        }
        let trials = calibrate(vec![other, record(item("a"), vec![0.25; 4])], &rules()).trials;
        assert!(trials[0].calibrated.is_none());
    }

    #[test]
    fn a_uniform_content_free_distribution_changes_nothing() {
        let p = vec![0.1, 0.2, 0.3, 0.4];
        let trials = calibrate(
            vec![
                record(content_free("N/A"), vec![0.25; 4]),
                record(item("a"), p.clone()),
            ],
            &rules(),
        )
        .trials;
        let c = trials[0].calibrated.as_ref().unwrap();
        for (a, b) in c.probs.iter().zip(&p) {
            assert!((a - b).abs() < 1e-12);
        }
    }
}
