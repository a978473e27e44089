//! Scale scores from trial records: one per conversation group x instrument x subscale x
//! read-out. This is the only implementation; the runner's end-of-run summary and the
//! report both call it, so they cannot disagree. The arithmetic (sum or mean of keyed
//! values, times the multiplier) is `Scoring::apply`.

use super::{InstrumentScoring, Question, TrialRecord};
use std::collections::BTreeMap;

/// The two ways a rating is read from the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Readout {
    /// The number or label the model wrote (sampled at the study's temperature).
    Generated,
    /// The expected value of the option probabilities at the answer position.
    Probability,
}

impl Readout {
    pub const ALL: [Readout; 2] = [Readout::Probability, Readout::Generated];

    pub fn name(self) -> &'static str {
        match self {
            Readout::Generated => "generated",
            Readout::Probability => "probability",
        }
    }

    /// The keyed value this read-out took in one trial, if it was read.
    pub fn keyed_value(self, t: &TrialRecord) -> Option<f64> {
        match self {
            Readout::Generated => t.generate.as_ref().and_then(|g| g.keyed),
            Readout::Probability => t.choice.as_ref().map(|c| c.keyed_expected),
        }
    }
}

/// One scale (or subscale) score of one conversation group.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleScore {
    pub model: String,
    pub condition: String,
    pub instrument: String,
    /// The subscale (for the shipped instruments it names the emotion); for a whole
    /// instrument asked in one turn, its only subscale or "all".
    pub subscale: String,
    pub readout: Readout,
    pub seed: u64,
    pub repetition: usize,
    pub value: f64,
}

/// Scale scores per group, instrument, subscale and read-out. A score needs every item
/// of its subscale read in that group; with all items in one turn the reply already is
/// the instrument's score. Errored trials and instruments without a rule are skipped.
pub fn scale_scores<'a>(trials: impl IntoIterator<Item = &'a TrialRecord>, rules: &BTreeMap<String, InstrumentScoring>) -> Vec<ScaleScore> {
    // (model, seed, group, condition, repetition, instrument) -> its trials
    type Key = (String, u64, String, String, usize, String);
    let mut by_group: BTreeMap<Key, Vec<&TrialRecord>> = BTreeMap::new();
    for t in trials.into_iter().filter(|t| t.error.is_none()) {
        let Question::Item { instrument, .. } = &t.question else { continue };
        let key = (t.model.clone(), t.seed, t.group_id.clone(), t.condition.clone(), t.repetition, instrument.clone());
        by_group.entry(key).or_default().push(t);
    }
    let mut out = Vec::new();
    for ((model, seed, _, condition, repetition, instrument), trials) in by_group {
        let Some(rule) = rules.get(&instrument) else { continue };
        let subscales = rule.subscales();
        let score = |subscale: &str, readout: Readout, value: f64| ScaleScore {
            model: model.clone(),
            condition: condition.clone(),
            instrument: instrument.clone(),
            subscale: subscale.to_string(),
            readout,
            seed,
            repetition,
            value,
        };
        let whole = trials.iter().any(|t| t.question.is_whole_instrument());
        for readout in Readout::ALL {
            if whole {
                let subscale = if subscales.len() == 1 { subscales[0] } else { "all" };
                if let Some(v) = trials.first().and_then(|t| readout.keyed_value(t)) {
                    out.push(score(subscale, readout, v));
                }
                continue;
            }
            for sub in &subscales {
                let keyed: Vec<Option<f64>> = rule
                    .items
                    .iter()
                    .filter(|i| i.subscale == *sub)
                    .map(|i| trials.iter().find(|t| t.question.item() == Some(i.id.as_str())).and_then(|t| readout.keyed_value(t)))
                    .collect();
                if let Some(v) = rule.scoring.apply(&keyed, rule.multiplier) {
                    out.push(score(sub, readout, v));
                }
            }
        }
    }
    out
}
