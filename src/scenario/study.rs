//! Study designs (`scenarios/studies/*.toml`): conditions (induction x regulation, in
//! either order), the instruments asked after each, repetitions, sampling temperature,
//! answer read-out settings, perturbations, and an optional sentence-completion task.
//! `[[factorial]]` blocks cross inductions with regulations; `{emotion}` in an
//! instrument name stands for the induction's emotion.

use super::internal_states::{
    capture_from_spec, steering_condition_name, steering_from_spec, CaptureBlocks, CaptureSpec,
    ConditionSteering, SteeringSpec,
};
use super::{info, invalid, read_toml, FileInfo, Library};
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
    pub acknowledgement: Acknowledgement,
    pub option_order: OptionOrder,
    pub label_styles: Vec<LabelStyle>,
    pub conditions: Vec<Condition>,
    pub completion: Option<Completion>,
    pub positive_control: Option<PositiveControl>,
    pub contrasts: Vec<DeclaredContrast>,
    pub calibration: Calibration,
    /// Passed as `enable_thinking` to chat templates that read it.
    pub thinking: bool,
    /// The residual-stream blocks stored per item trial, if any.
    pub capture: Option<CaptureBlocks>,
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

    /// Reads a study file and checks every reference against `lib`.
    pub fn load(path: &Path, lib: &Library) -> Result<Self> {
        let (spec, text): (StudySpec, String) = read_toml(path)?;
        let bad = |needle: &str, msg: String| invalid(path, &text, needle, msg);
        let per_conversation = match spec.items_per_conversation.as_str() {
            "one" => PerConversation::One,
            "all" => PerConversation::All,
            o => {
                return Err(bad(
                    "items_per_conversation",
                    format!("items_per_conversation is '{o}'; use \"one\" or \"all\""),
                ))
            }
        };
        let option_order = match spec.option_order.as_str() {
            "fixed" => OptionOrder::Fixed,
            "counterbalanced" => OptionOrder::Counterbalanced,
            "shuffle-bound" => OptionOrder::ShuffleBound,
            "shuffle-positional" | "shuffle" => OptionOrder::ShufflePositional,
            o => {
                return Err(bad(
                    "option_order",
                    format!(
                        "option_order is '{o}'; use \"counterbalanced\" (ascending or \
                         descending, labels kept with their meanings), \"shuffle-bound\", \
                         \"fixed\", or the perturbation \"shuffle-positional\""
                    ),
                ))
            }
        };
        let label_styles = spec
            .label_styles
            .iter()
            .map(|s| match s.as_str() {
                "digits" => Ok(LabelStyle::Digits),
                "letters" => Ok(LabelStyle::Letters),
                o => Err(bad(
                    "label_styles",
                    format!("label style '{o}'; use \"digits\" or \"letters\""),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        if spec.system_prompt.is_some() && !spec.system_prompts.is_empty() {
            return Err(bad(
                "system_prompts",
                "give either system_prompt (one for every conversation) or system_prompts \
                 (variants by repetition), not both"
                    .into(),
            ));
        }
        if spec.system_prompts.iter().any(|p| p.trim().is_empty()) {
            return Err(bad(
                "system_prompts",
                "a system prompt variant is empty; leave system_prompts out for the chat \
                 template's default"
                    .into(),
            ));
        }
        let acknowledgement = match (spec.acknowledgement_mode.as_deref(), &spec.acknowledgement) {
            (None | Some("fixed"), Some(text)) => Acknowledgement::Fixed { text: text.clone() },
            (None | Some("fixed"), None) => {
                return Err(bad(
                    "acknowledgement_mode",
                    "a fixed acknowledgement needs its text: acknowledgement = \"...\" (or \
                     acknowledgement_mode = \"generated\" or \"none\")"
                        .into(),
                ))
            }
            (Some("generated"), _) => Acknowledgement::Generated {
                max_tokens: GENERATED_ACKNOWLEDGEMENT_TOKENS,
            },
            (Some("none"), _) => Acknowledgement::None,
            (Some(o), _) => {
                return Err(bad(
                    "acknowledgement_mode",
                    format!(
                        "acknowledgement_mode is '{o}'; use \"fixed\" (the acknowledgement \
                         text), \"generated\" (the model's own reply) or \"none\""
                    ),
                ))
            }
        };
        let calibration = match spec.calibration.as_deref() {
            None | Some("content-free") => Calibration::ContentFree,
            Some("none") => Calibration::None,
            Some(o) => {
                return Err(bad(
                    "calibration",
                    format!(
                        "calibration is '{o}'; use \"content-free\" (the default: ask each \
                         answer format with a content-free statement and divide its bias \
                         out) or \"none\""
                    ),
                ))
            }
        };
        if label_styles.is_empty() {
            return Err(bad("label_styles", "give at least one label style".into()));
        }
        if spec.repetitions == 0 {
            return Err(bad("repetitions", "repetitions must be at least 1".into()));
        }
        if !(spec.temperature >= 0.0 && spec.temperature.is_finite()) {
            return Err(bad(
                "temperature",
                format!("temperature must be >= 0, got {}", spec.temperature),
            ));
        }

        let check_regulation = |r: &str| -> Result<RegulationRef> {
            let (strategy, variant) = match r.split_once(':') {
                Some((s, v)) => (s.to_string(), Some(v.to_string())),
                None => (r.to_string(), None),
            };
            let reg = lib.regulations.get(&strategy).ok_or_else(|| {
                bad(
                    &format!("\"{r}\""),
                    format!(
                        "regulation '{strategy}' is not defined (known: {})",
                        lib.regulations
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
            if let Some(v) = &variant {
                if !reg.variants.iter().any(|x| &x.id == v) {
                    return Err(bad(
                        &format!("\"{r}\""),
                        format!("regulation '{strategy}' has no variant '{v}'"),
                    ));
                }
            }
            Ok(RegulationRef { strategy, variant })
        };
        let check_induction = |e: &str| -> Result<()> {
            if lib.inductions.contains_key(e) {
                Ok(())
            } else {
                Err(bad(
                    &format!("\"{e}\""),
                    format!(
                        "induction '{e}' is not defined (known: {})",
                        lib.inductions
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
        };
        let check_instruments = |list: &[String], emotion: Option<&str>| -> Result<Vec<String>> {
            let resolved: Vec<String> = list
                .iter()
                .map(|name| name.replace("{emotion}", emotion.unwrap_or("{emotion}")))
                .collect();
            for (i, name) in resolved.iter().enumerate() {
                if resolved[..i].contains(name) {
                    return Err(bad(
                        &format!("\"{}\"", list[i]),
                        format!("instrument '{name}' is listed twice in one condition (its trials would have the same ids); list it once"),
                    ));
                }
            }
            list.iter()
                .map(|name| {
                    let resolved = name.replace("{emotion}", emotion.unwrap_or("{emotion}"));
                    if lib.instruments.contains_key(&resolved) {
                        Ok(resolved)
                    } else {
                        Err(bad(
                            &format!("\"{name}\""),
                            format!(
                                "instrument '{resolved}' is not defined (known: {})",
                                lib.instruments
                                    .keys()
                                    .cloned()
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ))
                    }
                })
                .collect()
        };

        let mut conditions: Vec<Condition> = Vec::new();
        for c in &spec.condition {
            if let Some(e) = &c.induction {
                check_induction(e)?;
            }
            let regulation = c.regulation.as_deref().map(check_regulation).transpose()?;
            let order = match c.order.as_deref() {
                None | Some("induction-first") => Order::InductionFirst,
                Some("regulation-first") => Order::RegulationFirst,
                Some(o) => {
                    return Err(bad(
                        "order",
                        format!("order is '{o}'; use \"induction-first\" or \"regulation-first\""),
                    ))
                }
            };
            let name = c
                .name
                .clone()
                .unwrap_or_else(|| default_name(c.induction.as_deref(), c.regulation.as_deref()));
            conditions.push(Condition {
                name,
                instruments: check_instruments(&c.instruments, c.induction.as_deref())?,
                induction: c.induction.clone(),
                regulation,
                order,
                steering: None,
            });
        }
        for f in &spec.factorial {
            for e in &f.inductions {
                check_induction(e)?;
                for r in &f.regulations {
                    let regulation = check_regulation(r)?;
                    let regulation = (regulation.strategy != "none").then_some(regulation);
                    conditions.push(Condition {
                        name: default_name(Some(e), Some(r)),
                        induction: Some(e.clone()),
                        regulation,
                        order: Order::InductionFirst,
                        instruments: check_instruments(&f.instruments, Some(e))?,
                        steering: None,
                    });
                }
            }
        }
        for s in &spec.steering {
            let (site, alphas) =
                steering_from_spec(s).map_err(|m| bad(&format!("\"{}\"", s.direction), m))?;
            if let Some(e) = &s.induction {
                check_induction(e)?;
            }
            let instruments = check_instruments(&s.instruments, None)?;
            for alpha in alphas {
                conditions.push(Condition {
                    name: steering_condition_name(&s.direction, alpha),
                    induction: s.induction.clone(),
                    regulation: None,
                    order: Order::InductionFirst,
                    instruments: instruments.clone(),
                    steering: Some(ConditionSteering {
                        direction: s.direction.clone(),
                        site,
                        alpha,
                    }),
                });
            }
        }
        let capture = spec
            .capture
            .as_ref()
            .map(capture_from_spec)
            .transpose()
            .map_err(|m| bad("[capture]", m))?;
        for (i, c) in conditions.iter().enumerate() {
            if c.name == CONTENT_FREE {
                return Err(bad(
                    &c.name,
                    format!("condition '{CONTENT_FREE}' is reserved for the calibration prompts; rename yours"),
                ));
            }
            if conditions[..i].iter().any(|p| p.name == c.name) {
                return Err(bad(
                    &c.name,
                    format!("condition '{}' is defined twice; give one a `name`", c.name),
                ));
            }
        }
        let positive_control = match &spec.positive_control {
            None => None,
            Some(pc) => {
                check_induction(&pc.low)?;
                check_induction(&pc.high)?;
                if !(pc.min_effect.is_finite() && pc.min_effect > 0.0) {
                    return Err(bad(
                        "min_effect",
                        format!(
                            "[positive_control] min_effect must be a positive number (Cohen's d), got {}",
                            pc.min_effect
                        ),
                    ));
                }
                // Every instrument the study asks, in the order first asked.
                let mut instruments: Vec<String> = Vec::new();
                for c in &conditions {
                    for i in &c.instruments {
                        if !instruments.contains(i) {
                            instruments.push(i.clone());
                        }
                    }
                }
                for (name, induction) in [(CONTROL_LOW, &pc.low), (CONTROL_HIGH, &pc.high)] {
                    if conditions.iter().any(|c| c.name == name) {
                        return Err(bad(
                            name,
                            format!("condition '{name}' is reserved for the [positive_control]; rename yours"),
                        ));
                    }
                    conditions.push(Condition {
                        name: name.to_string(),
                        induction: Some(induction.clone()),
                        regulation: None,
                        order: Order::InductionFirst,
                        instruments: instruments.clone(),
                        steering: None,
                    });
                }
                Some(PositiveControl {
                    low_condition: CONTROL_LOW.into(),
                    high_condition: CONTROL_HIGH.into(),
                    min_effect: pc.min_effect,
                })
            }
        };
        let mut contrasts = Vec::new();
        for c in &spec.contrast {
            let emotions: Vec<Option<&str>> = if c.emotions.is_empty() {
                vec![None]
            } else {
                c.emotions.iter().map(|e| Some(e.as_str())).collect()
            };
            for emotion in emotions {
                let fill = |t: &str| match emotion {
                    Some(e) => t.replace("{emotion}", e),
                    None => t.to_string(),
                };
                let (a, b, instrument) = (fill(&c.a), fill(&c.b), fill(&c.instrument));
                for name in [&a, &b] {
                    let Some(cond) = conditions.iter().find(|x| &x.name == name) else {
                        return Err(bad(
                            &format!("\"{}\"", if name == &a { &c.a } else { &c.b }),
                            format!(
                                "contrast condition '{name}' is not one of the study's conditions (known: {})",
                                conditions.iter().map(|x| x.name.clone()).collect::<Vec<_>>().join(", ")
                            ),
                        ));
                    };
                    if !cond.instruments.contains(&instrument) {
                        return Err(bad(
                            &format!("\"{}\"", c.instrument),
                            format!("contrast instrument '{instrument}' is not asked in condition '{name}'"),
                        ));
                    }
                }
                let ins = &lib.instruments[&instrument];
                let subscales: Vec<String> = {
                    let mut v: Vec<String> = Vec::new();
                    for i in &ins.items {
                        let sub = i.subscale.clone().unwrap_or_else(|| ins.info.id.clone());
                        if !v.contains(&sub) {
                            v.push(sub);
                        }
                    }
                    v
                };
                let subscale = match &c.subscale {
                    Some(sub) => fill(sub),
                    None if subscales.len() == 1 => subscales[0].clone(),
                    None => {
                        return Err(bad(
                            &format!("\"{}\"", c.instrument),
                            format!(
                                "instrument '{instrument}' has several subscales ({}); give the contrast a `subscale`",
                                subscales.join(", ")
                            ),
                        ))
                    }
                };
                if !subscales.contains(&subscale) {
                    return Err(bad(
                        "subscale",
                        format!(
                            "instrument '{instrument}' has no subscale '{subscale}' (it has {})",
                            subscales.join(", ")
                        ),
                    ));
                }
                let b_is_baseline = conditions
                    .iter()
                    .any(|x| x.name == b && x.induction.is_none() && x.regulation.is_none());
                contrasts.push(DeclaredContrast {
                    question: fill(&c.question),
                    a,
                    b,
                    instrument,
                    subscale,
                    family: fill(&c.family),
                    kind: if b_is_baseline {
                        "descriptive"
                    } else {
                        "causal"
                    }
                    .into(),
                });
            }
        }
        if spec.repetitions > MAX_REPETITIONS {
            return Err(bad("repetitions", format!("repetitions = {} is more than {MAX_REPETITIONS}; split such a study into several runs with other seeds", spec.repetitions)));
        }
        if conditions.is_empty() {
            return Err(bad(
                "id",
                "the study has no [[condition]] or [[factorial]]".into(),
            ));
        }

        let completion = match spec.completion {
            None => None,
            Some(c) => {
                let task = lib.tasks.get(&c.task).ok_or_else(|| {
                    bad(
                        &format!("\"{}\"", c.task),
                        format!("task '{}' is not defined", c.task),
                    )
                })?;
                if c.completions == 0 || c.max_tokens == 0 {
                    return Err(bad("completions", format!("[completion] needs completions >= 1 and max_tokens >= 1 (got {} and {})", c.completions, c.max_tokens)));
                }
                for name in &c.conditions {
                    match conditions.iter().find(|x| &x.name == name) {
                        None => return Err(bad(&format!("\"{name}\""), format!("completion condition '{name}' is not one of the study's conditions"))),
                        // The judge reads completions with the model that wrote them, so
                        // it would be steered too.
                        Some(x) if x.steering.is_some() => return Err(bad(&format!("\"{name}\""), format!("completion condition '{name}' is steered: the judge would read its completions steered too; ask instruments in steered conditions"))),
                        Some(_) => {}
                    }
                }
                if let Some(stems) = &c.stems {
                    for s in stems {
                        if !task.stems.iter().any(|x| &x.id == s) {
                            return Err(bad(
                                &format!("\"{s}\""),
                                format!("task '{}' has no stem '{s}'", c.task),
                            ));
                        }
                    }
                }
                Some(Completion {
                    task: c.task,
                    conditions: c.conditions,
                    stems: c.stems,
                    completions: c.completions,
                    max_tokens: c.max_tokens,
                })
            }
        };
        for c in &conditions {
            let completes = completion
                .as_ref()
                .is_some_and(|x| x.conditions.contains(&c.name));
            if c.instruments.is_empty() && !completes {
                return Err(bad(
                    "instruments",
                    format!("condition '{}' asks nothing: give it instruments, or list it in [completion] conditions", c.name),
                ));
            }
        }
        if spec.max_answer_tokens == 0 {
            return Err(bad(
                "max_answer_tokens",
                "max_answer_tokens must be at least 1".into(),
            ));
        }

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
            acknowledgement,
            option_order,
            label_styles,
            conditions,
            completion,
            positive_control,
            contrasts,
            calibration,
            thinking: spec.thinking.unwrap_or(false),
            capture,
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
