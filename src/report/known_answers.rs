//! The completion judge treated as an instrument: on sentences of known valence, how
//! often it puts a sentence on the right side (per order asked and over both), how far it
//! leans to one side on a balanced set, and whether that passes, shown before any
//! negativity-bias result the judge feeds (`tables/judge_known_answers.csv`).

use super::blocks::{f, table, Block};
use super::judging::side;
use crate::error::Result;
use crate::results::csv_table::{self, Num};
use crate::results::known_answers::KnownAnswerRecord;
use crate::stats::mean;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A judge passes with at least this share of known sentences on the right side...
pub const MIN_ACCURACY: f64 = 0.8;
/// ...and a mean valence on the balanced set (its lean) within this of 0 (the judge's
/// options are -1, 0, +1).
pub const MAX_LEAN: f64 = 0.25;

/// One judging model's known-answer check for one task.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownAnswerSummary {
    pub judge_model: String,
    pub task: String,
    pub set: String,
    pub sentences: usize,
    /// Share on the right side, from the mean over orders, and per order asked.
    pub accuracy: f64,
    pub accuracy_by_order: Vec<f64>,
    /// With the content-free bias divided out.
    pub calibrated_accuracy: f64,
    pub mean_positive: f64,
    pub mean_negative: f64,
    /// Mean valence over the whole (balanced) set: 0 for a judge with no lean.
    pub lean: f64,
    /// Share of sentences put on the same side in every order asked.
    pub order_agreement: f64,
    pub mean_mass: f64,
    pub passes: bool,
}

fn share(hits: impl Iterator<Item = bool>) -> f64 {
    let (k, n) = hits.fold((0usize, 0usize), |(k, n), h| (k + h as usize, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        k as f64 / n as f64
    }
}

/// The summaries, one per judging model and task, sorted.
pub fn summarise(records: &[KnownAnswerRecord]) -> Vec<KnownAnswerSummary> {
    let mut by: BTreeMap<(&str, &str), Vec<&KnownAnswerRecord>> = BTreeMap::new();
    for r in records {
        by.entry((&r.judge_model, &r.task)).or_default().push(r);
    }
    by.into_iter()
        .map(|((judge_model, task), rs)| {
            let orders = rs.iter().map(|r| r.by_order.len()).max().unwrap_or(0);
            let values = |pick: fn(&KnownAnswerRecord) -> bool| -> Vec<f64> {
                rs.iter().filter(|r| pick(r)).map(|r| r.expected).collect()
            };
            let accuracy = share(rs.iter().map(|r| side(r.expected) == r.valence));
            let lean = mean(&rs.iter().map(|r| r.expected).collect::<Vec<_>>());
            KnownAnswerSummary {
                judge_model: judge_model.to_string(),
                task: task.to_string(),
                set: rs[0].set.clone(),
                sentences: rs.len(),
                accuracy,
                accuracy_by_order: (0..orders)
                    .map(|o| {
                        share(
                            rs.iter()
                                .filter_map(|r| r.by_order.get(o).map(|v| side(*v) == r.valence)),
                        )
                    })
                    .collect(),
                calibrated_accuracy: share(
                    rs.iter().map(|r| side(r.calibrated_expected) == r.valence),
                ),
                mean_positive: mean(&values(|r| r.valence > 0)),
                mean_negative: mean(&values(|r| r.valence < 0)),
                lean,
                order_agreement: share(rs.iter().map(|r| {
                    let sides: Vec<i8> = r.by_order.iter().map(|v| side(*v)).collect();
                    sides.windows(2).all(|w| w[0] == w[1])
                })),
                mean_mass: mean(&rs.iter().map(|r| r.mass).collect::<Vec<_>>()),
                passes: accuracy >= MIN_ACCURACY && lean.abs() <= MAX_LEAN,
            }
        })
        .collect()
}

/// What the negativity section shows first: each judge's check, or that none was made.
pub fn blocks(summaries: &[KnownAnswerSummary]) -> Vec<Block> {
    if summaries.is_empty() {
        return vec![Block::Text(
            "The judge's known-answer check is missing (runs made before it existed, or a sharded run): \
             run `affectbench judge RUN --model MODEL` with the run's model to add it. Until then the \
             judge's accuracy on sentences of known valence is unknown."
                .into(),
        )];
    }
    let verdicts: Vec<String> = summaries
        .iter()
        .map(|s| {
            format!(
                "{} judging {}: {}",
                s.judge_model,
                s.task,
                if s.passes {
                    "passes: its valence read-outs below measure valence".to_string()
                } else {
                    format!(
                        "FAILS (needs accuracy >= {MIN_ACCURACY} and |lean| <= {MAX_LEAN}): the judge and judge-calibrated rows below rest on a judge that does not tell known positive from known negative sentences and answer nothing; read the lexicon rows"
                    )
                }
            )
        })
        .collect();
    vec![
        Block::Text(format!(
            "The judge as an instrument, checked first: {} sentences of known valence (half positive, half negative; scenarios/judges/known-valence.toml) rated with the same judge question, in every order it is asked (tables/judge_known_answers.csv).",
            summaries[0].sentences
        )),
        table(
            "Judge known-answer check",
            &[
                "judge",
                "task",
                "sentences",
                "accuracy",
                "accuracy by order",
                "calibrated accuracy",
                "mean on positive",
                "mean on negative",
                "lean (mean, balanced set)",
                "same side in every order",
                "label mass",
                "verdict",
            ],
            summaries
                .iter()
                .map(|s| {
                    vec![
                        s.judge_model.clone(),
                        s.task.clone(),
                        s.sentences.to_string(),
                        f(s.accuracy, 2),
                        s.accuracy_by_order
                            .iter()
                            .map(|a| f(*a, 2))
                            .collect::<Vec<_>>()
                            .join(" / "),
                        f(s.calibrated_accuracy, 2),
                        f(s.mean_positive, 2),
                        f(s.mean_negative, 2),
                        f(s.lean, 2),
                        f(s.order_agreement, 2),
                        f(s.mean_mass, 2),
                        if s.passes { "pass" } else { "FAIL" }.into(),
                    ]
                })
                .collect(),
        ),
        Block::List(verdicts),
    ]
}

/// A row of `judge_known_answers.csv`.
#[derive(Serialize, Default)]
struct Row {
    judge_model: String,
    task: String,
    set: String,
    sentences: usize,
    accuracy: Num,
    accuracy_by_order: String,
    calibrated_accuracy: Num,
    mean_positive: Num,
    mean_negative: Num,
    lean: Num,
    order_agreement: Num,
    mean_label_mass: Num,
    min_accuracy: Num,
    max_lean: Num,
    validity: &'static str,
}

/// Writes `judge_known_answers.csv` where a check exists; the path written.
pub fn write_csv(dir: &Path, summaries: &[KnownAnswerSummary]) -> Result<Option<PathBuf>> {
    if summaries.is_empty() {
        return Ok(None);
    }
    let path = dir.join("judge_known_answers.csv");
    csv_table::write_table(
        &path,
        summaries.iter().map(|s| Row {
            judge_model: s.judge_model.clone(),
            task: s.task.clone(),
            set: s.set.clone(),
            sentences: s.sentences,
            accuracy: Num(s.accuracy),
            accuracy_by_order: s
                .accuracy_by_order
                .iter()
                .map(|a| format!("{a}"))
                .collect::<Vec<_>>()
                .join(";"),
            calibrated_accuracy: Num(s.calibrated_accuracy),
            mean_positive: Num(s.mean_positive),
            mean_negative: Num(s.mean_negative),
            lean: Num(s.lean),
            order_agreement: Num(s.order_agreement),
            mean_label_mass: Num(s.mean_mass),
            min_accuracy: Num(MIN_ACCURACY),
            max_lean: Num(MAX_LEAN),
            validity: if s.passes { "pass" } else { "fail" },
        }),
        Row::default(),
    )?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(sentence: &str, valence: i8, by_order: [f64; 2]) -> KnownAnswerRecord {
        KnownAnswerRecord {
            judge_model: "m".into(),
            task: "t".into(),
            set: "known-valence".into(),
            set_sha256: "x".into(),
            sentence: sentence.into(),
            valence,
            expected: (by_order[0] + by_order[1]) / 2.0,
            by_order: by_order.to_vec(),
            calibrated_expected: by_order[0],
            mass: 0.9,
        }
    }

    #[test]
    fn a_judge_that_calls_everything_negative_fails_on_its_lean() {
        let records: Vec<_> = (0..10)
            .map(|i| rec(&format!("s{i}"), if i < 5 { 1 } else { -1 }, [-0.9, -0.8]))
            .collect();
        let s = &summarise(&records)[0];
        assert!((s.accuracy - 0.5).abs() < 1e-12);
        assert!(s.lean < -0.8);
        assert!(!s.passes);
    }

    #[test]
    fn a_judge_right_in_both_orders_passes_and_one_that_follows_position_disagrees_across_orders() {
        let right: Vec<_> = (0..10)
            .map(|i| {
                let v = if i < 5 { 1 } else { -1 };
                rec(&format!("s{i}"), v, [0.9 * v as f64, 0.8 * v as f64])
            })
            .collect();
        let s = &summarise(&right)[0];
        assert_eq!((s.accuracy, s.order_agreement, s.passes), (1.0, 1.0, true));
        let positional: Vec<_> = (0..10)
            .map(|i| rec(&format!("s{i}"), if i < 5 { 1 } else { -1 }, [-0.9, 0.9]))
            .collect();
        let s = &summarise(&positional)[0];
        assert_eq!(s.order_agreement, 0.0);
        assert_eq!(s.accuracy_by_order, vec![0.5, 0.5]);
        assert!(!s.passes);
    }
}
