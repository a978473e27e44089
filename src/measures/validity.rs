//! The validity gate: for each model x instrument x read-out, checks computed from the
//! run's own trials that say whether the instrument measured the model at all, each
//! with its value, its threshold and a verdict (pass / warn / fail). The report puts the
//! gate first, the terminal summary prints it, and `tables/validity.csv` holds it.
//!
//! Why: on small models the option shown first can win nearly every trial, so a scale
//! score measures the option shuffle, not the model; such numbers are not evidence and
//! must not be presented as if they were. The thresholds are fixed here (not tuned to
//! any model) and documented in docs/guide/report.md, "Reading the validity gate".

use super::scores::{distinct_observations, scale_scores, Readout};
use crate::results::{InstrumentScoring, Question, ScoredItem, TrialRecord};
use crate::scenario::study::PositiveControl;
use crate::stats::{centre_within_groups, cronbach_alpha, mcdonald_omega, pearson, variance};
use std::collections::{BTreeMap, BTreeSet};

/// A check's outcome. Ordered from best to worst, so the worst of several is their max.
/// Written everywhere as `name()`: `pass`, `warn`, `fail` (serde too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

/// One check of one model x instrument x read-out.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub model: String,
    pub instrument: String,
    pub readout: Readout,
    /// `position_dominance`, `option_mass`, `answered_rate`,
    /// `internal_consistency:<subscale>`, `omega:<subscale>` (every condition pooled),
    /// `internal_consistency_centred:<subscale>`, `omega_centred:<subscale>` (items
    /// centred within condition), `reverse_item_agreement:<subscale>`,
    /// `positive_control`.
    pub check: String,
    /// None where the design or the data do not allow the check (see `note`).
    pub value: Option<f64>,
    /// The thresholds in words, with the unit the value is in, e.g. "warn > 0.50, fail
    /// > 0.75 (share of trials ...)".
    pub threshold: String,
    pub verdict: Verdict,
    /// Units the value rests on (trials or respondents).
    pub n: usize,
    /// Why the verdict is what it is, in a sentence a reader can act on.
    pub note: String,
}

/// The gate's verdict for one model x instrument x read-out: the worst of its checks.
#[derive(Debug, Clone, PartialEq)]
pub struct GateVerdict {
    pub model: String,
    pub instrument: String,
    pub readout: Readout,
    pub verdict: Verdict,
    /// The notes of the checks that did not pass.
    pub reasons: Vec<String>,
}

/// Below this many units a consistency statistic is not estimated.
pub const MIN_RESPONDENTS: usize = 5;

/// Every check for every model x instrument x read-out in `trials`; `control` is the
/// design's positive control, if it has one.
pub fn validity_checks(
    trials: &[TrialRecord],
    rules: &BTreeMap<String, InstrumentScoring>,
    control: Option<&PositiveControl>,
) -> Vec<Check> {
    let mut by_cell: BTreeMap<(String, String), Vec<&TrialRecord>> = BTreeMap::new();
    for t in trials.iter().filter(|t| t.error.is_none()) {
        if let Question::Item { instrument, .. } = &t.question {
            by_cell
                .entry((t.model.clone(), instrument.clone()))
                .or_default()
                .push(t);
        }
    }
    let mut out = Vec::new();
    for ((model, instrument), cell) in by_cell {
        for readout in Readout::ALL {
            let check = |name: &str, value, threshold: String, verdict, n, note: String| Check {
                model: model.clone(),
                instrument: instrument.clone(),
                readout,
                check: name.to_string(),
                value,
                threshold,
                verdict,
                n,
                note,
            };
            let asked = cell
                .iter()
                .filter(|t| match readout {
                    Readout::Probability => t.choice.is_some(),
                    Readout::Calibrated => t.calibrated.is_some(),
                    Readout::Generated => t.generate.is_some(),
                })
                .count();
            if asked == 0 {
                continue;
            }
            if let Some(c) = position_dominance(&cell, readout) {
                out.push(check(
                    "position_dominance",
                    c.value,
                    c.threshold,
                    c.verdict,
                    c.n,
                    c.note,
                ));
            }
            match readout {
                // Calibration reweights the options; it cannot add mass the model never
                // put on them, so the calibrated read-out inherits the check.
                Readout::Probability | Readout::Calibrated => {
                    let c = option_mass(&cell);
                    out.push(check(
                        "option_mass",
                        c.value,
                        c.threshold,
                        c.verdict,
                        c.n,
                        c.note,
                    ));
                }
                Readout::Generated => {
                    let c = answered_rate(&cell);
                    out.push(check(
                        "answered_rate",
                        c.value,
                        c.threshold,
                        c.verdict,
                        c.n,
                        c.note,
                    ));
                }
            }
            if control.is_none() {
                out.push(check(
                    "positive_control",
                    None,
                    "needs a [positive_control] in the study".into(),
                    Verdict::Warn,
                    0,
                    "this design has no positive control, so nothing shows that the score \
                     tracks the state it names (add [positive_control] to the study, or run \
                     `affectbench validate-instrument`)"
                        .into(),
                ));
            }
            if let Some(rule) = rules.get(&instrument) {
                let respondents = respondents(&cell, rule, readout);
                for sub in rule.subscales() {
                    let items: Vec<&ScoredItem> =
                        rule.items.iter().filter(|i| i.subscale == sub).collect();
                    if let Some(pc) = control {
                        let c = positive_control(&cell, rule, sub, readout, pc);
                        out.push(check(
                            &format!("positive_control:{sub}"),
                            c.value,
                            c.threshold,
                            c.verdict,
                            c.n,
                            c.note,
                        ));
                    }
                    if items.len() < 2 {
                        continue;
                    }
                    for (pooling, suffix) in [
                        (Pooling::Pooled, ""),
                        (Pooling::ConditionCentred, "_centred"),
                    ] {
                        let c = internal_consistency(&respondents, &items, pooling);
                        out.push(check(
                            &format!("internal_consistency{suffix}:{sub}"),
                            c.value,
                            c.threshold,
                            c.verdict,
                            c.n,
                            c.note,
                        ));
                        if items.len() >= 3 {
                            let c = omega_consistency(&respondents, &items, pooling);
                            out.push(check(
                                &format!("omega{suffix}:{sub}"),
                                c.value,
                                c.threshold,
                                c.verdict,
                                c.n,
                                c.note,
                            ));
                        }
                    }
                    if items.iter().any(|i| i.reverse) && items.iter().any(|i| !i.reverse) {
                        let c = reverse_item_agreement(&respondents, &items);
                        out.push(check(
                            &format!("reverse_item_agreement:{sub}"),
                            c.value,
                            c.threshold,
                            c.verdict,
                            c.n,
                            c.note,
                        ));
                    }
                }
            }
        }
    }
    out
}

/// The worst verdict per model x instrument x read-out, with the reasons.
pub fn gate_verdicts(checks: &[Check]) -> Vec<GateVerdict> {
    let mut acc: BTreeMap<(String, String, Readout), GateVerdict> = BTreeMap::new();
    for c in checks {
        let v = acc
            .entry((c.model.clone(), c.instrument.clone(), c.readout))
            .or_insert_with(|| GateVerdict {
                model: c.model.clone(),
                instrument: c.instrument.clone(),
                readout: c.readout,
                verdict: Verdict::Pass,
                reasons: Vec::new(),
            });
        v.verdict = v.verdict.max(c.verdict);
        if c.verdict != Verdict::Pass {
            v.reasons
                .push(format!("{} {}: {}", c.check, c.verdict.name(), c.note));
        }
    }
    acc.into_values().collect()
}

/// A check's computed part, before the cell's coordinates are attached.
struct Outcome {
    value: Option<f64>,
    threshold: String,
    verdict: Verdict,
    n: usize,
    note: String,
}

/// A consistency check over fewer than `MIN_RESPONDENTS` complete respondents.
fn too_few_respondents(threshold: String, n: usize) -> Outcome {
    not_estimable(
        threshold,
        n,
        format!("{n} respondents answered every item; at least {MIN_RESPONDENTS} are needed"),
    )
}

fn not_estimable(threshold: String, n: usize, note: String) -> Outcome {
    Outcome {
        value: None,
        threshold,
        verdict: Verdict::Warn,
        n,
        note,
    }
}

/// Graded against thresholds: `fail_if`/`warn_if` say which side is bad.
fn graded(value: f64, warn: f64, fail: f64, higher_is_worse: bool) -> Verdict {
    let worse = |x: f64, t: f64| if higher_is_worse { x > t } else { x < t };
    if worse(value, fail) {
        Verdict::Fail
    } else if worse(value, warn) {
        Verdict::Warn
    } else {
        Verdict::Pass
    }
}

/// The display position (0-based) of the option a read-out chose in one trial.
fn chosen_position(t: &TrialRecord, readout: Readout) -> Option<usize> {
    let c = t.choice.as_ref()?;
    let most_probable = |probs: &[f64]| {
        if probs.is_empty() || probs.iter().any(|p| !p.is_finite()) {
            return None;
        }
        probs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
    };
    match readout {
        Readout::Probability => most_probable(&c.probs),
        Readout::Calibrated => most_probable(&t.calibrated.as_ref()?.probs),
        Readout::Generated => {
            let v = t.generate.as_ref()?.value?;
            c.values.iter().position(|&x| x == v)
        }
    }
}

/// Share of trials whose chosen option sits at the most chosen display position. With
/// k options an answer that follows the meaning lands on each position about 1/k of
/// the time once the order varies; the thresholds are a third and two thirds of the
/// way from chance (1/k) to 1. Needs at least two different option orders: under one
/// order position and meaning cannot be told apart.
fn position_dominance(cell: &[&TrialRecord], readout: Readout) -> Option<Outcome> {
    let mut orders = BTreeSet::new();
    let mut counts: BTreeMap<usize, Vec<usize>> = BTreeMap::new(); // k -> per position
    let mut n = 0;
    for t in cell {
        let Question::Item { option_order, .. } = &t.question else {
            continue;
        };
        if option_order.len() < 2 {
            continue;
        }
        let Some(pos) = chosen_position(t, readout) else {
            continue;
        };
        let k = option_order.len();
        orders.insert(option_order.clone());
        counts.entry(k).or_insert_with(|| vec![0; k])[pos] += 1;
        n += 1;
    }
    if n == 0 {
        return None;
    }
    // One instrument has one option count; take the largest group if data disagree.
    let (&k, per_position) = counts.iter().max_by_key(|(_, c)| c.iter().sum::<usize>())?;
    let chance = 1.0 / k as f64;
    let warn = chance + (1.0 - chance) / 3.0;
    let fail = chance + 2.0 * (1.0 - chance) / 3.0;
    let threshold = format!(
        "warn > {warn:.2}, fail > {fail:.2} (share of trials choosing the most-chosen display \
         position; chance {chance:.2})"
    );
    if orders.len() < 2 {
        return Some(not_estimable(
            threshold,
            n,
            "every trial showed the options in one order, so position and meaning are \
             confounded; use option_order = \"counterbalanced\" or \"shuffle-bound\""
                .into(),
        ));
    }
    let total: usize = per_position.iter().sum();
    let (best, &wins) = per_position
        .iter()
        .enumerate()
        .max_by_key(|(_, w)| **w)
        .expect("k >= 2");
    let share = wins as f64 / total as f64;
    let verdict = graded(share, warn, fail, true);
    let note = format!(
        "the option at display position {} was chosen in {wins} of {total} trials{}",
        best + 1,
        if verdict == Verdict::Pass {
            String::new()
        } else {
            ": answers follow where an option is shown, not what it says".into()
        }
    );
    Some(Outcome {
        value: Some(share),
        threshold,
        verdict,
        n: total,
        note,
    })
}

/// Mean probability the model put on the option labels at the answer position, before
/// renormalising. Where most of it lies elsewhere, the renormalised distribution is
/// the model's answer to a question it mostly did not take up.
fn option_mass(cell: &[&TrialRecord]) -> Outcome {
    let masses: Vec<f64> = cell
        .iter()
        .filter_map(|t| t.choice.as_ref().map(|c| c.mass))
        .filter(|m| m.is_finite())
        .collect();
    let threshold = "warn < 0.50, fail < 0.10 (mean next-token probability on the option \
                     labels)"
        .to_string();
    if masses.is_empty() {
        return not_estimable(threshold, 0, "no probability read-out".into());
    }
    let mean = masses.iter().sum::<f64>() / masses.len() as f64;
    let verdict = graded(mean, 0.5, 0.1, false);
    Outcome {
        value: Some(mean),
        threshold,
        verdict,
        n: masses.len(),
        note: format!(
            "on average {:.0}% of the next-token probability fell on the option labels",
            mean * 100.0
        ),
    }
}

/// Share of generated answers that could be read as an option or number.
fn answered_rate(cell: &[&TrialRecord]) -> Outcome {
    let asked: Vec<&TrialRecord> = cell
        .iter()
        .copied()
        .filter(|t| t.generate.is_some())
        .collect();
    let answered = asked
        .iter()
        .filter(|t| t.generate.as_ref().is_some_and(|g| g.value.is_some()))
        .count();
    let threshold =
        "warn < 0.90, fail < 0.50 (share of replies with a readable answer)".to_string();
    if asked.is_empty() {
        return not_estimable(threshold, 0, "no generated read-out".into());
    }
    let rate = answered as f64 / asked.len() as f64;
    Outcome {
        value: Some(rate),
        threshold,
        verdict: graded(rate, 0.9, 0.5, false),
        n: asked.len(),
        note: format!(
            "{answered} of {} replies gave a readable answer",
            asked.len()
        ),
    }
}

/// Keyed item values per respondent (one conversation group: model, seed, group,
/// condition, repetition), as `scale_scores` groups them. Items asked all in one turn
/// have no per-item values and give no respondents.
fn respondents(
    cell: &[&TrialRecord],
    rule: &InstrumentScoring,
    readout: Readout,
) -> Vec<Respondent> {
    type Key<'a> = (u64, &'a str, &'a str, usize);
    // respondent -> (item values, the prompts it was shown)
    let mut acc: BTreeMap<Key, (BTreeMap<String, f64>, Vec<&str>)> = BTreeMap::new();
    for t in cell {
        let Some(item) = t.question.item() else {
            continue;
        };
        if !rule.items.iter().any(|i| i.id == item) {
            continue;
        }
        let Some(v) = readout.keyed_value(t).filter(|v| v.is_finite()) else {
            continue;
        };
        let entry = acc
            .entry((t.seed, &t.group_id, &t.condition, t.repetition))
            .or_default();
        entry.0.entry(item.to_string()).or_insert(v);
        entry.1.push(&t.prompt_sha256);
    }
    // A deterministic read-out gives a respondent shown exactly the prompts of an
    // earlier one the same answers: the same respondent, counted once.
    let mut seen = std::collections::HashSet::new();
    acc.into_iter()
        .filter_map(|((_, _, condition, _), (values, mut prompts))| {
            prompts.sort_unstable();
            (!readout.is_deterministic() || seen.insert(prompts)).then(|| Respondent {
                condition: condition.to_string(),
                values,
            })
        })
        .collect()
}

/// One conversation's keyed item values, and the condition it ran in.
struct Respondent {
    condition: String,
    values: BTreeMap<String, f64>,
}

/// The respondents that answered every one of `items`, as (condition, row of values in
/// item order).
fn complete_rows_by_condition<'a>(
    respondents: &'a [Respondent],
    items: &[&ScoredItem],
) -> Vec<(&'a str, Vec<f64>)> {
    respondents
        .iter()
        .filter_map(|r| {
            let row = items
                .iter()
                .map(|i| r.values.get(&i.id).copied())
                .collect::<Option<Vec<f64>>>()?;
            Some((r.condition.as_str(), row))
        })
        .collect()
}

/// The respondents that answered every one of `items`, as rows of values in item order.
fn complete_rows(respondents: &[Respondent], items: &[&ScoredItem]) -> Vec<Vec<f64>> {
    complete_rows_by_condition(respondents, items)
        .into_iter()
        .map(|(_, row)| row)
        .collect()
}

/// Which rows a reliability coefficient is computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pooling {
    /// Every condition's respondents as they are: condition means (the instructed
    /// extremes above all) can make items agree that agree on nothing else.
    Pooled,
    /// Each item centred on its condition's mean first: agreement within conditions.
    ConditionCentred,
}

impl Pooling {
    fn rows(self, respondents: &[Respondent], items: &[&ScoredItem]) -> Vec<Vec<f64>> {
        match self {
            Pooling::Pooled => complete_rows(respondents, items),
            Pooling::ConditionCentred => {
                centre_within_groups(&complete_rows_by_condition(respondents, items))
            }
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Pooling::Pooled => "every condition pooled",
            Pooling::ConditionCentred => "items centred within condition, then pooled",
        }
    }
}

/// Cronbach's alpha within each condition with at least `MIN_RESPONDENTS` complete
/// respondents, for the note: (condition, respondents, alpha).
fn alpha_per_condition(
    respondents: &[Respondent],
    items: &[&ScoredItem],
) -> Vec<(String, usize, f64)> {
    let mut by: BTreeMap<&str, Vec<Vec<f64>>> = BTreeMap::new();
    for (c, row) in complete_rows_by_condition(respondents, items) {
        by.entry(c).or_default().push(row);
    }
    by.into_iter()
        .filter(|(_, rows)| rows.len() >= MIN_RESPONDENTS)
        .filter_map(|(c, rows)| Some((c.to_string(), rows.len(), cronbach_alpha(&rows)?)))
        .collect()
}

/// Cronbach's alpha over respondents that answered every item of a subscale (reverse-
/// keyed items enter keyed), pooled or condition-centred. A negative alpha means the
/// items disagree more than they agree: the answers are not a scale. The centred form
/// notes the alpha within each condition large enough to have one.
fn internal_consistency(
    respondents: &[Respondent],
    items: &[&ScoredItem],
    pooling: Pooling,
) -> Outcome {
    let rows = pooling.rows(respondents, items);
    let threshold = format!(
        "warn < 0.70, fail < 0.50 (Cronbach's alpha, a unitless coefficient; {})",
        pooling.describe()
    );
    if rows.len() < MIN_RESPONDENTS {
        return too_few_respondents(threshold, rows.len());
    }
    match cronbach_alpha(&rows) {
        None => not_estimable(
            threshold,
            rows.len(),
            "the scale scores do not vary across respondents".into(),
        ),
        Some(alpha) => Outcome {
            value: Some(alpha),
            threshold,
            verdict: graded(alpha, 0.7, 0.5, false),
            n: rows.len(),
            note: format!(
                "alpha {alpha:.2} over {} respondents{}",
                rows.len(),
                match pooling {
                    Pooling::Pooled => String::new(),
                    Pooling::ConditionCentred => within_conditions_note(respondents, items),
                }
            ),
        },
    }
}

/// "; alpha within each condition (respondents): baseline 0.41 (12), ..." (empty
/// where no condition has enough respondents).
fn within_conditions_note(respondents: &[Respondent], items: &[&ScoredItem]) -> String {
    let per = alpha_per_condition(respondents, items);
    if per.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = per
        .iter()
        .map(|(c, n, a)| format!("{c} {a:.2} ({n})"))
        .collect();
    format!(
        "; alpha within each condition (respondents): {}",
        parts.join(", ")
    )
}

/// McDonald's omega over respondents that answered every item of a subscale, pooled or
/// condition-centred, with alpha's thresholds; needs 3 items.
fn omega_consistency(
    respondents: &[Respondent],
    items: &[&ScoredItem],
    pooling: Pooling,
) -> Outcome {
    let rows = pooling.rows(respondents, items);
    let threshold = format!(
        "warn < 0.70, fail < 0.50 (McDonald's omega, one factor, a unitless coefficient; {})",
        pooling.describe()
    );
    if rows.len() < MIN_RESPONDENTS {
        return too_few_respondents(threshold, rows.len());
    }
    match mcdonald_omega(&rows) {
        None => not_estimable(
            threshold,
            rows.len(),
            "an item's answers do not vary across respondents".into(),
        ),
        Some((omega, heywood)) => Outcome {
            value: Some(omega),
            threshold,
            verdict: graded(omega, 0.7, 0.5, false),
            n: rows.len(),
            note: format!(
                "omega {omega:.2} over {} respondents{}",
                rows.len(),
                if heywood {
                    " (Heywood case: an item's uniqueness hit its bound; unstable)"
                } else {
                    ""
                }
            ),
        },
    }
}

/// Pearson correlation across respondents between the mean of the forward items and
/// the mean of the (keyed) reverse items. A model that reads the items agrees with
/// itself on both; one that answers by position or habit does not (r <= 0).
fn reverse_item_agreement(respondents: &[Respondent], items: &[&ScoredItem]) -> Outcome {
    let rows = complete_rows(respondents, items);
    let threshold =
        "warn < 0.30, fail < 0.00 (Pearson r across respondents, every condition pooled)"
            .to_string();
    if rows.len() < MIN_RESPONDENTS {
        return too_few_respondents(threshold, rows.len());
    }
    let mean_of = |row: &[f64], reverse: bool| {
        let vals: Vec<f64> = items
            .iter()
            .zip(row)
            .filter(|(i, _)| i.reverse == reverse)
            .map(|(_, v)| *v)
            .collect();
        vals.iter().sum::<f64>() / vals.len() as f64
    };
    let fwd: Vec<f64> = rows.iter().map(|r| mean_of(r, false)).collect();
    let rev: Vec<f64> = rows.iter().map(|r| mean_of(r, true)).collect();
    match pearson(&fwd, &rev) {
        None => not_estimable(
            threshold,
            rows.len(),
            "forward or reverse item means do not vary across respondents".into(),
        ),
        Some(r) => Outcome {
            value: Some(r),
            threshold,
            verdict: graded(r, 0.3, 0.0, false),
            n: rows.len(),
            note: format!(
                "forward and keyed reverse items correlate r = {r:.2} over {} respondents",
                rows.len()
            ),
        },
    }
}

/// Cohen's d (high minus low, pooled SD) of the subscale's scores between the two
/// instructed conditions, required to exceed the declared `min_effect`; and the two
/// means on either side of the scale's midpoint (the instruction moves the score
/// towards the ends, not just apart).
fn positive_control(
    cell: &[&TrialRecord],
    rule: &InstrumentScoring,
    subscale: &str,
    readout: Readout,
    pc: &PositiveControl,
) -> Outcome {
    let rules = BTreeMap::from([(rule.id.clone(), rule.clone())]);
    let scores = distinct_observations(scale_scores(cell.iter().copied(), &rules)).0;
    let arm = |condition: &str| -> Vec<f64> {
        scores
            .iter()
            .filter(|s| s.condition == condition && s.subscale == subscale && s.readout == readout)
            .map(|s| s.value)
            .collect()
    };
    let (low, high) = (arm(&pc.low_condition), arm(&pc.high_condition));
    let threshold = format!(
        "fail if Cohen's d (high - low, in pooled within-arm SDs, which move with the design's \
         noise) < {}; warn if the means do not straddle the midpoint",
        pc.min_effect
    );
    let n = low.len() + high.len();
    if low.len() < 2 || high.len() < 2 {
        return not_estimable(
            threshold,
            n,
            format!(
                "{} low and {} high scores; at least 2 each are needed",
                low.len(),
                high.len()
            ),
        );
    }
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
    let (ml, mh) = (mean(&low), mean(&high));
    let pooled = (((low.len() - 1) as f64 * variance(&low)
        + (high.len() - 1) as f64 * variance(&high))
        / (n - 2) as f64)
        .sqrt();
    let items = rule.items.iter().filter(|i| i.subscale == subscale).count();
    let end = |v: f64| {
        rule.scoring
            .apply(&vec![Some(v); items.max(1)], rule.multiplier)
            .unwrap_or(v)
    };
    let midpoint = (end(rule.min) + end(rule.max)) / 2.0;
    let straddles = mh > midpoint && ml < midpoint;
    let means = format!("low {ml:.2}, high {mh:.2} (midpoint {midpoint:.2})");
    if pooled <= 1e-12 {
        // No spread within either arm: d is undefined; the means decide.
        let verdict = if mh > ml && straddles {
            Verdict::Pass
        } else if mh > ml {
            Verdict::Warn
        } else {
            Verdict::Fail
        };
        return Outcome {
            value: None,
            threshold,
            verdict,
            n,
            note: format!("no spread within either arm, so d is undefined; {means}"),
        };
    }
    let d = (mh - ml) / pooled;
    let verdict = if d < pc.min_effect {
        Verdict::Fail
    } else if !straddles {
        Verdict::Warn
    } else {
        Verdict::Pass
    };
    Outcome {
        value: Some(d),
        threshold,
        verdict,
        n,
        note: format!(
            "instructed high vs low: d = {d:.2} over {n} scores (raw difference {:.2} scale \
             points, {:.1}% of the scale's range); {means}{}",
            mh - ml,
            100.0 * (mh - ml) / (end(rule.max) - end(rule.min)).abs().max(1e-12),
            if verdict == Verdict::Fail {
                ": the instrument does not separate even an instructed state"
            } else {
                ""
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{ChoiceReadout, GenerateReadout, RecordKind, Timing};
    use crate::sampling::Sampling;
    use crate::scenario::study::LabelStyle;
    use crate::scenario::Scoring;

    /// Keyed answers of six respondents (rows) to items a, b and reverse-keyed c.
    const ANSWERS: [[f64; 3]; 6] = [
        [1.0, 2.0, 1.0],
        [2.0, 2.0, 2.0],
        [3.0, 4.0, 3.0],
        [4.0, 3.0, 4.0],
        [2.0, 1.0, 2.0],
        [3.0, 3.0, 4.0],
    ];
    const ITEMS: [&str; 3] = ["a", "b", "c"];

    fn rule() -> InstrumentScoring {
        InstrumentScoring {
            id: "scale".into(),
            scoring: Scoring::Mean,
            multiplier: 1.0,
            min: 1.0,
            max: 4.0,
            items: ITEMS
                .iter()
                .map(|&id| ScoredItem {
                    id: id.into(),
                    subscale: "x".into(),
                    reverse: id == "c",
                })
                .collect(),
        }
    }

    /// A trial of respondent `r` answering item `i` with `keyed`, the options shown in
    /// `order` (values 1..4), `top` the display position holding the most probability.
    fn trial(r: usize, i: usize, order: Vec<usize>, top: usize, mass: f64) -> TrialRecord {
        let keyed = ANSWERS[r][i];
        let values: Vec<f64> = order.iter().map(|&o| o as f64 + 1.0).collect();
        let mut probs = vec![0.1; 4];
        probs[top] = 0.7;
        TrialRecord {
            kind: RecordKind::Trial,
            schema: 2,
            trial_id: format!("{r}-{i}"),
            seed: 1,
            group_id: format!("g{r}"),
            model: "m".into(),
            condition: "c".into(),
            induction: None,
            induction_variant: None,
            regulation: None,
            regulation_variant: None,
            system_prompt_variant: None,
            repetition: r,
            question: Question::Item {
                instrument: "scale".into(),
                item: Some(ITEMS[i].into()),
                label_style: LabelStyle::Digits,
                option_order: order,
                label_binding: Default::default(),
            },
            prompt: String::new(),
            // Each respondent saw a conversation of its own (distinct prompts), as in a
            // design whose repetitions vary.
            prompt_sha256: format!("prompt-{r}-{i}"),
            prompt_tokens: 0,
            // Respondent 5 never gives a readable generated answer.
            generate: Some(GenerateReadout {
                replies: vec![],
                failures: vec![],
                value: (r != 5).then_some(values[top]),
                keyed: (r != 5).then_some(keyed),
                sampling: Sampling::Greedy,
                tokens: 0,
            }),
            choice: Some(ChoiceReadout {
                labels: vec![],
                values,
                probs,
                mass,
                expected: keyed,
                argmax: 0.0,
                draw: 0.0,
                keyed_expected: keyed,
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

    fn checks(trials: &[TrialRecord]) -> Vec<Check> {
        let rules = BTreeMap::from([("scale".to_string(), rule())]);
        validity_checks(trials, &rules, None)
    }

    fn find<'a>(checks: &'a [Check], readout: Readout, name: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.readout == readout && c.check == name)
            .unwrap_or_else(|| panic!("no {name} check for {readout:?}"))
    }

    /// Half the trials ascending, half descending; the first position always on top.
    fn position_driven() -> Vec<TrialRecord> {
        let mut trials = Vec::new();
        for r in 0..6 {
            for i in 0..3 {
                let order = if (r + i) % 2 == 0 {
                    vec![0, 1, 2, 3]
                } else {
                    vec![3, 2, 1, 0]
                };
                trials.push(trial(r, i, order, 0, if r < 3 { 0.2 } else { 0.4 }));
            }
        }
        trials
    }

    #[test]
    fn each_check_matches_hand_computed_values() {
        let c = checks(&position_driven());
        // 18 trials, every one chose display position 1: share 1.0 > 0.75 (chance 0.25).
        let pd = find(&c, Readout::Probability, "position_dominance");
        assert_eq!((pd.value, pd.n, pd.verdict), (Some(1.0), 18, Verdict::Fail));
        assert!(
            pd.threshold
                .starts_with("warn > 0.50, fail > 0.75 (share of trials")
                && pd.threshold.ends_with("chance 0.25)"),
            "{}",
            pd.threshold
        );
        // Generated answers: 15 readable (respondent 5 never), all at position 1.
        let pd = find(&c, Readout::Generated, "position_dominance");
        assert_eq!((pd.value, pd.n, pd.verdict), (Some(1.0), 15, Verdict::Fail));
        // Mean option mass (9 x 0.2 + 9 x 0.4) / 18 = 0.3: warn (< 0.5), not fail.
        let om = find(&c, Readout::Probability, "option_mass");
        assert!((om.value.unwrap() - 0.3).abs() < 1e-12);
        assert_eq!(om.verdict, Verdict::Warn);
        // 15 of 18 answered = 0.833: warn (< 0.9).
        let ar = find(&c, Readout::Generated, "answered_rate");
        assert!((ar.value.unwrap() - 15.0 / 18.0).abs() < 1e-12);
        assert_eq!(ar.verdict, Verdict::Warn);
        // Alpha of ANSWERS by hand (numpy: k/(k-1) (1 - sum var_i / var_total)):
        // 0.8933823529411763 over 6 respondents; pass (>= 0.7).
        let ic = find(&c, Readout::Probability, "internal_consistency:x");
        assert!((ic.value.unwrap() - 0.8933823529411763).abs() < 1e-12);
        assert_eq!((ic.n, ic.verdict), (6, Verdict::Pass));
        // Forward mean (a, b) vs keyed c: numpy corrcoef 0.8703882797784892.
        let ra = find(&c, Readout::Probability, "reverse_item_agreement:x");
        assert!((ra.value.unwrap() - 0.8703882797784892).abs() < 1e-12);
        // The generated read-out has 5 complete respondents (respondent 5 missing).
        let ic = find(&c, Readout::Generated, "internal_consistency:x");
        assert_eq!(ic.n, 5);
        // The gate: the worst check decides, and every non-passing check is a reason.
        let gate = gate_verdicts(&c);
        let p = gate
            .iter()
            .find(|g| g.readout == Readout::Probability)
            .unwrap();
        assert_eq!(p.verdict, Verdict::Fail);
        // position dominance, option mass, and the missing positive control
        assert_eq!(p.reasons.len(), 3, "{:?}", p.reasons);
        assert!(p.reasons[0].starts_with("position_dominance fail"));
    }

    #[test]
    fn answers_that_follow_meaning_pass_position_dominance() {
        // The top option is always the one meaning 2 ("a little"), wherever it is shown:
        // position 2 in ascending order, 3 in descending.
        let mut trials = Vec::new();
        for r in 0..6 {
            for i in 0..3 {
                let (order, top) = if (r + i) % 2 == 0 {
                    (vec![0, 1, 2, 3], 1)
                } else {
                    (vec![3, 2, 1, 0], 2)
                };
                trials.push(trial(r, i, order, top, 0.9));
            }
        }
        let c = checks(&trials);
        let pd = find(&c, Readout::Probability, "position_dominance");
        assert_eq!((pd.value, pd.verdict), (Some(0.5), Verdict::Pass));
    }

    #[test]
    fn one_option_order_makes_position_dominance_not_estimable() {
        let trials: Vec<TrialRecord> = (0..6)
            .flat_map(|r| (0..3).map(move |i| trial(r, i, vec![0, 1, 2, 3], 0, 0.9)))
            .collect();
        let c = checks(&trials);
        let pd = find(&c, Readout::Probability, "position_dominance");
        assert_eq!((pd.value, pd.verdict), (None, Verdict::Warn));
        assert!(pd.note.contains("confounded"), "{}", pd.note);
    }

    #[test]
    fn a_condition_shift_raises_pooled_alpha_but_leaves_the_centred_one_unchanged() {
        // Respondents 0, 2, 4 in one condition and 1, 3, 5 in another.
        let in_conditions = |shift: f64| -> Vec<TrialRecord> {
            let mut trials = position_driven();
            for t in &mut trials {
                let high = t.repetition % 2 == 1;
                t.condition = if high { "high" } else { "low" }.into();
                if high {
                    t.choice.as_mut().unwrap().keyed_expected += shift;
                }
            }
            trials
        };
        let value = |trials: &[TrialRecord], name: &str| {
            find(&checks(trials), Readout::Probability, name)
                .value
                .unwrap()
        };
        let (plain, shifted) = (in_conditions(0.0), in_conditions(10.0));
        let pooled = value(&shifted, "internal_consistency:x");
        assert!(
            pooled > value(&plain, "internal_consistency:x") && pooled > 0.98,
            "{pooled}"
        );
        let centred = value(&shifted, "internal_consistency_centred:x");
        assert!(
            (centred - value(&plain, "internal_consistency_centred:x")).abs() < 1e-9,
            "the condition's mean moved the centred alpha"
        );
        assert!(centred < pooled - 0.1, "{centred} vs {pooled}");
        let omega = value(&shifted, "omega_centred:x");
        assert!(
            (omega - value(&plain, "omega_centred:x")).abs() < 1e-6,
            "the condition's mean moved the centred omega"
        );
    }

    #[test]
    fn items_that_disagree_fail_internal_consistency() {
        // Item b runs against a and c: alpha is negative.
        let mut trials = position_driven();
        for t in &mut trials {
            if t.question.item() == Some("b") {
                let c = t.choice.as_mut().unwrap();
                c.keyed_expected = 5.0 - c.keyed_expected;
            }
        }
        let c = checks(&trials);
        let ic = find(&c, Readout::Probability, "internal_consistency:x");
        assert!(ic.value.unwrap() < 0.5, "{:?}", ic.value);
        assert_eq!(ic.verdict, Verdict::Fail);
    }

    /// Respondents of the two instructed conditions: every item keyed at `low[r]` or
    /// `high[r]` for respondent r.
    #[test]
    fn a_respondent_shown_the_same_prompts_again_counts_once() {
        let trials = position_driven();
        let base = find(
            &checks(&trials),
            Readout::Probability,
            "internal_consistency:x",
        )
        .n;
        // The same conversations again under other group ids (a repetition that showed
        // the model nothing new): the deterministic read-out gains no respondent, the
        // sampled one does.
        let mut doubled = trials.clone();
        doubled.extend(trials.iter().map(|t| TrialRecord {
            group_id: format!("{}-again", t.group_id),
            trial_id: format!("{}-again", t.trial_id),
            repetition: t.repetition + 100,
            ..t.clone()
        }));
        let c = checks(&doubled);
        assert_eq!(
            find(&c, Readout::Probability, "internal_consistency:x").n,
            base
        );
        let generated = find(
            &checks(&trials),
            Readout::Generated,
            "internal_consistency:x",
        )
        .n;
        assert!(generated > 0);
        assert_eq!(
            find(&c, Readout::Generated, "internal_consistency:x").n,
            2 * generated
        );
    }

    fn control_trials(low: &[f64], high: &[f64]) -> Vec<TrialRecord> {
        let mut trials = Vec::new();
        for (condition, scores) in [("control-low", low), ("control-high", high)] {
            for (r, &v) in scores.iter().enumerate() {
                for i in 0..3 {
                    let mut t = trial(r, i, vec![0, 1, 2, 3], r % 4, 0.9);
                    t.condition = condition.into();
                    t.group_id = format!("{condition}-{r}");
                    t.trial_id = format!("{condition}-{r}-{i}");
                    let c = t.choice.as_mut().unwrap();
                    c.keyed_expected = v;
                    trials.push(t);
                }
            }
        }
        trials
    }

    fn control_check(trials: &[TrialRecord]) -> Check {
        let rules = BTreeMap::from([("scale".to_string(), rule())]);
        let pc = PositiveControl {
            low_condition: "control-low".into(),
            high_condition: "control-high".into(),
            min_effect: 1.0,
        };
        validity_checks(trials, &rules, Some(&pc))
            .into_iter()
            .find(|c| c.readout == Readout::Probability && c.check == "positive_control:x")
            .expect("a positive control check")
    }

    #[test]
    fn a_positive_control_that_works_passes_with_cohens_d() {
        // Mean scale scores (mean scoring of equal items = the value): low 1.5, 1.7,
        // 1.3, 1.5; high 3.4, 3.6, 3.2, 3.4. Means 1.5 and 3.4, both SDs sqrt(0.08/3),
        // so d = 1.9 / sqrt(0.08/3) = 11.6351...; midpoint of 1..4 is 2.5.
        let c = control_check(&control_trials(
            &[1.5, 1.7, 1.3, 1.5],
            &[3.4, 3.6, 3.2, 3.4],
        ));
        let want = 1.9 / (0.08f64 / 3.0).sqrt();
        assert!(
            (c.value.unwrap() - want).abs() < 1e-9,
            "{:?} vs {want}",
            c.value
        );
        assert_eq!((c.verdict, c.n), (Verdict::Pass, 8));
    }

    #[test]
    fn a_positive_control_that_does_not_separate_the_states_fails() {
        // High below low (what SmolLM2 gives): d < 0 < min_effect.
        let c = control_check(&control_trials(
            &[2.5, 2.4, 2.6, 2.3],
            &[2.1, 2.2, 2.0, 2.3],
        ));
        assert!(c.value.unwrap() < 0.0);
        assert_eq!(c.verdict, Verdict::Fail);
        // Apart by d > 1 but both above the midpoint: a warning, not a pass.
        let c = control_check(&control_trials(
            &[2.6, 2.8, 2.7, 2.9],
            &[3.5, 3.6, 3.4, 3.7],
        ));
        assert!(c.value.unwrap() > 1.0);
        assert_eq!(c.verdict, Verdict::Warn);
    }

    #[test]
    fn a_design_without_a_positive_control_says_so() {
        let c = checks(&position_driven());
        let pc = find(&c, Readout::Probability, "positive_control");
        assert_eq!((pc.value, pc.verdict), (None, Verdict::Warn));
    }
}
