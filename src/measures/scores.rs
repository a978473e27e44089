//! Scale scores from trial records: one per conversation group x instrument x subscale x
//! read-out. This is the only implementation; the runner's end-of-run summary and the
//! report both call it, so they cannot disagree. The arithmetic (sum or mean of keyed
//! values, times the multiplier) is `Scoring::apply`.

use crate::results::{InstrumentScoring, Question, TrialRecord};
use std::collections::BTreeMap;

/// The two ways a rating is read from the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Readout {
    /// The number or label the model wrote (sampled at the study's temperature).
    Generated,
    /// The expected value of the option probabilities at the answer position.
    Probability,
    /// The probability read-out with the answer format's content-free bias divided out
    /// (`results::calibration`).
    Calibrated,
}

/// Written as its name (`probability`, `calibrated`, `generated`) in every table.
impl serde::Serialize for Readout {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl Readout {
    pub const ALL: [Readout; 3] = [
        Readout::Probability,
        Readout::Calibrated,
        Readout::Generated,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Readout::Generated => "generated",
            Readout::Probability => "probability",
            Readout::Calibrated => "calibrated",
        }
    }

    /// The keyed value this read-out took in one trial, if it was read.
    pub fn keyed_value(self, t: &TrialRecord) -> Option<f64> {
        match self {
            Readout::Generated => t.generate.as_ref().and_then(|g| g.keyed),
            Readout::Probability => t.choice.as_ref().map(|c| c.keyed_expected),
            Readout::Calibrated => t.calibrated.as_ref().map(|c| c.keyed_expected),
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
    /// What the model was shown: a hash of the prompts of the group's trials of this
    /// instrument. Two scores with the same content from a deterministic read-out are
    /// one observation, not two.
    pub content: String,
    /// The texts the conversation showed, as its trials recorded them.
    pub stimuli: Stimuli,
}

/// The stimuli of one conversation: which vignette (induction text), regulation text and
/// system prompt it showed. They are a sample of the texts a design could have used, so
/// an analysis that generalises beyond them treats each as a random factor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stimuli {
    /// "induction/variant", None without an induction text.
    pub vignette: Option<String>,
    /// "regulation/variant", None without a regulation text.
    pub regulation: Option<String>,
    /// The system prompt's index, recorded only under crossed assignment (under modulo
    /// it is the repetition mod the number of prompts, which the study record knows).
    pub system_prompt_variant: Option<usize>,
}

impl Stimuli {
    /// The stimuli a trial recorded.
    pub fn of(t: &TrialRecord) -> Stimuli {
        let text = |name: &Option<String>, variant: &Option<String>| {
            name.as_ref().map(|n| match variant {
                Some(v) => format!("{n}/{v}"),
                None => n.clone(),
            })
        };
        Stimuli {
            vignette: text(&t.induction, &t.induction_variant),
            regulation: text(&t.regulation, &t.regulation_variant),
            system_prompt_variant: t.system_prompt_variant,
        }
    }
}

impl Readout {
    /// Whether the read-out is a function of the prompt alone (no sampling): the same
    /// conversation always gives the same value.
    pub fn is_deterministic(self) -> bool {
        matches!(self, Readout::Probability | Readout::Calibrated)
    }
}

/// Scale scores per group, instrument, subscale and read-out. A score needs every item
/// of its subscale read in that group; with all items in one turn the reply already is
/// the instrument's score. Errored trials and instruments without a rule are skipped.
pub fn scale_scores<'a>(
    trials: impl IntoIterator<Item = &'a TrialRecord>,
    rules: &BTreeMap<String, InstrumentScoring>,
) -> Vec<ScaleScore> {
    // (model, seed, group, condition, repetition, instrument) -> its trials
    type Key = (String, u64, String, String, usize, String);
    let mut by_group: BTreeMap<Key, Vec<&TrialRecord>> = BTreeMap::new();
    for t in trials.into_iter().filter(|t| t.error.is_none()) {
        let Question::Item { instrument, .. } = &t.question else {
            continue;
        };
        let key = (
            t.model.clone(),
            t.seed,
            t.group_id.clone(),
            t.condition.clone(),
            t.repetition,
            instrument.clone(),
        );
        by_group.entry(key).or_default().push(t);
    }
    let mut out = Vec::new();
    for ((model, seed, _, condition, repetition, instrument), trials) in by_group {
        let Some(rule) = rules.get(&instrument) else {
            continue;
        };
        let subscales = rule.subscales();
        let content = {
            let mut prompts: Vec<&str> = trials.iter().map(|t| t.prompt_sha256.as_str()).collect();
            prompts.sort_unstable();
            crate::chat::sha256_hex(prompts.join(" ").as_bytes())
        };
        let stimuli = Stimuli::of(trials[0]);
        let score = |subscale: &str, readout: Readout, value: f64| ScaleScore {
            model: model.clone(),
            condition: condition.clone(),
            instrument: instrument.clone(),
            subscale: subscale.to_string(),
            readout,
            seed,
            repetition,
            value,
            content: content.clone(),
            stimuli: stimuli.clone(),
        };
        let whole = trials.iter().any(|t| t.question.is_whole_instrument());
        for readout in Readout::ALL {
            if whole {
                let subscale = if subscales.len() == 1 {
                    subscales[0]
                } else {
                    "all"
                };
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
                    .map(|i| {
                        trials
                            .iter()
                            .find(|t| t.question.item() == Some(i.id.as_str()))
                            .and_then(|t| readout.keyed_value(t))
                    })
                    .collect();
                if let Some(v) = rule.scoring.apply(&keyed, rule.multiplier) {
                    out.push(score(sub, readout, v));
                }
            }
        }
    }
    out
}

/// Identical repetitions dropped per (model, condition, instrument, subscale, read-out).
pub type DroppedRepeats = BTreeMap<(String, String, String, String, Readout), usize>;

/// The scores that are distinct observations: a deterministic read-out's score whose
/// conversation (`content`) was already seen for the same model, condition, instrument
/// and subscale is the same observation again (every repetition of a condition that
/// shows the model identical prompts gives identical numbers) and is dropped. Returns
/// the kept scores and how many were dropped per (model, condition, instrument,
/// subscale, read-out).
pub fn distinct_observations(scores: Vec<ScaleScore>) -> (Vec<ScaleScore>, DroppedRepeats) {
    let mut seen = std::collections::HashSet::new();
    let mut dropped = BTreeMap::new();
    let mut kept = Vec::with_capacity(scores.len());
    for s in scores {
        let key = (
            s.model.clone(),
            s.condition.clone(),
            s.instrument.clone(),
            s.subscale.clone(),
            s.readout,
        );
        if s.readout.is_deterministic() && !seen.insert((key.clone(), s.content.clone())) {
            *dropped.entry(key).or_insert(0) += 1;
            continue;
        }
        kept.push(s);
    }
    (kept, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{ChoiceReadout, GenerateReadout, RecordKind, ScoredItem, Timing};
    use crate::sampling::Sampling;
    use crate::scenario::study::LabelStyle;
    use crate::scenario::Scoring;

    fn item(group: &str, item: &str, generated: Option<f64>, probability: f64) -> TrialRecord {
        TrialRecord {
            kind: RecordKind::Trial,
            schema: 2,
            trial_id: format!("{group}-{item}"),
            seed: 1,
            group_id: group.into(),
            model: "m".into(),
            condition: "c".into(),
            induction: None,
            induction_variant: None,
            regulation: None,
            regulation_variant: None,
            system_prompt_variant: None,
            repetition: if group == "g1" { 0 } else { 1 },
            question: Question::Item {
                instrument: "scale".into(),
                item: Some(item.into()),
                label_style: LabelStyle::Digits,
                option_order: vec![],
                label_binding: Default::default(),
            },
            prompt: String::new(),
            prompt_sha256: String::new(),
            prompt_tokens: 0,
            generate: Some(GenerateReadout {
                replies: vec![],
                failures: vec![],
                value: generated,
                keyed: generated,
                sampling: Sampling::Greedy,
                tokens: 0,
            }),
            choice: Some(ChoiceReadout {
                labels: vec![],
                values: vec![],
                probs: vec![],
                mass: 1.0,
                expected: probability,
                argmax: 0.0,
                draw: 0.0,
                keyed_expected: probability,
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

    #[test]
    fn scores_follow_the_rule_per_subscale_and_need_every_item() {
        let rule = InstrumentScoring {
            id: "scale".into(),
            scoring: Scoring::Sum,
            multiplier: 2.0,
            min: 1.0,
            max: 4.0,
            items: vec![
                ScoredItem {
                    id: "a".into(),
                    subscale: "x".into(),
                    reverse: false,
                },
                ScoredItem {
                    id: "b".into(),
                    subscale: "x".into(),
                    reverse: true,
                },
                ScoredItem {
                    id: "c".into(),
                    subscale: "y".into(),
                    reverse: false,
                },
            ],
        };
        let rules = BTreeMap::from([("scale".to_string(), rule)]);
        // Group 1 answers everything; group 2 leaves item b unread by generation.
        let trials = vec![
            item("g1", "a", Some(1.0), 1.5),
            item("g1", "b", Some(3.0), 2.5),
            item("g1", "c", Some(4.0), 3.0),
            item("g2", "a", Some(2.0), 1.0),
            item("g2", "b", None, 1.0),
            item("g2", "c", Some(1.0), 2.0),
        ];
        let scores = scale_scores(&trials, &rules);
        let got: Vec<(usize, &str, Readout, f64)> = scores
            .iter()
            .map(|s| (s.repetition, s.subscale.as_str(), s.readout, s.value))
            .collect();
        let want = vec![
            (0, "x", Readout::Probability, 2.0 * (1.5 + 2.5)),
            (0, "y", Readout::Probability, 2.0 * 3.0),
            (0, "x", Readout::Generated, 2.0 * (1.0 + 3.0)),
            (0, "y", Readout::Generated, 2.0 * 4.0),
            (1, "x", Readout::Probability, 2.0 * (1.0 + 1.0)),
            (1, "y", Readout::Probability, 2.0 * 2.0),
            // (1, "x", Generated) is missing: item b was not read.
            (1, "y", Readout::Generated, 2.0 * 1.0),
        ];
        assert_eq!(got, want);
        assert_eq!(Scoring::Mean.apply(&[Some(1.0), Some(2.0)], 3.0), Some(4.5));
        assert_eq!(Scoring::Mean.apply(&[], 1.0), None);
    }
}
