//! Study designs (`scenarios/studies/*.toml`): conditions (induction x regulation, in
//! either order), the instruments asked after each, repetitions, sampling temperature,
//! answer read-out settings, perturbations, and an optional sentence-completion task.
//! `[[factorial]]` blocks cross inductions with regulations; `{emotion}` in an
//! instrument name stands for the induction's emotion.

mod checks;

use super::internal_states::{CaptureBlocks, CaptureSpec, ConditionSteering, SteeringSpec};
use super::{info, read_toml, FileInfo, Library};
use crate::error::Result;
use serde::Deserialize;
use std::path::Path;

/// The most repetitions a study file may ask for (the plan is built in memory: 10^5
/// repetitions of the default design are ~10^8 trials).
pub const MAX_REPETITIONS: usize = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StudySpec {
    id: String,
    version: u32,
    description: String,
    source: String,
    licence: String,
    seed: u64,
    repetitions: usize,
    temperature: f32,
    items_per_conversation: String,
    max_answer_tokens: usize,
    max_reasks: usize,
    system_prompt: Option<String>,
    /// Paraphrases of the system prompt; repetition r uses r mod n.
    #[serde(default)]
    system_prompts: Vec<String>,
    /// How repetitions pick their stimuli: "modulo" (default) or "crossed".
    assignment: Option<String>,
    /// The fixed reply after each text (with acknowledgement_mode "fixed", the default).
    acknowledgement: Option<String>,
    /// "fixed" (default), "generated" (the model's own reply) or "none".
    acknowledgement_mode: Option<String>,
    option_order: String,
    label_styles: Vec<String>,
    #[serde(default)]
    condition: Vec<ConditionSpec>,
    #[serde(default)]
    factorial: Vec<FactorialSpec>,
    completion: Option<CompletionSpec>,
    positive_control: Option<PositiveControlSpec>,
    #[serde(default)]
    contrast: Vec<ContrastSpec>,
    /// The read-out the confirmatory questions are answered on: "probability",
    /// "calibrated" or "generated". Without it every question is exploratory.
    primary_readout: Option<String>,
    /// "content-free" (default) or "none".
    calibration: Option<String>,
    /// Whether models whose chat template has a thinking switch (Qwen 3) think before
    /// answering (default false: the answer comes first, as with every other model).
    thinking: Option<bool>,
    /// Residual-stream blocks to store per item trial (`scenario::internal_states`).
    capture: Option<CaptureSpec>,
    /// Steered conditions: a direction added to the residual stream at each alpha.
    #[serde(default)]
    steering: Vec<SteeringSpec>,
    /// How this design differs from the published one it follows.
    #[serde(default)]
    deviation: Vec<DeviationSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviationSpec {
    aspect: String,
    source: String,
    here: String,
    why: String,
    changes_interpretation: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContrastSpec {
    question: String,
    a: String,
    b: String,
    instrument: String,
    subscale: Option<String>,
    family: String,
    /// Expands the contrast once per emotion, with `{emotion}` replaced in every field.
    #[serde(default)]
    emotions: Vec<String>,
    /// With `d`: the difference of differences (a - b) - (c - d), paired by repetition.
    c: Option<String>,
    d: Option<String>,
    /// Makes the question an equivalence question: two one-sided tests against +-margin,
    /// in raw scale-score units.
    equivalence_margin: Option<f64>,
    /// A confound the design leaves open, shown beside the answer.
    confound: Option<String>,
    /// The predicted sign of a - b: "a > b", "a < b" or "either" (the default).
    direction: Option<String>,
    /// The smallest effect of interest, in raw scale-score units (an equivalence
    /// question's margin is its SESOI).
    sesoi: Option<f64>,
    /// Asked, but outside the confirmatory family (default false).
    #[serde(default)]
    exploratory: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PositiveControlSpec {
    low: String,
    high: String,
    #[serde(default = "default_min_effect")]
    min_effect: f64,
}

fn default_min_effect() -> f64 {
    1.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionSpec {
    name: Option<String>,
    induction: Option<String>,
    regulation: Option<String>,
    order: Option<String>,
    instruments: Vec<String>,
    /// This condition's own system prompts (repetition r uses r mod n) instead of the
    /// study's.
    system_prompts: Option<Vec<String>>,
    /// This condition's own reply after each text, and its mode.
    acknowledgement: Option<String>,
    acknowledgement_mode: Option<String>,
    /// A sentence shown before every question of the condition (an expectancy cue).
    expectancy: Option<String>,
    /// "self" (default: items about "you") or "other" (items about the person in the
    /// text, from each instrument's `other_*` wording).
    perspective: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FactorialSpec {
    inductions: Vec<String>,
    regulations: Vec<String>,
    instruments: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompletionSpec {
    task: String,
    conditions: Vec<String>,
    stems: Option<Vec<String>>,
    completions: usize,
    max_tokens: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    InductionFirst,
    RegulationFirst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PerConversation {
    /// One item per conversation (as the npj study did).
    One,
    /// All items of an instrument in one turn (as EmotionBench does).
    All,
}

/// How a rating item's options are ordered and labelled in each trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptionOrder {
    /// The file's order every time: position and meaning are confounded, so the
    /// validity gate cannot estimate position effects.
    Fixed,
    /// Ascending or descending in value, drawn per trial from its seed; each option
    /// keeps its own label. The scale stays ordinal as shown, and a model that answers
    /// by position lands on opposite ends in the two halves (the default design).
    Counterbalanced,
    /// A random order per trial; each option keeps its own label (the file's digit, or
    /// its letter in file order), so the label still names the meaning.
    ShuffleBound,
    /// A perturbation, not a measurement design: meanings shuffled under labels fixed by
    /// position ("1 = extremely, 2 = not at all, ..."), so the scale as shown is not
    /// ordinal. Written `shuffle-positional` (or `shuffle`, as before 2026-11).
    ShufflePositional,
}

/// How a repetition picks its stimuli (induction variant, regulation variant, system
/// prompt and, under counterbalanced option order, the direction of each item's options).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Assignment {
    /// Repetition r uses variant r mod n of each list independently, and each trial's
    /// option direction is drawn from its seed. Lists cross fully only where their
    /// lengths are coprime. The default, and what every study did before 2026-12.
    Modulo,
    /// Repetition r uses cell r mod k of the full factorial of the condition's lists
    /// (induction variant fastest, then system prompt, then regulation variant; k cells),
    /// and under counterbalanced order the direction alternates by item and by pass over
    /// the cells. With repetitions a multiple of 2k every cell and direction appears
    /// equally often in the arm, and arms sharing lists share their cells.
    Crossed,
}

impl Assignment {
    pub fn name(self) -> &'static str {
        match self {
            Assignment::Modulo => "modulo",
            Assignment::Crossed => "crossed",
        }
    }
}

impl OptionOrder {
    pub fn name(self) -> &'static str {
        match self {
            OptionOrder::Fixed => "fixed",
            OptionOrder::Counterbalanced => "counterbalanced",
            OptionOrder::ShuffleBound => "shuffle-bound",
            OptionOrder::ShufflePositional => "shuffle-positional",
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LabelStyle {
    Digits,
    Letters,
}

impl LabelStyle {
    pub fn name(self) -> &'static str {
        match self {
            LabelStyle::Digits => "digits",
            LabelStyle::Letters => "letters",
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RegulationRef {
    pub strategy: String,
    /// A pinned variant id; None cycles through the strategy's variants.
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Condition {
    pub name: String,
    pub induction: Option<String>,
    pub regulation: Option<RegulationRef>,
    pub order: Order,
    pub instruments: Vec<String>,
    /// A steered condition's intervention (absent for every other condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steering: Option<ConditionSteering>,
    /// What this condition sets differently from the study's conversation set-up
    /// (absent when nothing: every condition of the designs made before it existed).
    #[serde(default, skip_serializing_if = "ConditionSetup::is_default")]
    pub setup: ConditionSetup,
}

/// A condition's own conversation set-up: the role/demand manipulations
/// (`scenarios/studies/role-demand.toml`). Each field left at its default means "as the
/// study sets it".
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConditionSetup {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub system_prompts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledgement: Option<Acknowledgement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expectancy: Option<String>,
    #[serde(default, skip_serializing_if = "Perspective::is_self")]
    pub perspective: Perspective,
}

impl ConditionSetup {
    pub fn is_default(&self) -> bool {
        self == &ConditionSetup::default()
    }
}

/// Whom the questionnaire asks about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Perspective {
    /// "How do you feel?": the published designs.
    #[default]
    #[serde(rename = "self")]
    Own,
    /// "How does the person in the text feel?": a model that answers the same either way
    /// reports on the text, not on itself.
    Other,
}

impl Perspective {
    pub fn is_self(&self) -> bool {
        *self == Perspective::Own
    }
    pub fn name(self) -> &'static str {
        match self {
            Perspective::Own => "self",
            Perspective::Other => "other",
        }
    }
}

/// A way the design differs from the published study it follows (`[[deviation]]`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Deviation {
    pub aspect: String,
    /// What the source did.
    pub source: String,
    /// What this design does.
    pub here: String,
    pub why: String,
    /// Whether a reader comparing the results with the source must allow for it.
    pub changes_interpretation: bool,
}

/// A positive control: two conditions that instruct the model to answer as someone
/// feeling none (`low_condition`) or a great deal (`high_condition`) of the states the
/// instruments ask about. An instrument that cannot separate them by at least
/// `min_effect` (Cohen's d, high minus low) fails the validity gate: it does not track
/// even an instructed state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PositiveControl {
    pub low_condition: String,
    pub high_condition: String,
    pub min_effect: f64,
}

/// A question the study asks: condition `a` minus condition `b` on one (sub)scale.
/// Contrasts against the baseline (no text at all) are descriptive, because any text
/// moves the scores; against a control condition (a neutral text) they are causal.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeclaredContrast {
    pub question: String,
    pub a: String,
    pub b: String,
    pub instrument: String,
    pub subscale: String,
    /// Holm's adjustment runs within a family (per model and read-out).
    pub family: String,
    /// `causal` (b is a control condition) or `descriptive` (b is the baseline).
    pub kind: String,
    /// A difference of differences: (a - b) - (c - d), paired by repetition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d: Option<String>,
    /// An equivalence question: is the difference inside +-margin (raw scale units)?
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equivalence_margin: Option<f64>,
    /// A confound the design leaves open for this question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confound: Option<String>,
    /// The predicted sign of the difference (absent: either, the test is two-sided).
    #[serde(default, skip_serializing_if = "Direction::is_either")]
    pub direction: Direction,
    /// The smallest effect of interest in raw scale-score units (for an equivalence
    /// question, its margin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sesoi: Option<f64>,
    /// Declared outside the confirmatory family.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exploratory: bool,
}

/// The sign a question predicts for its difference (a - b).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Direction {
    #[default]
    #[serde(rename = "either")]
    Either,
    #[serde(rename = "a > b")]
    Greater,
    #[serde(rename = "a < b")]
    Less,
}

impl Direction {
    pub fn is_either(&self) -> bool {
        *self == Direction::Either
    }

    pub fn name(self) -> &'static str {
        match self {
            Direction::Either => "either",
            Direction::Greater => "a > b",
            Direction::Less => "a < b",
        }
    }

    /// Parses the study file's spelling (spaces optional: "a>b" is "a > b").
    pub fn parse(text: &str) -> Option<Direction> {
        match text.split_whitespace().collect::<String>().as_str() {
            "either" => Some(Direction::Either),
            "a>b" => Some(Direction::Greater),
            "a<b" => Some(Direction::Less),
            _ => None,
        }
    }
}

impl DeclaredContrast {
    /// The second difference of a difference of differences.
    pub fn second_pair(&self) -> Option<(&str, &str)> {
        self.c.as_deref().zip(self.d.as_deref())
    }

    /// What the contrast compares, as tables show it.
    pub fn expression(&self) -> String {
        match self.second_pair() {
            Some((c, d)) => format!("({} − {}) − ({c} − {d})", self.a, self.b),
            None => format!("{} − {}", self.a, self.b),
        }
    }
}

/// What follows an induction or regulation text before the next turn.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "mode")]
pub enum Acknowledgement {
    /// A fixed assistant reply, the same for every text.
    Fixed { text: String },
    /// The model's own reply, sampled on the group's protocol-turn stream.
    Generated { max_tokens: usize },
    /// No reply: the text and the next user turn are one user message.
    None,
}

/// Tokens the model may use for a generated acknowledgement.
pub const GENERATED_ACKNOWLEDGEMENT_TOKENS: usize = 48;

/// The condition of the content-free calibration prompts (see `Calibration`).
pub const CONTENT_FREE: &str = "content-free";

/// What stands in for the item in a content-free prompt (Zhao et al. 2021 average the
/// option distributions of a few such inputs).
pub const CONTENT_FREE_TEXTS: [&str; 3] = ["N/A", "", "[MASK]"];

/// Whether a study measures the answer format's own bias to divide it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calibration {
    /// Each instrument's answer prompt is also asked with a content-free statement, once
    /// per label style and option arrangement the plan shows, in a conversation holding
    /// only the system prompt; the `calibrated` read-out divides that distribution out.
    ContentFree,
    None,
}

/// The names of the conditions a `[positive_control]` adds.
pub const CONTROL_LOW: &str = "control-low";
pub const CONTROL_HIGH: &str = "control-high";

#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub task: String,
    pub conditions: Vec<String>,
    pub stems: Option<Vec<String>>,
    pub completions: usize,
    pub max_tokens: usize,
}

#[derive(Debug, Clone)]
pub struct Study {
    pub info: FileInfo,
    pub description: String,
    pub seed: u64,
    pub repetitions: usize,
    pub temperature: f32,
    pub per_conversation: PerConversation,
    pub max_answer_tokens: usize,
    pub max_reasks: usize,
    /// The system prompt of every conversation, or with `system_prompt_variants` none.
    pub system_prompt: Option<String>,
    /// Paraphrased system prompts: repetition r of every condition uses variant r mod n,
    /// so no condition (the baseline least of all) is one conversation repeated, and
    /// arms that share a repetition share its wording.
    pub system_prompt_variants: Vec<String>,
    /// How repetitions pick their stimuli.
    pub assignment: Assignment,
    pub acknowledgement: Acknowledgement,
    pub option_order: OptionOrder,
    pub label_styles: Vec<LabelStyle>,
    pub conditions: Vec<Condition>,
    pub completion: Option<Completion>,
    pub positive_control: Option<PositiveControl>,
    pub contrasts: Vec<DeclaredContrast>,
    /// The read-out confirmatory questions are answered on (`Readout::name`); None: no
    /// question is confirmatory.
    pub primary_readout: Option<String>,
    pub calibration: Calibration,
    /// Passed as `enable_thinking` to chat templates that read it.
    pub thinking: bool,
    /// The residual-stream blocks stored per item trial, if any.
    pub capture: Option<CaptureBlocks>,
    /// How the design differs from the published one it follows.
    pub deviations: Vec<Deviation>,
}

impl Study {
    /// The system prompt of repetition `repetition`'s conversations (None: the chat
    /// template's default).
    pub fn system_prompt_for(&self, repetition: usize) -> Option<&str> {
        if self.system_prompt_variants.is_empty() {
            self.system_prompt.as_deref()
        } else {
            let v = &self.system_prompt_variants;
            Some(&v[repetition % v.len()])
        }
    }

    /// The system prompt of `condition`'s conversations at `repetition`: the condition's
    /// own variants where it has them, else the study's.
    pub fn system_prompt_in<'a>(
        &'a self,
        condition: &'a Condition,
        repetition: usize,
    ) -> Option<&'a str> {
        let own = &condition.setup.system_prompts;
        if own.is_empty() {
            self.system_prompt_for(repetition)
        } else {
            Some(&own[repetition % own.len()])
        }
    }

    /// How many system prompts `condition`'s conversations rotate through (0: the chat
    /// template's default, or one fixed prompt counts as 1).
    pub fn system_prompt_count(&self, condition: &Condition) -> usize {
        let own = condition.setup.system_prompts.len();
        if own > 0 {
            own
        } else {
            self.system_prompt_variants.len().max(1)
        }
    }

    /// What follows each text in `condition`: its own acknowledgement, else the study's.
    pub fn acknowledgement_in<'a>(&'a self, condition: &'a Condition) -> &'a Acknowledgement {
        condition
            .setup
            .acknowledgement
            .as_ref()
            .unwrap_or(&self.acknowledgement)
    }

    /// The condition named `name`, if the study has it.
    pub fn condition(&self, name: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.name == name)
    }

    /// Reads a study file and checks every reference against `lib` (`checks`).
    pub fn load(path: &Path, lib: &Library) -> Result<Self> {
        let (spec, text): (StudySpec, String) = read_toml(path)?;
        let check = checks::Checks {
            path,
            text: &text,
            lib,
        };
        let (per_conversation, option_order, label_styles) = check.answer_format(&spec)?;
        check.system_prompts(&spec)?;
        let assignment = check.assignment(&spec)?;
        let acknowledgement = check.acknowledgement(&spec)?;
        let calibration = check.calibration(&spec)?;
        check.sampling(&spec)?;
        let mut conditions = check.conditions(&spec)?;
        let capture = check.capture(&spec)?;
        let positive_control = check.positive_control(&spec, &mut conditions)?;
        let contrasts = check.contrasts(&spec, &conditions)?;
        let primary_readout = check.primary_readout(&spec)?;
        check.has_conditions(&conditions)?;
        let completion = check.completion(spec.completion, &conditions)?;
        let deviations = check.deviations(&spec.deviation)?;
        check.every_condition_asks(&conditions, &completion)?;

        Ok(Study {
            info: info(
                path,
                &text,
                &spec.id,
                spec.version,
                &spec.source,
                &spec.licence,
            )?,
            description: spec.description,
            seed: spec.seed,
            repetitions: spec.repetitions,
            temperature: spec.temperature,
            per_conversation,
            max_answer_tokens: spec.max_answer_tokens,
            max_reasks: spec.max_reasks,
            system_prompt: spec.system_prompt,
            system_prompt_variants: spec.system_prompts,
            assignment,
            acknowledgement,
            option_order,
            label_styles,
            conditions,
            completion,
            positive_control,
            contrasts,
            primary_readout,
            calibration,
            thinking: spec.thinking.unwrap_or(false),
            capture,
            deviations,
        })
    }
}

/// `baseline` with neither; `{induction}/{regulation}` otherwise ("none" where absent).
fn default_name(induction: Option<&str>, regulation: Option<&str>) -> String {
    match (induction, regulation) {
        (None, None) => "baseline".to_string(),
        (i, r) => format!("{}/{}", i.unwrap_or("none"), r.unwrap_or("none")),
    }
}
