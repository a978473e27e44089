//! How far the completion judges can be trusted: the run's judge per model (order
//! agreement, content-free bias, agreement with the lexicon) and, where other models
//! judged the same completions (`affectbench judge`), the agreement between judges.

use super::scores::CompletionScore;
use crate::measures::validity::MIN_RESPONDENTS;
use crate::stats::mean;
use crate::stats::pearson;
use std::collections::BTreeMap;

/// The side of the neutral zone a valence falls on: negative below -1/3, positive above
/// +1/3 (the judge's options are -1, 0, +1), else neutral.
pub(super) fn side(valence: f64) -> i8 {
    if valence < -1.0 / 3.0 {
        -1
    } else if valence > 1.0 / 3.0 {
        1
    } else {
        0
    }
}

/// Pearson r over pairs, or None: a correlation over a handful of completions says
/// nothing.
fn r_over(pairs: &[(f64, f64)]) -> Option<f64> {
    if pairs.len() < MIN_RESPONDENTS {
        return None;
    }
    let (x, y): (Vec<f64>, Vec<f64>) = pairs.iter().copied().unzip();
    pearson(&x, &y)
}

/// How far the completion scorers can be trusted, per model: how many completions
/// continue their stem, how many the lexicon can score at all, whether the judge gives
/// the same answer whichever order it reads the labels in, what it says with nothing to
/// judge, and whether it agrees with the lexicon.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeQuality {
    pub model: String,
    pub completions: usize,
    /// Completions whose compliance is known, and how many of them continue the stem.
    pub compliance_known: usize,
    pub compliant: usize,
    /// Completions with at least one lexicon word.
    pub lexicon_scored: usize,
    pub judged: usize,
    /// Completions judged in two orders, and how many got the same most probable label
    /// (by the sign of the valence: negative, about zero, positive) in both.
    pub two_orders: usize,
    pub orders_agree: usize,
    /// Mean absolute valence difference between the two orders.
    pub mean_order_gap: f64,
    /// The judge's valence for content-free texts (its bias), mean over completions.
    pub content_free_valence: Option<f64>,
    /// Pearson r between judge and lexicon valence over lexicon-scored completions.
    pub judge_lexicon_r: Option<f64>,
    pub judge_calibrated_lexicon_r: Option<f64>,
}

pub fn judge_quality(completions: &[CompletionScore]) -> Vec<JudgeQuality> {
    let mut by_model: BTreeMap<&str, Vec<&CompletionScore>> = BTreeMap::new();
    for c in completions {
        by_model.entry(&c.model).or_default().push(c);
    }
    by_model
        .into_iter()
        .map(|(model, cs)| {
            let two: Vec<&&CompletionScore> =
                cs.iter().filter(|c| c.judge_by_order.len() == 2).collect();
            let agree = two
                .iter()
                .filter(|c| side(c.judge_by_order[0]) == side(c.judge_by_order[1]))
                .count();
            let gap = if two.is_empty() {
                f64::NAN
            } else {
                two.iter()
                    .map(|c| (c.judge_by_order[0] - c.judge_by_order[1]).abs())
                    .sum::<f64>()
                    / two.len() as f64
            };
            let scored: Vec<&&CompletionScore> =
                cs.iter().filter(|c| c.lexicon_words > 0).collect();
            let r_with = |f: fn(&CompletionScore) -> Option<f64>| {
                let pairs: Vec<(f64, f64)> = scored
                    .iter()
                    .filter_map(|c| f(c).map(|j| (j, c.lexicon)))
                    .collect();
                r_over(&pairs)
            };
            JudgeQuality {
                model: model.to_string(),
                completions: cs.len(),
                compliance_known: cs.iter().filter(|c| c.compliant.is_some()).count(),
                compliant: cs.iter().filter(|c| c.compliant == Some(true)).count(),
                lexicon_scored: scored.len(),
                judged: cs.iter().filter(|c| c.judge.is_some()).count(),
                two_orders: two.len(),
                orders_agree: agree,
                mean_order_gap: gap,
                content_free_valence: {
                    let v: Vec<f64> = cs.iter().filter_map(|c| c.judge_content_free).collect();
                    (!v.is_empty()).then(|| mean(&v))
                },
                judge_lexicon_r: r_with(|c| c.judge),
                judge_calibrated_lexicon_r: r_with(|c| c.judge_calibrated),
            }
        })
        .collect()
}

/// The run's judge (the model that wrote the completions) against a second judge, over
/// the completions both judged, for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeAgreement {
    pub model: String,
    pub second_judge: String,
    pub paired: usize,
    /// Pearson r of the two judges' valences, and of their calibrated valences.
    pub r: Option<f64>,
    pub r_calibrated: Option<f64>,
    /// Completions both judges put on the same side (negative, neutral, positive).
    pub same_side: usize,
    /// The second judge's own order agreement and content-free valence.
    pub second_two_orders: usize,
    pub second_orders_agree: usize,
    pub second_content_free_valence: Option<f64>,
    /// Pearson r of the second judge with the lexicon over lexicon-scored completions.
    pub second_lexicon_r: Option<f64>,
}

pub fn judge_agreement(completions: &[CompletionScore]) -> Vec<JudgeAgreement> {
    let mut by: BTreeMap<(&str, &str), Vec<(&CompletionScore, usize)>> = BTreeMap::new();
    for c in completions {
        for (i, j) in c.second_judges.iter().enumerate() {
            by.entry((&c.model, &j.judge_model))
                .or_default()
                .push((c, i));
        }
    }
    by.into_iter()
        .map(|((model, second), cs)| {
            let both: Vec<(f64, f64)> = cs
                .iter()
                .filter_map(|(c, i)| c.judge.map(|v| (v, c.second_judges[*i].valence)))
                .collect();
            let both_calibrated: Vec<(f64, f64)> = cs
                .iter()
                .filter_map(|(c, i)| {
                    c.judge_calibrated
                        .map(|v| (v, c.second_judges[*i].calibrated))
                        .filter(|(a, b)| a.is_finite() && b.is_finite())
                })
                .collect();
            let two: Vec<&Vec<f64>> = cs
                .iter()
                .map(|(c, i)| &c.second_judges[*i].by_order)
                .filter(|o| o.len() == 2)
                .collect();
            let with_lexicon: Vec<(f64, f64)> = cs
                .iter()
                .filter(|(c, _)| c.lexicon_words > 0)
                .map(|(c, i)| (c.second_judges[*i].valence, c.lexicon))
                .collect();
            let content_free: Vec<f64> = cs
                .iter()
                .map(|(c, i)| c.second_judges[*i].content_free)
                .collect();
            JudgeAgreement {
                model: model.to_string(),
                second_judge: second.to_string(),
                paired: both.len(),
                r: r_over(&both),
                r_calibrated: r_over(&both_calibrated),
                same_side: both.iter().filter(|(a, b)| side(*a) == side(*b)).count(),
                second_two_orders: two.len(),
                second_orders_agree: two.iter().filter(|o| side(o[0]) == side(o[1])).count(),
                second_content_free_valence: (!content_free.is_empty())
                    .then(|| mean(&content_free)),
                second_lexicon_r: r_over(&with_lexicon),
            }
        })
        .collect()
}
