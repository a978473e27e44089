//! Expanding a study into groups and trials with stable ids and seeds.
//!
//! Variant assignment (`Assignment`): by default repetition r of a condition uses variant
//! r mod n of its induction, its regulation and its system prompts; with `crossed` it
//! walks the full factorial of those lists and alternates the counterbalanced option
//! direction by item and pass. Label style (and, by default, option order) is drawn per
//! trial from the trial's own seeded stream.

use crate::results::LabelBinding;
pub use crate::results::Question;
use crate::rng::Stream;
use crate::scenario::study::{
    Assignment, Calibration, Condition, OptionOrder, PerConversation, CONTENT_FREE,
    CONTENT_FREE_TEXTS,
};
use crate::scenario::{Library, Study};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashSet;

/// A stable id: the first 16 hex digits of sha256 of the canonical JSON of `coords`.
pub fn stable_id(coords: &serde_json::Value) -> String {
    let canonical = serde_json::to_string(coords).expect("json values serialise");
    hex::encode(&Sha256::digest(canonical.as_bytes())[..8])
}

/// A conversation prefix shared by trials: one condition, one repetition, one model.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub id: String,
    pub model: String,
    pub condition: String,
    pub repetition: usize,
    pub induction: Option<String>,
    pub induction_variant: Option<String>,
    pub regulation: Option<String>,
    pub regulation_variant: Option<String>,
    /// Crossed assignment's system prompt (an index into the condition's list). None
    /// under modulo assignment, where repetition r uses r mod n, so records stay as
    /// they were before crossed assignment existed.
    pub system_prompt_variant: Option<usize>,
}

/// Which stimuli repetition `rep` of a condition shows: an index into each of its lists
/// and, under crossed assignment, which pass over the condition's cells it is in.
struct Assigned {
    induction: Option<usize>,
    regulation: Option<usize>,
    system_prompt: Option<usize>,
    pass: Option<usize>,
}

/// The lengths of `cond`'s stimulus lists: induction variants, system prompts and
/// regulation variants that rotate (1 where a list is absent or fixed).
fn list_lengths(study: &Study, lib: &Library, cond: &Condition) -> [usize; 3] {
    let inductions = cond
        .induction
        .as_ref()
        .map_or(1, |e| lib.inductions[e].variants.len().max(1));
    let regulations = cond.regulation.as_ref().map_or(1, |r| {
        if r.variant.is_some() {
            1
        } else {
            lib.regulations[&r.strategy].variants.len().max(1)
        }
    });
    [inductions, study.system_prompt_count(cond), regulations]
}

/// The number of distinct stimulus cells (induction variant x system prompt x regulation
/// variant) `cond` can show.
pub fn stimulus_cells(study: &Study, lib: &Library, cond: &Condition) -> usize {
    list_lengths(study, lib, cond).iter().product()
}

/// The repetitions that balance every condition under crossed assignment: the least
/// common multiple of each condition's cells, doubled where the option direction is
/// counterbalanced too.
pub fn balanced_repetitions(study: &Study, lib: &Library) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let cells = study
        .conditions
        .iter()
        .map(|c| stimulus_cells(study, lib, c))
        .fold(1, |l, k| l / gcd(l, k) * k);
    if study.option_order == OptionOrder::Counterbalanced {
        cells * 2
    } else {
        cells
    }
}

fn assign(study: &Study, lib: &Library, cond: &Condition, rep: usize) -> Assigned {
    let [inductions, prompts, regulations] = list_lengths(study, lib, cond);
    let rotates = cond
        .regulation
        .as_ref()
        .is_some_and(|r| r.variant.is_none());
    match study.assignment {
        Assignment::Modulo => Assigned {
            induction: cond.induction.as_ref().map(|_| rep % inductions),
            regulation: rotates.then_some(rep % regulations),
            system_prompt: None,
            pass: None,
        },
        Assignment::Crossed => {
            let cells = inductions * prompts * regulations;
            let cell = rep % cells;
            Assigned {
                induction: cond.induction.as_ref().map(|_| cell % inductions),
                system_prompt: Some(cell / inductions % prompts),
                regulation: rotates.then_some(cell / (inductions * prompts)),
                pass: Some(rep / cells),
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub id: String,
    pub group: usize,
    pub question: Question,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub groups: Vec<Group>,
    pub trials: Vec<Trial>,
}

/// A group with trials still to run: all its members (its prompts and shared prefix
/// are rendered from all of them, so a resumed group computes what a whole one would)
/// and the pending ones.
pub struct GroupToRun<'a> {
    pub group: &'a Group,
    pub members: Vec<&'a Trial>,
    pub todo: Vec<&'a Trial>,
}

impl Plan {
    /// The groups holding a trial in `pending` (by id), in plan order. One pass over the
    /// trials sorts them into their groups: filtering all trials once per group was
    /// quadratic, minutes of work at 1.6 M trials even where two were pending.
    pub fn groups_to_run<'a>(
        &'a self,
        pending: &'a HashSet<&'a str>,
    ) -> impl Iterator<Item = GroupToRun<'a>> + 'a {
        let mut members: Vec<Vec<&'a Trial>> = vec![Vec::new(); self.groups.len()];
        let mut any_pending = vec![false; self.groups.len()];
        for t in &self.trials {
            members[t.group].push(t);
            any_pending[t.group] |= pending.contains(t.id.as_str());
        }
        self.groups
            .iter()
            .zip(members)
            .zip(any_pending)
            .filter(|(_, any)| *any)
            .map(move |((group, members), _)| {
                let todo: Vec<&Trial> = members
                    .iter()
                    .copied()
                    .filter(|t| pending.contains(t.id.as_str()))
                    .collect();
                GroupToRun {
                    group,
                    members,
                    todo,
                }
            })
    }
}

/// The most trials one plan may hold (it is built in memory, ~1 KB a trial).
pub const MAX_PLAN_TRIALS: usize = 5_000_000;

/// How many trials `expand` would make, computed without making them (saturating).
pub fn count_trials(study: &Study, lib: &Library, models: usize, repetitions: usize) -> usize {
    let per_repetition: usize = study
        .conditions
        .iter()
        .map(|cond| {
            let items: usize = cond
                .instruments
                .iter()
                .map(|name| match study.per_conversation {
                    PerConversation::One => lib.instruments[name].items.len(),
                    PerConversation::All => 1,
                })
                .sum();
            let completions = study
                .completion
                .as_ref()
                .filter(|c| c.conditions.contains(&cond.name))
                .map_or(0, |c| {
                    let stems = lib.tasks[&c.task]
                        .stems
                        .iter()
                        .filter(|s| c.stems.as_ref().is_none_or(|l| l.contains(&s.id)))
                        .count();
                    stems.saturating_mul(c.completions)
                });
            items.saturating_add(completions)
        })
        .fold(0usize, usize::saturating_add);
    let calibration = if study.calibration == Calibration::ContentFree
        && study.per_conversation == PerConversation::One
    {
        content_free_bound(study, lib, repetitions)
    } else {
        0
    };
    per_repetition
        .saturating_mul(repetitions)
        .saturating_add(calibration)
        .saturating_mul(models)
}

/// At most how many content-free trials one model's plan holds: per instrument, its
/// label styles x the option orders the design can show (bounded by its item trials).
fn content_free_bound(study: &Study, lib: &Library, repetitions: usize) -> usize {
    let mut instruments: Vec<&String> = Vec::new();
    for c in &study.conditions {
        for i in &c.instruments {
            if !instruments.contains(&i) {
                instruments.push(i);
            }
        }
    }
    instruments
        .iter()
        .map(|name| {
            let ins = &lib.instruments[*name];
            let n = match &ins.response {
                crate::scenario::Response::Options(o) => o.len(),
                crate::scenario::Response::Numeric { .. } => 0,
            };
            let orders = match study.option_order {
                _ if n < 2 => 1,
                OptionOrder::Fixed => 1,
                OptionOrder::Counterbalanced => 2,
                OptionOrder::ShuffleBound | OptionOrder::ShufflePositional => {
                    let asked = study
                        .conditions
                        .iter()
                        .filter(|c| c.instruments.contains(name))
                        .count()
                        .saturating_mul(ins.items.len())
                        .saturating_mul(repetitions);
                    (1..=n)
                        .try_fold(1usize, |f, k| f.checked_mul(k))
                        .unwrap_or(usize::MAX)
                        .min(asked)
                }
            };
            orders
                .saturating_mul(study.label_styles.len())
                .saturating_mul(CONTENT_FREE_TEXTS.len())
                .saturating_mul(study.system_prompt_variants.len().max(1))
        })
        .fold(0, usize::saturating_add)
}

/// The display order of an item's options (indices into the instrument's options) and
/// how labels attach to them, drawn from the trial's perturbation stream.
/// `ascending`, where crossed assignment fixes it, replaces the counterbalanced draw.
fn order_options(
    design: OptionOrder,
    ins: &crate::scenario::Instrument,
    n_options: usize,
    ascending: Option<bool>,
    rng: &mut impl Rng,
) -> (Vec<usize>, LabelBinding) {
    let mut order: Vec<usize> = (0..n_options).collect();
    match design {
        // Position and option coincide; by position, as records before bindings existed.
        OptionOrder::Fixed => (order, LabelBinding::Position),
        OptionOrder::Counterbalanced => {
            if let crate::scenario::Response::Options(opts) = &ins.response {
                order.sort_by(|&a, &b| opts[a].value.total_cmp(&opts[b].value));
            }
            if !ascending.unwrap_or_else(|| !rng.random_bool(0.5)) {
                order.reverse();
            }
            (order, LabelBinding::Option)
        }
        OptionOrder::ShuffleBound => {
            order.shuffle(rng);
            (order, LabelBinding::Option)
        }
        OptionOrder::ShufflePositional => {
            order.shuffle(rng);
            (order, LabelBinding::Position)
        }
    }
}

/// Expands `study` for `models` (labels), with `repetitions` overriding the study's.
/// Once a stop signal has been asked for it returns what it has built so far: callers
/// check `interrupt::requested()` before they use a plan.
pub fn expand(study: &Study, lib: &Library, models: &[String], repetitions: usize) -> Plan {
    let mut groups = Vec::new();
    let mut trials = Vec::new();
    for model in models {
        for cond in &study.conditions {
            for rep in 0..repetitions {
                // A plan of millions of trials takes seconds to build: a stop asked for
                // meanwhile ends it here, and the caller (which checks for the stop
                // before using a plan) never runs the cut plan.
                if rep % 1024 == 0 && crate::interrupt::requested().is_some() {
                    return Plan { groups, trials };
                }
                let assigned = assign(study, lib, cond, rep);
                let group = make_group(study, lib, model, cond, rep, &assigned);
                let gi = groups.len();
                let mut item_index = 0usize;
                for name in &cond.instruments {
                    let ins = &lib.instruments[name];
                    let items: Vec<Option<String>> = match study.per_conversation {
                        PerConversation::One => {
                            ins.items.iter().map(|i| Some(i.id.clone())).collect()
                        }
                        PerConversation::All => vec![None],
                    };
                    for item in items {
                        let coords = with_assignment(
                            study,
                            serde_json::json!({
                                "study": study.info.id, "model": model, "condition": cond.name, "repetition": rep,
                                "instrument": name, "item": item,
                            }),
                        );
                        let id = stable_id(&coords);
                        let ascending = assigned.pass.map(|p| (p + item_index).is_multiple_of(2));
                        item_index += 1;
                        let mut rng = Stream::Perturbation { trial: &id }.rng(study.seed);
                        let label_style =
                            study.label_styles[rng.random_range(0..study.label_styles.len())];
                        let n_options = match &ins.response {
                            crate::scenario::Response::Options(o) => o.len(),
                            crate::scenario::Response::Numeric { .. } => 0,
                        };
                        let (option_order, label_binding) =
                            order_options(study.option_order, ins, n_options, ascending, &mut rng);
                        trials.push(Trial {
                            id,
                            group: gi,
                            question: Question::Item {
                                instrument: name.clone(),
                                item,
                                label_style,
                                option_order,
                                label_binding,
                            },
                        });
                    }
                }
                if let Some(c) = &study.completion {
                    if c.conditions.contains(&cond.name) {
                        let task = &lib.tasks[&c.task];
                        for stem in &task.stems {
                            if c.stems.as_ref().is_some_and(|s| !s.contains(&stem.id)) {
                                continue;
                            }
                            for index in 0..c.completions {
                                let coords = with_assignment(
                                    study,
                                    serde_json::json!({
                                        "study": study.info.id, "model": model, "condition": cond.name, "repetition": rep,
                                        "task": c.task, "stem": stem.id, "completion": index,
                                    }),
                                );
                                trials.push(Trial {
                                    id: stable_id(&coords),
                                    group: gi,
                                    question: Question::Completion {
                                        task: c.task.clone(),
                                        stem: stem.id.clone(),
                                        index,
                                    },
                                });
                            }
                        }
                    }
                }
                groups.push(group);
            }
        }
        if study.calibration == Calibration::ContentFree
            && study.per_conversation == PerConversation::One
        {
            content_free_group(study, model, &mut groups, &mut trials);
        }
    }
    Plan { groups, trials }
}

/// The model's content-free group: every arrangement (instrument, label style, option
/// order, label binding) its item trials show, asked once per content-free text, in a
/// conversation holding only the system prompt. It follows the model's conditions so
/// adding it leaves every other trial's id and seed unchanged.
fn content_free_group(
    study: &Study,
    model: &str,
    groups: &mut Vec<Group>,
    trials: &mut Vec<Trial>,
) {
    let first_group = groups
        .iter()
        .rposition(|g| g.model != model)
        .map_or(0, |i| i + 1);
    let mut arrangements = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for t in trials.iter().filter(|t| t.group >= first_group) {
        if let Question::Item {
            instrument,
            item: Some(_),
            label_style,
            option_order,
            label_binding,
        } = &t.question
        {
            let key = (
                instrument.clone(),
                *label_style,
                option_order.clone(),
                *label_binding,
            );
            if seen.insert(key.clone()) {
                arrangements.push(key);
            }
        }
    }
    if arrangements.is_empty() {
        return;
    }
    // One group per system prompt variant (repetition v uses variant v), so the format's
    // bias is measured under every wording the items were asked under.
    for variant in 0..study.system_prompt_variants.len().max(1) {
        // Variant 0's coordinates are those of a study with one system prompt.
        let with_variant = |mut coords: serde_json::Value| {
            if variant > 0 {
                coords["system_prompt_variant"] = variant.into();
            }
            coords
        };
        let coords = with_variant(serde_json::json!({
            "study": study.info.id, "model": model, "condition": CONTENT_FREE,
        }));
        let gi = groups.len();
        groups.push(Group {
            id: stable_id(&coords),
            model: model.to_string(),
            condition: CONTENT_FREE.to_string(),
            repetition: variant,
            induction: None,
            induction_variant: None,
            regulation: None,
            regulation_variant: None,
            system_prompt_variant: None,
        });
        for (instrument, label_style, option_order, label_binding) in &arrangements {
            for content in CONTENT_FREE_TEXTS {
                let coords = with_variant(serde_json::json!({
                    "study": study.info.id, "model": model, "condition": CONTENT_FREE,
                    "instrument": instrument, "content": content, "label_style": label_style,
                    "option_order": option_order, "label_binding": label_binding,
                }));
                trials.push(Trial {
                    id: stable_id(&coords),
                    group: gi,
                    question: Question::ContentFree {
                        instrument: instrument.clone(),
                        content: content.to_string(),
                        label_style: *label_style,
                        option_order: option_order.clone(),
                        label_binding: *label_binding,
                    },
                });
            }
        }
    }
}

/// `coords` with the assignment added under crossed assignment, so a crossed run's
/// trials never share ids (and seeds) with the same study's modulo run; modulo
/// coordinates are those of studies written before assignment existed.
fn with_assignment(study: &Study, mut coords: serde_json::Value) -> serde_json::Value {
    if study.assignment == Assignment::Crossed {
        coords["assignment"] = study.assignment.name().into();
    }
    coords
}

fn make_group(
    study: &Study,
    lib: &Library,
    model: &str,
    cond: &Condition,
    rep: usize,
    assigned: &Assigned,
) -> Group {
    let induction_variant = cond
        .induction
        .as_ref()
        .zip(assigned.induction)
        .map(|(e, i)| lib.inductions[e].variants[i].id.clone());
    let regulation_variant = cond.regulation.as_ref().and_then(|r| {
        r.variant.clone().or_else(|| {
            let v = &lib.regulations[&r.strategy].variants;
            assigned
                .regulation
                .filter(|_| !v.is_empty())
                .map(|i| v[i].id.clone())
        })
    });
    let coords = with_assignment(
        study,
        serde_json::json!({
            "study": study.info.id, "model": model, "condition": cond.name, "repetition": rep,
        }),
    );
    Group {
        id: stable_id(&coords),
        model: model.to_string(),
        condition: cond.name.clone(),
        repetition: rep,
        induction: cond.induction.clone(),
        induction_variant,
        regulation: cond.regulation.as_ref().map(|r| r.strategy.clone()),
        regulation_variant,
        system_prompt_variant: assigned.system_prompt,
    }
}
