//! One line of `trials.jsonl`: a trial's coordinates, what was asked, the rendered prompt
//! and its hash, both read-outs (or the completion and its judge read-out), the error if
//! it failed, and timings kept apart in `timing` so two runs compare equal without it.

use crate::sampling::Sampling;
use crate::scenario::study::LabelStyle;
use serde::{Deserialize, Serialize};

/// The record's tag (`"type": "trial"`); the only kind a trials file holds today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    Trial,
}

/// How the answer labels of a rating item relate to the options shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelBinding {
    /// Labels follow the display position: the option shown first is "1" (or "A")
    /// whatever it means (schema-1 runs and the `shuffle-positional` perturbation).
    #[default]
    Position,
    /// Each option keeps its own label wherever it is shown: the file's label for
    /// digits, its letter in file order for letters.
    Option,
}

/// What a trial asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Question {
    /// One item (or, with `item = None`, every item of the instrument in one turn),
    /// shown with `label_style` labels and options in `option_order` (indices into the
    /// instrument's options; empty for numeric responses).
    Item {
        instrument: String,
        item: Option<String>,
        label_style: LabelStyle,
        option_order: Vec<usize>,
        /// Absent in records written before label designs existed: by position.
        #[serde(default)]
        label_binding: LabelBinding,
    },
    /// An instrument's answer format around a content-free statement (`content`, e.g.
    /// "N/A") instead of an item, with one label style and option arrangement: the option
    /// distribution it gets is the format's own bias, which the calibrated read-out of
    /// items shown the same way divides out (contextual calibration, Zhao et al. 2021).
    #[serde(rename = "content-free")]
    ContentFree {
        instrument: String,
        content: String,
        label_style: LabelStyle,
        option_order: Vec<usize>,
        label_binding: LabelBinding,
    },
    /// The `index`-th sampled completion of a sentence stem.
    Completion {
        task: String,
        stem: String,
        index: usize,
    },
}

impl Question {
    /// The instrument of an item question.
    pub fn instrument(&self) -> Option<&str> {
        match self {
            Question::Item { instrument, .. } | Question::ContentFree { instrument, .. } => {
                Some(instrument)
            }
            Question::Completion { .. } => None,
        }
    }

    /// The item id of a one-item question (None for whole-instrument questions and
    /// completions).
    pub fn item(&self) -> Option<&str> {
        match self {
            Question::Item { item, .. } => item.as_deref(),
            Question::ContentFree { .. } | Question::Completion { .. } => None,
        }
    }

    /// Whether this asks every item of an instrument in one turn.
    pub fn is_whole_instrument(&self) -> bool {
        matches!(self, Question::Item { item: None, .. })
    }

    /// Whether this is answered at an answer position (an item or a content-free
    /// prompt), not sampled as a completion.
    pub fn is_item(&self) -> bool {
        matches!(self, Question::Item { .. } | Question::ContentFree { .. })
    }

    pub fn is_content_free(&self) -> bool {
        matches!(self, Question::ContentFree { .. })
    }
}

/// The generated read-out of one trial.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GenerateReadout {
    /// Every reply, including those that were re-asked.
    pub replies: Vec<String>,
    /// Why each unreadable reply failed (one per re-ask).
    pub failures: Vec<String>,
    /// The answer's value on the instrument's scale (before reverse keying), if read.
    pub value: Option<f64>,
    /// The value after reverse keying (what enters the scale score).
    pub keyed: Option<f64>,
    /// The sampling that ran (temperature 0 is recorded as greedy).
    pub sampling: Sampling,
    pub tokens: usize,
}

/// The probability read-out of one trial (or the judge's read-out of a completion).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChoiceReadout {
    /// Labels in display order, the option value each stands for, and its probability.
    pub labels: Vec<String>,
    pub values: Vec<f64>,
    pub probs: Vec<f64>,
    /// Total probability the model put on the options before renormalising.
    pub mass: f64,
    pub expected: f64,
    pub argmax: f64,
    /// A seeded draw from the option distribution.
    pub draw: f64,
    /// The expected value after reverse keying.
    pub keyed_expected: f64,
    /// Read from a server's next-token top log-probabilities: the probability outside
    /// the tokens it listed (an option not listed counts as 0, so `mass` is then a lower
    /// bound). None where every option was scored exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unobserved: Option<f64>,
}

/// The probability read-out with the answer format's content-free bias divided out:
/// each option's probability over the mean probability the same option (same label,
/// same display position) got for content-free statements, renormalised. Derived from
/// the run's records when they are read (`results::calibrate`), never stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibratedReadout {
    /// In display order, as the choice read-out's.
    pub probs: Vec<f64>,
    /// The content-free distribution that was divided out.
    pub content_free: Vec<f64>,
    pub expected: f64,
    pub argmax: f64,
    pub keyed_expected: f64,
}

/// How the judge read a completion: per option order asked, and calibrated.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JudgeDetail {
    /// The orders asked, as indices into the judge's options (listed first).
    pub orders: Vec<Vec<usize>>,
    /// Option probabilities per order asked, in the judge's listed option order.
    pub by_order: Vec<Vec<f64>>,
    /// The mean distribution (listed order) the judge gives content-free texts ("N/A",
    /// "", "[MASK]") over the same orders: its bias with nothing to judge.
    pub content_free: Vec<f64>,
    /// The expected valence after dividing `content_free` out of the mean distribution.
    pub calibrated_expected: f64,
}

/// Wall-clock milliseconds of a trial's phases; absent phases did not run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Timing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<f64>,
}

/// The intervention of a steered trial (`scenario::internal_states`), resolved for its
/// model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrialSteering {
    pub direction: String,
    pub block: usize,
    pub alpha: f64,
}

/// One trial's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrialRecord {
    #[serde(rename = "type")]
    pub kind: RecordKind,
    pub schema: u32,
    pub trial_id: String,
    /// The run seed the trial's streams were drawn under (part of its identity when
    /// runs with different seeds are merged).
    pub seed: u64,
    pub group_id: String,
    pub model: String,
    pub condition: String,
    pub induction: Option<String>,
    pub induction_variant: Option<String>,
    pub regulation: Option<String>,
    pub regulation_variant: Option<String>,
    /// Crossed assignment's system prompt (an index into the condition's list); absent
    /// under modulo assignment, where repetition r uses prompt r mod n.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt_variant: Option<usize>,
    pub repetition: usize,
    pub question: Question,
    pub prompt: String,
    pub prompt_sha256: String,
    pub prompt_tokens: usize,
    pub generate: Option<GenerateReadout>,
    pub choice: Option<ChoiceReadout>,
    /// Sentence completions: the generated text.
    pub completion: Option<String>,
    /// Sentence completions: the model-as-judge valence read-out of the text (with the
    /// judge asked in more than one option order, the mean over orders).
    pub judge: Option<ChoiceReadout>,
    /// Sentence completions: the judge per order asked, and its content-free bias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_detail: Option<JudgeDetail>,
    /// Sentence completions: whether the text continues the stem (`Stem::continued_by`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continues_stem: Option<bool>,
    /// Steered conditions: the direction, the block it was added after and its strength.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steering: Option<TrialSteering>,
    pub error: Option<String>,
    pub timing: Timing,
    /// Filled in by `results::calibrate` from the run's content-free records.
    #[serde(skip)]
    pub calibrated: Option<CalibratedReadout>,
}

impl TrialRecord {
    /// The record with its timings dropped: two runs of the same plan compare equal
    /// this way.
    pub fn without_timing(&self) -> TrialRecord {
        TrialRecord {
            timing: Timing::default(),
            ..self.clone()
        }
    }
}
