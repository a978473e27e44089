//! From trial records to the units the statistics work on: scale scores per conversation
//! group (one per model x condition x repetition x instrument x subscale, for each
//! read-out), completion valences, and the study's conditions in design order.

use super::lexicon;
use super::load::RunData;
use crate::study::record::TrialRecord;
use serde_json::Value;
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
}

/// A condition as the study declared it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionInfo {
    pub name: String,
    pub induction: Option<String>,
    /// "breathing", "neutral-control:appliance-manual", ...; None without regulation.
    pub regulation: Option<String>,
    pub regulation_first: bool,
}

impl ConditionInfo {
    pub fn is_baseline(&self) -> bool {
        self.induction.is_none() && self.regulation.is_none()
    }
    pub fn is_neutral(&self) -> bool {
        self.induction.as_deref() == Some("neutral") && self.regulation.is_none()
    }
}

/// One scale (or subscale) score of one conversation group.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub model: String,
    pub condition: String,
    pub instrument: String,
    /// The subscale, which for the shipped instruments names the emotion.
    pub emotion: String,
    pub readout: Readout,
    pub repetition: usize,
    pub value: f64,
}

/// One completion with its two valence scores.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionScore {
    pub model: String,
    pub condition: String,
    pub stem: String,
    pub text: String,
    pub lexicon: f64,
    pub lexicon_words: usize,
    /// Expected judge valence (-1 negative .. +1 positive), if the run has judge read-outs.
    pub judge: Option<f64>,
}

pub fn conditions(data: &RunData) -> Vec<ConditionInfo> {
    let mut out: Vec<ConditionInfo> = Vec::new();
    for h in &data.headers {
        for c in h.study["conditions"].as_array().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or_default().to_string();
            if out.iter().any(|x| x.name == name) {
                continue;
            }
            let regulation = match &c["regulation"] {
                Value::Object(r) => {
                    let strategy = r.get("strategy").and_then(|s| s.as_str()).unwrap_or_default();
                    Some(match r.get("variant").and_then(|v| v.as_str()) {
                        Some(v) => format!("{strategy}:{v}"),
                        None => strategy.to_string(),
                    })
                }
                _ => None,
            };
            out.push(ConditionInfo {
                name,
                induction: c["induction"].as_str().map(str::to_string),
                regulation,
                regulation_first: c["order"].as_str() == Some("regulation-first"),
            });
        }
    }
    // Conditions only seen in trials (e.g. a hand-edited run.json) still get reported.
    for t in &data.trials {
        if !out.iter().any(|x| x.name == t.condition) {
            out.push(ConditionInfo { name: t.condition.clone(), induction: t.induction.clone(), regulation: t.regulation.clone(), regulation_first: false });
        }
    }
    out
}

/// Models in the order the runs list them.
pub fn models(data: &RunData) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in data.headers.iter().flat_map(|h| h.models.iter().map(|m| m.label.clone())).chain(data.trials.iter().map(|t| t.model.clone())) {
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

pub fn question_str<'a>(t: &'a TrialRecord, key: &str) -> Option<&'a str> {
    t.question.get(key).and_then(|v| v.as_str())
}

/// Scale scores per group, instrument, subscale and read-out. A score needs every item
/// of its subscale read in that group; with all items in one turn the reply already is
/// the instrument's mean (subscale = the instrument's only subscale, or "all").
pub fn scale_scores(data: &RunData) -> Vec<Score> {
    type Key = (String, String, String, usize, String); // model, group, condition, repetition, instrument
    let mut by_group: BTreeMap<Key, Vec<&TrialRecord>> = BTreeMap::new();
    for t in data.trials.iter().filter(|t| question_str(t, "kind") == Some("item") && t.error.is_none()) {
        let instrument = question_str(t, "instrument").unwrap_or_default().to_string();
        by_group.entry((t.model.clone(), t.group_id.clone(), t.condition.clone(), t.repetition, instrument)).or_default().push(t);
    }
    let mut out = Vec::new();
    for ((model, _, condition, repetition, instrument), trials) in by_group {
        let Some(rule) = data.scoring.get(&instrument) else { continue };
        let mut subscales: Vec<&str> = Vec::new();
        for it in &rule.items {
            if !subscales.contains(&it.subscale.as_str()) {
                subscales.push(&it.subscale);
            }
        }
        let whole = trials.iter().any(|t| t.question.get("item").is_none_or(|v| v.is_null()));
        for readout in Readout::ALL {
            let value_of = |t: &TrialRecord| match readout {
                Readout::Generated => t.generate.as_ref().and_then(|g| g.keyed),
                Readout::Probability => t.choice.as_ref().map(|c| c.keyed_expected),
            };
            if whole {
                let emotion = if subscales.len() == 1 { subscales[0].to_string() } else { "all".to_string() };
                if let Some(v) = trials.first().and_then(|t| value_of(t)) {
                    out.push(Score { model: model.clone(), condition: condition.clone(), instrument: instrument.clone(), emotion, readout, repetition, value: v });
                }
                continue;
            }
            for sub in &subscales {
                let items: Vec<&str> = rule.items.iter().filter(|i| i.subscale == *sub).map(|i| i.id.as_str()).collect();
                let values: Option<Vec<f64>> = items
                    .iter()
                    .map(|id| trials.iter().find(|t| question_str(t, "item") == Some(id)).and_then(|t| value_of(t)))
                    .collect();
                let Some(values) = values else { continue };
                let sum: f64 = values.iter().sum();
                let raw = if rule.scoring == "sum" { sum } else { sum / values.len() as f64 };
                out.push(Score {
                    model: model.clone(),
                    condition: condition.clone(),
                    instrument: instrument.clone(),
                    emotion: sub.to_string(),
                    readout,
                    repetition,
                    value: raw * rule.multiplier,
                });
            }
        }
    }
    out
}

/// The judge's expected valence: sum of probability x option value.
pub fn judge_valence(t: &TrialRecord) -> Option<f64> {
    t.judge.as_ref().map(|j| j.expected)
}

pub fn completion_scores(data: &RunData) -> Vec<CompletionScore> {
    data.trials
        .iter()
        .filter(|t| question_str(t, "kind") == Some("completion") && t.error.is_none())
        .filter_map(|t| {
            let text = t.completion.clone()?;
            let lex = lexicon::score(&text);
            Some(CompletionScore {
                model: t.model.clone(),
                condition: t.condition.clone(),
                stem: question_str(t, "stem").unwrap_or_default().to_string(),
                lexicon: lex.valence,
                lexicon_words: lex.matched,
                judge: judge_valence(t),
                text,
            })
        })
        .collect()
}
