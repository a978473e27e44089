//! Rating scales as data (`scenarios/instruments/*.toml`): instruction and time frame,
//! items (with reverse keying and subscales), the response format (labelled options with
//! values, or a numeric range with bins for the probability read-out), and the scoring
//! rule. A user's licensed scale drops in with the same format.

use super::{info, invalid, read_toml, FileInfo};
use crate::error::Result;
use serde::Deserialize;
use std::path::Path;

/// The longest option label: the model answers with it, and every label is scored as a
/// token sequence, so a runaway label (a 300-digit number) would take minutes per item.
pub const MAX_LABEL_CHARS: usize = 32;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstrumentSpec {
    id: String,
    version: u32,
    description: String,
    source: String,
    licence: String,
    instruction: String,
    /// The instruction when the items ask about the person in the text (a condition's
    /// `perspective = "other"`).
    other_instruction: Option<String>,
    time_frame: String,
    scoring: String,
    #[serde(default)]
    score_multiplier: Option<f64>,
    response: ResponseSpec,
    item: Vec<ItemSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
enum ResponseSpec {
    Options {
        options: Vec<OptionSpec>,
    },
    Numeric {
        min: i64,
        max: i64,
        choice_bins: Vec<i64>,
    },
}

/// One response option: the label the model answers with, its meaning, its value.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionSpec {
    pub label: String,
    pub text: String,
    pub value: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemSpec {
    id: String,
    text: String,
    subscale: Option<String>,
    #[serde(default)]
    reverse: bool,
    /// The item about the person in the text (with `other_instruction`).
    other_text: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Options(Vec<OptionSpec>),
    /// A number in [min, max]; the choice read-out scores `bins` as options.
    Numeric {
        min: i64,
        max: i64,
        bins: Vec<i64>,
    },
}

impl Response {
    /// Lowest and highest value an answer can take.
    pub fn range(&self) -> (f64, f64) {
        match self {
            Response::Options(o) => {
                let vals = o.iter().map(|x| x.value);
                (
                    vals.clone().fold(f64::MAX, f64::min),
                    vals.fold(f64::MIN, f64::max),
                )
            }
            Response::Numeric { min, max, .. } => (*min as f64, *max as f64),
        }
    }
}

/// How keyed item values become a scale score. `apply` is the one place this arithmetic
/// lives: the runner's answers, its summary and the report all score through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scoring {
    Sum,
    Mean,
}

impl Scoring {
    /// The score of keyed item values (sum or mean, times `multiplier`); None if any
    /// value is missing or there are none.
    pub fn apply(self, keyed: &[Option<f64>], multiplier: f64) -> Option<f64> {
        let values: Vec<f64> = keyed.iter().copied().collect::<Option<_>>()?;
        if values.is_empty() {
            return None;
        }
        let sum: f64 = values.iter().sum();
        let raw = match self {
            Scoring::Sum => sum,
            Scoring::Mean => sum / values.len() as f64,
        };
        Some(raw * multiplier)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub id: String,
    pub text: String,
    pub subscale: Option<String>,
    pub reverse: bool,
    /// The item's wording about the person in the text, if the file gives one.
    pub other_text: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Instrument {
    pub info: FileInfo,
    pub description: String,
    pub instruction: String,
    /// The instruction about the person in the text, if the file gives one.
    pub other_instruction: Option<String>,
    pub time_frame: String,
    pub scoring: Scoring,
    pub score_multiplier: f64,
    pub response: Response,
    pub items: Vec<Item>,
}

impl Instrument {
    pub fn load(path: &Path) -> Result<Self> {
        let (spec, text): (InstrumentSpec, String) = read_toml(path)?;
        let scoring = match spec.scoring.as_str() {
            "sum" => Scoring::Sum,
            "mean" => Scoring::Mean,
            other => {
                return Err(invalid(
                    path,
                    &text,
                    "scoring",
                    format!("scoring is '{other}'; use \"sum\" or \"mean\""),
                ))
            }
        };
        let response = match spec.response {
            ResponseSpec::Options { options } => {
                if options.len() < 2 {
                    return Err(invalid(
                        path,
                        &text,
                        "options",
                        "give at least two response options".into(),
                    ));
                }
                for (i, o) in options.iter().enumerate() {
                    let label = o.label.trim();
                    if label.is_empty() || label.chars().count() > MAX_LABEL_CHARS {
                        return Err(invalid(
                            path,
                            &text,
                            &format!("label = \"{}\"", o.label),
                            format!("option label '{}' must be 1 to {MAX_LABEL_CHARS} characters (the model answers with it)", o.label),
                        ));
                    }
                    if !o.value.is_finite() {
                        return Err(invalid(
                            path,
                            &text,
                            &format!("\"{}\"", o.label),
                            format!(
                                "option '{}' has value {}; give a finite number",
                                o.label, o.value
                            ),
                        ));
                    }
                    if options[..i].iter().any(|p| p.label == o.label) {
                        return Err(invalid(
                            path,
                            &text,
                            &format!("\"{}\"", o.label),
                            format!("option label '{}' is used twice", o.label),
                        ));
                    }
                }
                Response::Options(options)
            }
            ResponseSpec::Numeric {
                min,
                max,
                choice_bins,
            } => {
                if min >= max {
                    return Err(invalid(
                        path,
                        &text,
                        "numeric",
                        format!("numeric range needs min < max (got {min}..{max})"),
                    ));
                }
                let repeated = choice_bins
                    .iter()
                    .enumerate()
                    .any(|(i, b)| choice_bins[..i].contains(b));
                if choice_bins.len() < 2
                    || repeated
                    || choice_bins.iter().any(|b| *b < min || *b > max)
                {
                    return Err(invalid(
                        path,
                        &text,
                        "choice_bins",
                        format!("choice_bins must hold at least two different values inside {min}..{max}"),
                    ));
                }
                Response::Numeric {
                    min,
                    max,
                    bins: choice_bins,
                }
            }
        };
        let mut items: Vec<Item> = Vec::new();
        for it in spec.item {
            if let Some(sub) = &it.subscale {
                super::check_plain_name(path, &text, "subscale", sub)?;
            }
            if !super::is_plain_id(&it.id) {
                return Err(invalid(
                    path,
                    &text,
                    &format!("id = \"{}\"", it.id),
                    format!(
                        "item id '{}' must be letters, digits, '.', '_' or '-'",
                        it.id
                    ),
                ));
            }
            if items.iter().any(|i| i.id == it.id) {
                return Err(invalid(
                    path,
                    &text,
                    &format!("id = \"{}\"", it.id),
                    format!("item id '{}' is used twice", it.id),
                ));
            }
            items.push(Item {
                id: it.id,
                text: it.text,
                subscale: it.subscale,
                reverse: it.reverse,
                other_text: it.other_text,
            });
        }
        if items.is_empty() {
            return Err(invalid(
                path,
                &text,
                "id",
                "an instrument needs at least one [[item]]".into(),
            ));
        }
        Ok(Instrument {
            info: info(
                path,
                &text,
                &spec.id,
                spec.version,
                &spec.source,
                &spec.licence,
            )?,
            description: spec.description,
            instruction: spec.instruction,
            other_instruction: spec.other_instruction,
            time_frame: spec.time_frame,
            scoring,
            score_multiplier: spec.score_multiplier.unwrap_or(1.0),
            response,
            items,
        })
    }

    /// An item's contribution to the score: reverse-keyed items are mirrored.
    pub fn keyed_value(&self, item: &Item, value: f64) -> f64 {
        let (lo, hi) = self.response.range();
        if item.reverse {
            lo + hi - value
        } else {
            value
        }
    }

    /// Whether the file words every item (and the instruction) about the person in the
    /// text too, so a condition may ask from that perspective.
    pub fn has_other_wording(&self) -> bool {
        self.other_instruction.is_some() && self.items.iter().all(|i| i.other_text.is_some())
    }

    /// The scale score from keyed item values (None if any is missing).
    pub fn score(&self, keyed: &[Option<f64>]) -> Option<f64> {
        self.scoring.apply(keyed, self.score_multiplier)
    }
}
