//! The checks a study file passes before it becomes a `Study`, one named check per
//! concern (answer format, conversation set-up, calibration, sampling, references to the
//! scenario library, conditions, the positive control, declared contrasts, the
//! completion task). Each error names the file, the line holding the offending text and
//! the fix.

use super::super::internal_states::{
    capture_from_spec, steering_condition_name, steering_from_spec,
};
use super::super::{invalid, Library};
use super::*;
use crate::error::{Error, Result};
use std::path::Path;

/// A study file's text and the library its names must resolve in.
pub(super) struct Checks<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    pub lib: &'a Library,
}

impl Checks<'_> {
    /// An error at the first line containing `needle`.
    fn bad(&self, needle: &str, message: String) -> Error {
        invalid(self.path, self.text, needle, message)
    }

    /// Items per conversation, option order and label styles.
    pub fn answer_format(
        &self,
        spec: &StudySpec,
    ) -> Result<(PerConversation, OptionOrder, Vec<LabelStyle>)> {
        let per_conversation = match spec.items_per_conversation.as_str() {
            "one" => PerConversation::One,
            "all" => PerConversation::All,
            o => {
                return Err(self.bad(
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
                return Err(self.bad(
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
                o => Err(self.bad(
                    "label_styles",
                    format!("label style '{o}'; use \"digits\" or \"letters\""),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        if label_styles.is_empty() {
            return Err(self.bad("label_styles", "give at least one label style".into()));
        }
        Ok((per_conversation, option_order, label_styles))
    }

    /// "modulo" (the default) or "crossed".
    pub fn assignment(&self, spec: &StudySpec) -> Result<Assignment> {
        match spec.assignment.as_deref() {
            None | Some("modulo") => Ok(Assignment::Modulo),
            Some("crossed") => Ok(Assignment::Crossed),
            Some(o) => Err(self.bad(
                "assignment",
                format!(
                    "assignment is '{o}'; use \"crossed\" (every vignette x system prompt x \
                     option direction equally often in every arm) or \"modulo\" (repetition r \
                     uses variant r mod n of each list, the default)"
                ),
            )),
        }
    }

    /// One system prompt or variants by repetition, never both, none empty.
    pub fn system_prompts(&self, spec: &StudySpec) -> Result<()> {
        if spec.system_prompt.is_some() && !spec.system_prompts.is_empty() {
            return Err(self.bad(
                "system_prompts",
                "give either system_prompt (one for every conversation) or system_prompts \
                 (variants by repetition), not both"
                    .into(),
            ));
        }
        if spec.system_prompts.iter().any(|p| p.trim().is_empty()) {
            return Err(self.bad(
                "system_prompts",
                "a system prompt variant is empty; leave system_prompts out for the chat \
                 template's default"
                    .into(),
            ));
        }
        Ok(())
    }

    /// What follows each text: a fixed reply, the model's own, or nothing.
    pub fn acknowledgement(&self, spec: &StudySpec) -> Result<Acknowledgement> {
        self.acknowledgement_of(
            spec.acknowledgement_mode.as_deref(),
            spec.acknowledgement.as_ref(),
        )
    }

    /// An acknowledgement from its mode and text (the study's, or a condition's).
    fn acknowledgement_of(
        &self,
        mode: Option<&str>,
        text: Option<&String>,
    ) -> Result<Acknowledgement> {
        let acknowledgement = match (mode, text) {
            (None | Some("fixed"), Some(text)) => Acknowledgement::Fixed { text: text.clone() },
            (None | Some("fixed"), None) => {
                return Err(self.bad(
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
                return Err(self.bad(
                    "acknowledgement_mode",
                    format!(
                        "acknowledgement_mode is '{o}'; use \"fixed\" (the acknowledgement \
                         text), \"generated\" (the model's own reply) or \"none\""
                    ),
                ))
            }
        };
        Ok(acknowledgement)
    }

    /// A `[[condition]]`'s own conversation set-up: system prompts, acknowledgement,
    /// expectancy sentence and perspective (every instrument it asks must have the
    /// other-perspective wording when it asks about the person in the text).
    fn condition_setup(&self, c: &ConditionSpec, instruments: &[String]) -> Result<ConditionSetup> {
        let system_prompts = c.system_prompts.clone().unwrap_or_default();
        if c.system_prompts.is_some() && system_prompts.iter().all(|p| p.trim().is_empty()) {
            return Err(self.bad(
                "system_prompts",
                "a condition's system_prompts must hold at least one non-empty prompt (leave it out to use the study's)".into(),
            ));
        }
        let acknowledgement = if c.acknowledgement.is_some() || c.acknowledgement_mode.is_some() {
            Some(self.acknowledgement_of(
                c.acknowledgement_mode.as_deref(),
                c.acknowledgement.as_ref(),
            )?)
        } else {
            None
        };
        if c.expectancy.as_deref().is_some_and(|e| e.trim().is_empty()) {
            return Err(self.bad(
                "expectancy",
                "expectancy is empty; give the sentence shown before each question or leave it out"
                    .into(),
            ));
        }
        let perspective = match c.perspective.as_deref() {
            None | Some("self") => Perspective::Own,
            Some("other") => Perspective::Other,
            Some(o) => {
                return Err(self.bad(
                    "perspective",
                    format!("perspective is '{o}'; use \"self\" (items about the model) or \"other\" (items about the person in the text)"),
                ))
            }
        };
        if perspective == Perspective::Other {
            for name in instruments {
                let ins = &self.lib.instruments[name];
                if !ins.has_other_wording() {
                    return Err(self.bad(
                        "perspective",
                        format!(
                            "perspective = \"other\" needs every instrument the condition asks to word its items about the person in the text; '{name}' ({}) has no other_instruction or an item without other_text",
                            ins.info.path.display()
                        ),
                    ));
                }
            }
        }
        Ok(ConditionSetup {
            system_prompts,
            acknowledgement,
            expectancy: c.expectancy.clone(),
            perspective,
        })
    }

    /// `[[deviation]]` entries: every field given.
    pub fn deviations(&self, specs: &[DeviationSpec]) -> Result<Vec<Deviation>> {
        specs
            .iter()
            .map(|d| {
                for (field, value) in [
                    ("aspect", &d.aspect),
                    ("source", &d.source),
                    ("here", &d.here),
                    ("why", &d.why),
                ] {
                    if value.trim().is_empty() {
                        return Err(self.bad(
                            &format!("aspect = \"{}\"", d.aspect),
                            format!("deviation '{}' has an empty `{field}`; say what the source did (source), what this design does (here) and why", d.aspect),
                        ));
                    }
                }
                Ok(Deviation {
                    aspect: d.aspect.clone(),
                    source: d.source.clone(),
                    here: d.here.clone(),
                    why: d.why.clone(),
                    changes_interpretation: d.changes_interpretation,
                })
            })
            .collect()
    }

    /// Whether each answer format is calibrated with content-free prompts.
    pub fn calibration(&self, spec: &StudySpec) -> Result<Calibration> {
        let calibration = match spec.calibration.as_deref() {
            None | Some("content-free") => Calibration::ContentFree,
            Some("none") => Calibration::None,
            Some(o) => {
                return Err(self.bad(
                    "calibration",
                    format!(
                        "calibration is '{o}'; use \"content-free\" (the default: ask each \
                         answer format with a content-free statement and divide its bias \
                         out) or \"none\""
                    ),
                ))
            }
        };
        Ok(calibration)
    }

    /// Repetitions, temperature and the answer length: numbers in range.
    pub fn sampling(&self, spec: &StudySpec) -> Result<()> {
        if spec.repetitions == 0 {
            return Err(self.bad("repetitions", "repetitions must be at least 1".into()));
        }
        if !(spec.temperature >= 0.0 && spec.temperature.is_finite()) {
            return Err(self.bad(
                "temperature",
                format!("temperature must be >= 0, got {}", spec.temperature),
            ));
        }
        if spec.repetitions > MAX_REPETITIONS {
            return Err(self.bad("repetitions", format!("repetitions = {} is more than {MAX_REPETITIONS}; split such a study into several runs with other seeds", spec.repetitions)));
        }
        if spec.max_answer_tokens == 0 {
            return Err(self.bad(
                "max_answer_tokens",
                "max_answer_tokens must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// `strategy` or `strategy:variant`, defined in the library.
    pub fn regulation(&self, r: &str) -> Result<RegulationRef> {
        let (strategy, variant) = match r.split_once(':') {
            Some((s, v)) => (s.to_string(), Some(v.to_string())),
            None => (r.to_string(), None),
        };
        let reg = self.lib.regulations.get(&strategy).ok_or_else(|| {
            self.bad(
                &format!("\"{r}\""),
                format!(
                    "regulation '{strategy}' is not defined (known: {})",
                    self.lib
                        .regulations
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        if let Some(v) = &variant {
            if !reg.variants.iter().any(|x| &x.id == v) {
                return Err(self.bad(
                    &format!("\"{r}\""),
                    format!("regulation '{strategy}' has no variant '{v}'"),
                ));
            }
        }
        Ok(RegulationRef { strategy, variant })
    }

    /// An induction defined in the library.
    pub fn induction(&self, e: &str) -> Result<()> {
        if self.lib.inductions.contains_key(e) {
            Ok(())
        } else {
            Err(self.bad(
                &format!("\"{e}\""),
                format!(
                    "induction '{e}' is not defined (known: {})",
                    self.lib
                        .inductions
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ))
        }
    }

    /// A condition's instruments with `{emotion}` filled in: each defined, none twice.
    pub fn instruments(&self, list: &[String], emotion: Option<&str>) -> Result<Vec<String>> {
        let resolved: Vec<String> = list
            .iter()
            .map(|name| name.replace("{emotion}", emotion.unwrap_or("{emotion}")))
            .collect();
        for (i, name) in resolved.iter().enumerate() {
            if resolved[..i].contains(name) {
                return Err(self.bad(
                        &format!("\"{}\"", list[i]),
                        format!("instrument '{name}' is listed twice in one condition (its trials would have the same ids); list it once"),
                    ));
            }
        }
        list.iter()
            .map(|name| {
                let resolved = name.replace("{emotion}", emotion.unwrap_or("{emotion}"));
                if self.lib.instruments.contains_key(&resolved) {
                    Ok(resolved)
                } else {
                    Err(self.bad(
                        &format!("\"{name}\""),
                        format!(
                            "instrument '{resolved}' is not defined (known: {})",
                            self.lib
                                .instruments
                                .keys()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ))
                }
            })
            .collect()
    }

    /// The conditions of `[[condition]]`, `[[factorial]]` and `[[steering]]` blocks, in
    /// that order, each name unique and none reserved.
    pub fn conditions(&self, spec: &StudySpec) -> Result<Vec<Condition>> {
        let mut conditions: Vec<Condition> = Vec::new();
        for c in &spec.condition {
            if let Some(e) = &c.induction {
                self.induction(e)?;
            }
            let regulation = c
                .regulation
                .as_deref()
                .map(|r| self.regulation(r))
                .transpose()?;
            let order = match c.order.as_deref() {
                None | Some("induction-first") => Order::InductionFirst,
                Some("regulation-first") => Order::RegulationFirst,
                Some(o) => {
                    return Err(self.bad(
                        "order",
                        format!("order is '{o}'; use \"induction-first\" or \"regulation-first\""),
                    ))
                }
            };
            let name = c
                .name
                .clone()
                .unwrap_or_else(|| default_name(c.induction.as_deref(), c.regulation.as_deref()));
            let instruments = self.instruments(&c.instruments, c.induction.as_deref())?;
            conditions.push(Condition {
                name,
                setup: self.condition_setup(c, &instruments)?,
                instruments,
                induction: c.induction.clone(),
                regulation,
                order,
                steering: None,
            });
        }
        for f in &spec.factorial {
            for e in &f.inductions {
                self.induction(e)?;
                for r in &f.regulations {
                    let regulation = self.regulation(r)?;
                    let regulation = (regulation.strategy != "none").then_some(regulation);
                    conditions.push(Condition {
                        name: default_name(Some(e), Some(r)),
                        induction: Some(e.clone()),
                        regulation,
                        order: Order::InductionFirst,
                        instruments: self.instruments(&f.instruments, Some(e))?,
                        steering: None,
                        setup: ConditionSetup::default(),
                    });
                }
            }
        }
        for s in &spec.steering {
            let (site, alphas) =
                steering_from_spec(s).map_err(|m| self.bad(&format!("\"{}\"", s.direction), m))?;
            if let Some(e) = &s.induction {
                self.induction(e)?;
            }
            let instruments = self.instruments(&s.instruments, None)?;
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
                    setup: ConditionSetup::default(),
                });
            }
        }
        for (i, c) in conditions.iter().enumerate() {
            if c.name == CONTENT_FREE {
                return Err(self.bad(
                    &c.name,
                    format!("condition '{CONTENT_FREE}' is reserved for the calibration prompts; rename yours"),
                ));
            }
            if conditions[..i].iter().any(|p| p.name == c.name) {
                return Err(self.bad(
                    &c.name,
                    format!("condition '{}' is defined twice; give one a `name`", c.name),
                ));
            }
        }
        Ok(conditions)
    }

    /// At least one condition, counting the positive control's.
    pub fn has_conditions(&self, conditions: &[Condition]) -> Result<()> {
        if conditions.is_empty() {
            return Err(self.bad(
                "id",
                "the study has no [[condition]] or [[factorial]]".into(),
            ));
        }
        Ok(())
    }

    /// Which residual-stream blocks to store.
    pub fn capture(&self, spec: &StudySpec) -> Result<Option<CaptureBlocks>> {
        let capture = spec
            .capture
            .as_ref()
            .map(capture_from_spec)
            .transpose()
            .map_err(|m| self.bad("[capture]", m))?;
        Ok(capture)
    }

    /// The `[positive_control]`: its two inductions and effect size checked, its two
    /// conditions (asking every instrument the study asks) appended to `conditions`.
    pub fn positive_control(
        &self,
        spec: &StudySpec,
        conditions: &mut Vec<Condition>,
    ) -> Result<Option<PositiveControl>> {
        let positive_control = match &spec.positive_control {
            None => None,
            Some(pc) => {
                self.induction(&pc.low)?;
                self.induction(&pc.high)?;
                if !(pc.min_effect.is_finite() && pc.min_effect > 0.0) {
                    return Err(self.bad(
                        "min_effect",
                        format!(
                            "[positive_control] min_effect must be a positive number (Cohen's d), got {}",
                            pc.min_effect
                        ),
                    ));
                }
                // Every instrument the study asks, in the order first asked.
                let mut instruments: Vec<String> = Vec::new();
                for c in conditions.iter() {
                    for i in &c.instruments {
                        if !instruments.contains(i) {
                            instruments.push(i.clone());
                        }
                    }
                }
                for (name, induction) in [(CONTROL_LOW, &pc.low), (CONTROL_HIGH, &pc.high)] {
                    if conditions.iter().any(|c| c.name == name) {
                        return Err(self.bad(
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
                        setup: ConditionSetup::default(),
                    });
                }
                Some(PositiveControl {
                    low_condition: CONTROL_LOW.into(),
                    high_condition: CONTROL_HIGH.into(),
                    min_effect: pc.min_effect,
                })
            }
        };
        Ok(positive_control)
    }

    /// The declared contrasts, expanded over their emotions: conditions that exist and
    /// ask the instrument, a subscale it has.
    pub fn contrasts(
        &self,
        spec: &StudySpec,
        conditions: &[Condition],
    ) -> Result<Vec<DeclaredContrast>> {
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
                let second = match (&c.c, &c.d) {
                    (Some(x), Some(y)) => Some((fill(x), fill(y))),
                    (None, None) => None,
                    _ => {
                        return Err(self.bad(
                            &format!("\"{}\"", c.question),
                            "a difference of differences needs both `c` and `d`: (a - b) - (c - d); give both or neither".into(),
                        ))
                    }
                };
                if let Some(m) = c.equivalence_margin {
                    if !(m.is_finite() && m > 0.0) {
                        return Err(self.bad(
                            "equivalence_margin",
                            format!("equivalence_margin is {m}; give the largest difference (in raw scale-score units) that counts as no difference, above 0"),
                        ));
                    }
                }
                let direction = match &c.direction {
                    None => Direction::Either,
                    Some(text) => Direction::parse(text).ok_or_else(|| {
                        self.bad(
                            "direction",
                            format!("direction is \"{text}\"; write \"a > b\" (a - b predicted positive), \"a < b\" or \"either\" (two-sided)"),
                        )
                    })?,
                };
                if let Some(s) = c.sesoi {
                    if !(s.is_finite() && s > 0.0) {
                        return Err(self.bad(
                            "sesoi",
                            format!("sesoi is {s}; give the smallest difference of interest in raw scale-score units, above 0"),
                        ));
                    }
                }
                let sesoi = match (c.sesoi, c.equivalence_margin) {
                    (Some(s), Some(m)) if s != m => {
                        return Err(self.bad(
                            "sesoi",
                            format!("question \"{}\" gives sesoi {s} and equivalence_margin {m}; an equivalence question's margin is its smallest effect of interest, so give one of them", c.question),
                        ))
                    }
                    (s, m) => s.or(m),
                };
                if c.equivalence_margin.is_some() && !direction.is_either() {
                    return Err(self.bad(
                        "direction",
                        format!("question \"{}\" is an equivalence question (equivalence_margin) and predicts no sign; drop its direction", c.question),
                    ));
                }
                let mut named: Vec<(&String, &String)> = vec![(&a, &c.a), (&b, &c.b)];
                if let (Some((x, y)), Some(cx), Some(dy)) = (&second, &c.c, &c.d) {
                    named.push((x, cx));
                    named.push((y, dy));
                }
                for (name, written) in named {
                    let Some(cond) = conditions.iter().find(|x| &x.name == name) else {
                        return Err(self.bad(
                            &format!("\"{written}\""),
                            format!(
                                "contrast condition '{name}' is not one of the study's conditions (known: {})",
                                conditions.iter().map(|x| x.name.clone()).collect::<Vec<_>>().join(", ")
                            ),
                        ));
                    };
                    if !cond.instruments.contains(&instrument) {
                        return Err(self.bad(
                            &format!("\"{}\"", c.instrument),
                            format!("contrast instrument '{instrument}' is not asked in condition '{name}'"),
                        ));
                    }
                }
                let ins = &self.lib.instruments[&instrument];
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
                        return Err(self.bad(
                            &format!("\"{}\"", c.instrument),
                            format!(
                                "instrument '{instrument}' has several subscales ({}); give the contrast a `subscale`",
                                subscales.join(", ")
                            ),
                        ))
                    }
                };
                if !subscales.contains(&subscale) {
                    return Err(self.bad(
                        "subscale",
                        format!(
                            "instrument '{instrument}' has no subscale '{subscale}' (it has {})",
                            subscales.join(", ")
                        ),
                    ));
                }
                let b_is_baseline = conditions.iter().any(|x| {
                    x.name == b
                        && x.induction.is_none()
                        && x.regulation.is_none()
                        && x.setup.is_default()
                });
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
                    c: second.as_ref().map(|s| s.0.clone()),
                    d: second.map(|s| s.1),
                    equivalence_margin: c.equivalence_margin,
                    confound: c.confound.as_deref().map(fill),
                    direction,
                    sesoi,
                    exploratory: c.exploratory,
                });
            }
        }
        Ok(contrasts)
    }

    /// The read-out confirmatory questions are answered on: one of the three read-out
    /// names, and only with questions to answer.
    pub fn primary_readout(&self, spec: &StudySpec) -> Result<Option<String>> {
        let Some(name) = &spec.primary_readout else {
            return Ok(None);
        };
        let known = ["probability", "calibrated", "generated"];
        if !known.contains(&name.as_str()) {
            return Err(self.bad(
                "primary_readout",
                format!(
                    "primary_readout is \"{name}\"; it is one of {}",
                    known.join(", ")
                ),
            ));
        }
        if spec.contrast.iter().all(|c| c.exploratory) {
            return Err(self.bad(
                "primary_readout",
                "primary_readout is set but no [[contrast]] is confirmatory; declare the questions it answers, or drop it".into(),
            ));
        }
        Ok(Some(name.clone()))
    }

    /// The sentence-completion task: a defined task and stems, unsteered conditions
    /// that exist, at least one completion of at least one token.
    pub fn completion(
        &self,
        spec: Option<CompletionSpec>,
        conditions: &[Condition],
    ) -> Result<Option<Completion>> {
        let completion = match spec {
            None => None,
            Some(c) => {
                let task = self.lib.tasks.get(&c.task).ok_or_else(|| {
                    self.bad(
                        &format!("\"{}\"", c.task),
                        format!("task '{}' is not defined", c.task),
                    )
                })?;
                if c.completions == 0 || c.max_tokens == 0 {
                    return Err(self.bad("completions", format!("[completion] needs completions >= 1 and max_tokens >= 1 (got {} and {})", c.completions, c.max_tokens)));
                }
                for name in &c.conditions {
                    match conditions.iter().find(|x| &x.name == name) {
                        None => return Err(self.bad(&format!("\"{name}\""), format!("completion condition '{name}' is not one of the study's conditions"))),
                        // The judge reads completions with the model that wrote them, so
                        // it would be steered too.
                        Some(x) if x.steering.is_some() => return Err(self.bad(&format!("\"{name}\""), format!("completion condition '{name}' is steered: the judge would read its completions steered too; ask instruments in steered conditions"))),
                        Some(_) => {}
                    }
                }
                if let Some(stems) = &c.stems {
                    for s in stems {
                        if !task.stems.iter().any(|x| &x.id == s) {
                            return Err(self.bad(
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
        Ok(completion)
    }

    /// Every condition asks an instrument or writes completions.
    pub fn every_condition_asks(
        &self,
        conditions: &[Condition],
        completion: &Option<Completion>,
    ) -> Result<()> {
        for c in conditions {
            let completes = completion
                .as_ref()
                .is_some_and(|x| x.conditions.contains(&c.name));
            if c.instruments.is_empty() && !completes {
                return Err(self.bad(
                    "instruments",
                    format!("condition '{}' asks nothing: give it instruments, or list it in [completion] conditions", c.name),
                ));
            }
        }
        Ok(())
    }
}
