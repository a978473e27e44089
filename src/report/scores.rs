//! From trial records to the units the statistics work on: scale scores per conversation
//! group (computed by `results::scale_scores`, the one implementation), completion
//! valences, and the study's conditions in design order.

use super::lexicon;
use super::load::RunData;
use crate::results::{Question, TrialRecord};
use crate::scenario::Order;
use std::collections::BTreeMap;

pub use crate::measures::scores::{Readout, ScaleScore, Stimuli};

/// A condition as the study declared it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionInfo {
    pub name: String,
    pub induction: Option<String>,
    /// "breathing", "neutral-control:appliance-manual", ...; None without regulation.
    pub regulation: Option<String>,
    pub regulation_first: bool,
    /// A steered condition's direction and strength.
    pub steering: Option<(String, f64)>,
    /// Whether the condition sets its own conversation set-up (role, expectancy,
    /// perspective, acknowledgement): then it is neither the baseline nor the neutral
    /// reference, whatever texts it reads.
    pub own_setup: bool,
}

impl ConditionInfo {
    pub fn is_baseline(&self) -> bool {
        self.induction.is_none()
            && self.regulation.is_none()
            && self.steering.is_none()
            && !self.own_setup
    }
    pub fn is_neutral(&self) -> bool {
        self.induction.as_deref() == Some("neutral")
            && self.regulation.is_none()
            && self.steering.is_none()
            && !self.own_setup
    }
}

/// One completion with its two valence scores.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionScore {
    pub model: String,
    pub condition: String,
    pub stem: String,
    /// The conversation (run seed and group) the completion was sampled in: completions
    /// of one conversation share its prefix and are not independent.
    pub conversation: String,
    /// The conversation's vignette ("induction/variant"; None without an induction) and
    /// system prompt (`system_prompt_level`): the stimuli it rests on.
    pub vignette: Option<String>,
    pub system_prompt: String,
    pub text: String,
    pub lexicon: f64,
    pub lexicon_words: usize,
    /// Expected judge valence (-1 negative .. +1 positive), if the run has judge read-outs.
    pub judge: Option<f64>,
    /// The judge's valence with its content-free bias divided out (runs since 2026-11-24).
    pub judge_calibrated: Option<f64>,
    /// Judge valence per option order asked (one entry when asked in one order).
    pub judge_by_order: Vec<f64>,
    /// The judge's valence for content-free texts: its bias with nothing to judge.
    pub judge_content_free: Option<f64>,
    /// Whether the completion continues its stem (runs since 2026-11-24).
    pub compliant: Option<bool>,
    /// Other models' judgements of the same text (`affectbench judge`).
    pub second_judges: Vec<SecondJudgeScore>,
}

/// One other model's judgement of a completion, in the same units as the run's judge.
#[derive(Debug, Clone, PartialEq)]
pub struct SecondJudgeScore {
    pub judge_model: String,
    pub valence: f64,
    pub calibrated: f64,
    pub by_order: Vec<f64>,
    pub content_free: f64,
}

/// The expected value of `probs` over `values`.
fn expected(probs: &[f64], values: &[f64]) -> f64 {
    probs.iter().zip(values).map(|(p, v)| p * v).sum()
}

/// The completion scorers the negativity analysis reports: each on all completions and
/// on those that continue their stem.
pub const SCORERS: [&str; 6] = [
    "lexicon",
    "judge",
    "judge-calibrated",
    "lexicon, compliant",
    "judge, compliant",
    "judge-calibrated, compliant",
];

/// The scorers for these completions: `SCORERS`, then for each second judge (`affectbench
/// judge`) `judge:<label>` and `judge-calibrated:<label>`, on all and compliant ones.
pub fn scorers(completions: &[CompletionScore]) -> Vec<String> {
    let mut out: Vec<String> = SCORERS.iter().map(|s| s.to_string()).collect();
    let judges: std::collections::BTreeSet<&str> = completions
        .iter()
        .flat_map(|c| c.second_judges.iter().map(|j| j.judge_model.as_str()))
        .collect();
    for suffix in ["", ", compliant"] {
        for j in &judges {
            out.push(format!("judge:{j}{suffix}"));
            out.push(format!("judge-calibrated:{j}{suffix}"));
        }
    }
    out
}

/// A completion's valence under `scorer` (one of `scorers`); None where the scorer does
/// not apply (no judge, not compliant, or compliance unknown).
pub fn scorer_value(scorer: &str, c: &CompletionScore) -> Option<f64> {
    let (base, compliant_only) = match scorer.strip_suffix(", compliant") {
        Some(base) => (base, true),
        None => (scorer, false),
    };
    if compliant_only && c.compliant != Some(true) {
        return None;
    }
    match base {
        "lexicon" => Some(c.lexicon),
        "judge" => c.judge,
        "judge-calibrated" => c.judge_calibrated,
        other => {
            let second = |label: &str| c.second_judges.iter().find(|j| j.judge_model == label);
            if let Some(label) = other.strip_prefix("judge:") {
                second(label).map(|j| j.valence)
            } else if let Some(label) = other.strip_prefix("judge-calibrated:") {
                second(label)
                    .map(|j| j.calibrated)
                    .filter(|v| v.is_finite())
            } else {
                None
            }
        }
    }
}

pub fn conditions(data: &RunData) -> Vec<ConditionInfo> {
    let mut out: Vec<ConditionInfo> = Vec::new();
    for c in data.headers.iter().flat_map(|h| &h.study.conditions) {
        if out.iter().any(|x| x.name == c.name) {
            continue;
        }
        let regulation = c.regulation.as_ref().map(|r| match &r.variant {
            Some(v) => format!("{}:{v}", r.strategy),
            None => r.strategy.clone(),
        });
        out.push(ConditionInfo {
            name: c.name.clone(),
            induction: c.induction.clone(),
            regulation,
            regulation_first: c.order == Order::RegulationFirst,
            steering: c.steering.as_ref().map(|s| (s.direction.clone(), s.alpha)),
            own_setup: !c.setup.is_default(),
        });
    }
    // Conditions only seen in trials (e.g. a hand-edited run.json) still get reported.
    for t in &data.trials {
        if !out.iter().any(|x| x.name == t.condition) {
            out.push(ConditionInfo {
                name: t.condition.clone(),
                induction: t.induction.clone(),
                regulation: t.regulation.clone(),
                regulation_first: false,
                steering: t.steering.as_ref().map(|s| (s.direction.clone(), s.alpha)),
                own_setup: false,
            });
        }
    }
    out
}

/// Models in the order the runs list them.
pub fn models(data: &RunData) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in data
        .headers
        .iter()
        .flat_map(|h| h.models.iter().map(|m| m.label.clone()))
        .chain(data.trials.iter().map(|t| t.model.clone()))
    {
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

/// Scale scores of every group in the data (see `results::scale_scores`).
pub fn scale_scores(data: &RunData) -> Vec<ScaleScore> {
    crate::measures::scale_scores(&data.trials, &data.scoring)
}

/// The system prompt a conversation showed, named as a level of the system-prompt
/// factor: its index in the list it came from, recorded under crossed assignment and
/// `repetition mod n` under modulo (the rule `study::prompt` applies). A condition with
/// its own prompts names them after itself, so they never share a level with the
/// study's. A study with one prompt (or the template's default) has the one level "0".
pub fn system_prompt_level(
    data: &RunData,
    seed: u64,
    condition: &str,
    repetition: usize,
    recorded: Option<usize>,
) -> String {
    let study = data
        .headers
        .iter()
        .find(|h| h.seed == seed)
        .or(data.headers.first())
        .map(|h| &h.study);
    let own = study
        .and_then(|s| s.conditions.iter().find(|c| c.name == condition))
        .map_or(0, |c| c.setup.system_prompts.len());
    let count = if own > 0 {
        own
    } else {
        study.map_or(1, |s| s.system_prompts.len().max(1))
    };
    let index = recorded.unwrap_or(repetition % count);
    if own > 0 {
        format!("{condition}:{index}")
    } else {
        index.to_string()
    }
}

/// The judge's expected valence: sum of probability x option value.
pub fn recorded_judge_valence(t: &TrialRecord) -> Option<f64> {
    t.judge.as_ref().map(|j| j.expected)
}

pub fn completion_scores(data: &RunData) -> Vec<CompletionScore> {
    let mut second: BTreeMap<(&str, u64, &str), Vec<SecondJudgeScore>> = BTreeMap::new();
    for j in &data.second_judges {
        second
            .entry((&j.trial_id, j.seed, &j.model))
            .or_default()
            .push(SecondJudgeScore {
                judge_model: j.judge_model.clone(),
                valence: j.judge.expected,
                calibrated: j.judge_detail.calibrated_expected,
                by_order: j
                    .judge_detail
                    .by_order
                    .iter()
                    .map(|p| expected(p, &j.judge.values))
                    .collect(),
                content_free: expected(&j.judge_detail.content_free, &j.judge.values),
            });
    }
    data.trials
        .iter()
        .filter(|t| t.error.is_none())
        .filter_map(|t| {
            let Question::Completion { stem, .. } = &t.question else {
                return None;
            };
            let text = t.completion.clone()?;
            let lex = lexicon::score(&text);
            Some(CompletionScore {
                model: t.model.clone(),
                condition: t.condition.clone(),
                stem: stem.clone(),
                conversation: format!("{}/{}", t.seed, t.group_id),
                vignette: Stimuli::of(t).vignette,
                system_prompt: system_prompt_level(
                    data,
                    t.seed,
                    &t.condition,
                    t.repetition,
                    t.system_prompt_variant,
                ),
                lexicon: lex.valence,
                lexicon_words: lex.matched,
                judge: recorded_judge_valence(t),
                judge_calibrated: t.judge_detail.as_ref().map(|d| d.calibrated_expected),
                judge_by_order: t
                    .judge_detail
                    .as_ref()
                    .zip(t.judge.as_ref())
                    .map(|(d, j)| d.by_order.iter().map(|p| expected(p, &j.values)).collect())
                    .unwrap_or_default(),
                judge_content_free: t
                    .judge_detail
                    .as_ref()
                    .zip(t.judge.as_ref())
                    .map(|(d, j)| expected(&d.content_free, &j.values)),
                compliant: t.continues_stem,
                second_judges: second
                    .get(&(t.trial_id.as_str(), t.seed, t.model.as_str()))
                    .cloned()
                    .unwrap_or_default(),
                text,
            })
        })
        .collect()
}
