//! The report's tables as tidy CSV (one row per model x ... x statistic, columns
//! `statistic,value` last; missing values written `NA`, which pandas and R read as
//! missing) and `trials.csv`, one flat row per trial.

use super::analysis::{interval_n, Analysis, Arm};
use super::bias;
use super::lexicon;
use super::load::RunData;
use super::scores::recorded_judge_valence;
use super::stimuli::StimulusCounts;
use crate::error::Result;
use crate::results::csv_table::{self, Num};
use crate::results::{LabelBinding, Question, TrialRecord};
use crate::stats::crossed::CrossedFit;
use crate::stats::{BootstrapCi, HedgesG, MIN_N_BCA, MIN_N_INTERVAL};
use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;
use std::path::Path;

/// The cell text of a number (`NA` when missing); see `results::csv_table::Num`.
pub fn num(x: f64) -> String {
    csv_table::cell(x)
}

/// One tidy table: key columns, then statistic and value.
pub struct Tidy {
    pub name: &'static str,
    pub keys: Vec<&'static str>,
    pub rows: Vec<(Vec<String>, &'static str, f64)>,
}

impl Tidy {
    fn new(name: &'static str, keys: &[&'static str]) -> Self {
        Tidy {
            name,
            keys: keys.to_vec(),
            rows: Vec::new(),
        }
    }
    fn push(&mut self, keys: Vec<String>, stats: &[(&'static str, f64)]) {
        for (s, v) in stats {
            self.rows.push((keys.clone(), s, *v));
        }
    }
}

/// One row of a tidy table as the CSV writer sees it: `seeds`, the table's key columns
/// by name, `statistic`, `value`. Serialised by hand because the key columns differ
/// from table to table.
struct TidyRecord<'a> {
    seeds: &'a str,
    key_names: &'a [&'static str],
    key_values: &'a [String],
    statistic: &'static str,
    value: f64,
}

impl<'a> TidyRecord<'a> {
    fn new(
        seeds: &'a str,
        key_names: &'a [&'static str],
        (key_values, statistic, value): &'a (Vec<String>, &'static str, f64),
    ) -> Self {
        TidyRecord {
            seeds,
            key_names,
            key_values,
            statistic,
            value: *value,
        }
    }
}

impl Serialize for TidyRecord<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut r = s.serialize_struct("TidyRecord", self.key_names.len() + 3)?;
        r.serialize_field("seeds", self.seeds)?;
        for (name, value) in self.key_names.iter().zip(self.key_values) {
            r.serialize_field(name, value)?;
        }
        r.serialize_field("statistic", self.statistic)?;
        r.serialize_field("value", &Num(self.value))?;
        r.end()
    }
}

/// Writes `t` as `<name>.csv`; the first column, `seeds`, names the run seeds whose
/// trials the numbers pool (e.g. `7` or `7+8` for two replications).
pub fn write_tidy(dir: &Path, t: &Tidy, seeds: &str) -> Result<()> {
    let blank_row = (vec![String::new(); t.keys.len()], "", f64::NAN);
    let blank = TidyRecord::new(seeds, &t.keys, &blank_row);
    csv_table::write_table(
        &dir.join(format!("{}.csv", t.name)),
        t.rows
            .iter()
            .map(|row| TidyRecord::new(seeds, &t.keys, row)),
        blank,
    )
}

/// A row of `validity.csv`: one check of the validity gate.
#[derive(Serialize, Default)]
struct ValidityRow {
    model: String,
    instrument: String,
    readout: &'static str,
    check: String,
    /// NA where not estimable.
    value: Num,
    threshold: String,
    verdict: &'static str,
    n: usize,
    note: String,
    seeds: String,
}

/// Writes the validity gate's checks as `validity.csv`.
pub fn write_validity_csv(dir: &Path, a: &Analysis, seeds: &str) -> Result<()> {
    let rows = a.validity.iter().map(|c| ValidityRow {
        model: c.model.clone(),
        instrument: c.instrument.clone(),
        readout: c.readout.name(),
        check: c.check.clone(),
        value: Num::or_na(c.value),
        threshold: c.threshold.clone(),
        verdict: c.verdict.name(),
        n: c.n,
        note: c.note.clone(),
        seeds: seeds.to_string(),
    });
    csv_table::write_table(&dir.join("validity.csv"), rows, ValidityRow::default())
}

/// A row of `calibration.csv`: the content-free probability of one option of one
/// arrangement.
#[derive(Serialize, Default)]
struct CalibrationRow {
    model: String,
    instrument: String,
    label_style: String,
    label_binding: String,
    option_order: String,
    position: usize,
    label: String,
    value: Num,
    p_content_free: Num,
    n_prompts: usize,
    seeds: String,
}

/// A row of `label_style_effect.csv`: letters minus digits for one model x instrument
/// x read-out.
#[derive(Serialize, Default)]
struct LabelStyleRow {
    model: String,
    instrument: String,
    readout: &'static str,
    letters_mean: Num,
    digits_mean: Num,
    difference: Num,
    n_letters: usize,
    n_digits: usize,
    seeds: String,
}

/// Writes `calibration.csv` (the content-free distribution of every arrangement, one
/// row per option) and `label_style_effect.csv` (letters minus digits, per model x
/// instrument x read-out).
pub fn write_bias_csvs(dir: &Path, data: &RunData, seeds: &str) -> Result<()> {
    let rows = bias::content_free_rows(data)
        .into_iter()
        .map(|r| CalibrationRow {
            model: r.model,
            instrument: r.instrument,
            label_style: r.label_style,
            label_binding: r.label_binding,
            option_order: r.option_order,
            position: r.position,
            label: r.label,
            value: Num(r.value),
            p_content_free: Num(r.probability),
            n_prompts: r.n,
            seeds: seeds.to_string(),
        });
    csv_table::write_table(
        &dir.join("calibration.csv"),
        rows,
        CalibrationRow::default(),
    )?;
    let rows = bias::label_style_effects(data)
        .into_iter()
        .map(|r| LabelStyleRow {
            model: r.model,
            instrument: r.instrument,
            readout: r.readout.name(),
            letters_mean: Num(r.letters_mean),
            digits_mean: Num(r.digits_mean),
            difference: Num(r.difference),
            n_letters: r.n_letters,
            n_digits: r.n_digits,
            seeds: seeds.to_string(),
        });
    csv_table::write_table(
        &dir.join("label_style_effect.csv"),
        rows,
        LabelStyleRow::default(),
    )
}

/// A row of `questions.csv`: the answer to one declared question for one model x
/// read-out (missing = NA).
#[derive(Serialize, Default)]
struct QuestionRow {
    question: String,
    family: String,
    kind: String,
    model: String,
    readout: &'static str,
    validity: &'static str,
    instrument: String,
    subscale: String,
    condition_a: String,
    condition_b: String,
    n_a: usize,
    n_b: usize,
    mean_a: Num,
    mean_b: Num,
    difference: Num,
    difference_ci95_low: Num,
    difference_ci95_high: Num,
    ci_method: &'static str,
    hedges_g: Num,
    hedges_g_ci95_low: Num,
    hedges_g_ci95_high: Num,
    welch_t: Num,
    welch_df: Num,
    welch_p: Num,
    welch_p_holm: Num,
    mde_d_80: Num,
    repetitions_per_arm_80: Num,
    seeds: String,
    test: &'static str,
    paired_n: String,
    paired_mean_difference: Num,
    paired_t: Num,
    paired_df: Num,
    paired_p: Num,
    /// "difference" (a - b) or "difference of differences" ((a - b) - (c - d), whose
    /// mean_a and mean_b are then the two differences).
    design: &'static str,
    condition_c: String,
    condition_d: String,
    equivalence_margin: Num,
    tost_p: Num,
    tost_ci90_low: Num,
    tost_ci90_high: Num,
    equivalence: &'static str,
    confound: String,
    /// The declared confirmatory structure (`report::confirmatory`): the row's role, the
    /// predicted sign, the smallest effect of interest (raw units), the test the answer
    /// rests on with its estimate, SE, df and 95% CI, the question's p (one-sided in
    /// the predicted direction; TOST for an equivalence question), Holm over the
    /// model's confirmatory family, TOST against +-SESOI, and the verdict.
    role: &'static str,
    primary_readout: String,
    direction: &'static str,
    sesoi: Num,
    decided_by: &'static str,
    estimate: Num,
    estimate_se: Num,
    estimate_df: Num,
    estimate_ci95_low: Num,
    estimate_ci95_high: Num,
    p_question: Num,
    p_holm_confirmatory: Num,
    sesoi_tost_p: Num,
    verdict: &'static str,
    /// The estimate as a percentage of the scale's range (POMP), with its 95% CI.
    pomp: Num,
    pomp_ci95_low: Num,
    pomp_ci95_high: Num,
    /// The crossed random-effects model (vignette, system prompt, regulation text as
    /// samples; `stats::crossed`), and the variance each factor took.
    crossed_estimate: Num,
    crossed_se: Num,
    crossed_df: Num,
    crossed_p: Num,
    var_vignette: Num,
    var_system_prompt: Num,
    var_regulation_text: Num,
    var_residual: Num,
    /// The distinct stimuli each arm's n rests on.
    vignettes_a: usize,
    vignettes_b: usize,
    system_prompts_a: usize,
    system_prompts_b: usize,
    regulation_texts_a: usize,
    regulation_texts_b: usize,
}

/// Writes the answers to the declared questions as `questions.csv`, one row per
/// question x model x read-out (wide: one column per statistic).
pub fn write_questions_csv(dir: &Path, a: &Analysis, seeds: &str) -> Result<()> {
    let primary = a.primary_readout.clone().unwrap_or_else(|| "NA".into());
    let rows = a.questions.iter().map(|q| {
        let (ci, ci_method) = match q.difference.shown(interval_n(q.n_a, q.n_b, q.constant)) {
            Some((i, m)) => ((i.low, i.high), m),
            None => ((f64::NAN, f64::NAN), "none"),
        };
        let c = &q.contrast;
        let d = &q.decision;
        let paired = |x: fn(&crate::stats::PairedT) -> f64| Num::or_na(q.paired.as_ref().map(x));
        // A factor that did not vary (or did not enter) took no variance: 0 where the
        // model was fitted, NA where it was not.
        let component =
            |factor: &str| Num::or_na(q.crossed.as_ref().map(|f| f.variance_of(factor)));
        QuestionRow {
            question: c.question.clone(),
            family: c.family.clone(),
            kind: c.kind.clone(),
            model: q.model.clone(),
            readout: q.readout.name(),
            validity: q.validity.name(),
            instrument: c.instrument.clone(),
            subscale: c.subscale.clone(),
            condition_a: c.a.clone(),
            condition_b: c.b.clone(),
            n_a: q.n_a,
            n_b: q.n_b,
            mean_a: Num(q.mean_a),
            mean_b: Num(q.mean_b),
            difference: Num(q.difference.estimate),
            difference_ci95_low: Num(ci.0),
            difference_ci95_high: Num(ci.1),
            ci_method,
            hedges_g: Num(q.g.g),
            hedges_g_ci95_low: Num(q.g.ci.low),
            hedges_g_ci95_high: Num(q.g.ci.high),
            welch_t: Num(q.welch.t),
            welch_df: Num(q.welch.df),
            welch_p: Num(q.welch.p),
            welch_p_holm: Num(q.p_holm),
            mde_d_80: Num(q.mde_d),
            repetitions_per_arm_80: Num::or_na(q.repetitions_needed),
            seeds: seeds.to_string(),
            test: q.test(),
            paired_n: q.paired.map_or("NA".into(), |t| t.n.to_string()),
            paired_mean_difference: paired(|t| t.mean_difference),
            paired_t: paired(|t| t.t),
            paired_df: paired(|t| t.df),
            paired_p: paired(|t| t.p),
            design: if c.second_pair().is_some() {
                "difference of differences"
            } else {
                "difference"
            },
            condition_c: c.c.clone().unwrap_or_else(|| "NA".into()),
            condition_d: c.d.clone().unwrap_or_else(|| "NA".into()),
            equivalence_margin: Num::or_na(c.equivalence_margin),
            tost_p: Num::or_na(q.tost.map(|t| t.p)),
            tost_ci90_low: Num::or_na(q.tost.map(|t| t.ci90.low)),
            tost_ci90_high: Num::or_na(q.tost.map(|t| t.ci90.high)),
            equivalence: q.equivalence().map_or("NA", |e| e.name()),
            confound: c.confound.clone().unwrap_or_else(|| "NA".into()),
            role: d.role.name(),
            primary_readout: primary.clone(),
            direction: c.direction.name(),
            sesoi: Num::or_na(c.sesoi),
            decided_by: d.decisive.test,
            estimate: Num(d.decisive.estimate),
            estimate_se: Num(d.decisive.se),
            estimate_df: Num(d.decisive.df),
            estimate_ci95_low: Num(d.ci95.low),
            estimate_ci95_high: Num(d.ci95.high),
            p_question: Num(d.p),
            p_holm_confirmatory: Num(d.p_holm),
            sesoi_tost_p: Num::or_na(d.sesoi.map(|t| t.p)),
            verdict: d.verdict(c),
            pomp: Num::or_na(d.pomp.map(|p| p.0)),
            pomp_ci95_low: Num::or_na(d.pomp.map(|p| p.1.low)),
            pomp_ci95_high: Num::or_na(d.pomp.map(|p| p.1.high)),
            crossed_estimate: Num::or_na(q.crossed.as_ref().map(|f| f.estimate)),
            crossed_se: Num::or_na(q.crossed.as_ref().map(|f| f.se)),
            crossed_df: Num::or_na(q.crossed.as_ref().map(|f| f.df)),
            crossed_p: Num::or_na(q.crossed.as_ref().map(|f| f.p)),
            var_vignette: component("vignette"),
            var_system_prompt: component("system prompt"),
            var_regulation_text: component("regulation text"),
            var_residual: Num::or_na(q.crossed.as_ref().map(|f| f.var_residual)),
            vignettes_a: q.stimuli_a.vignettes,
            vignettes_b: q.stimuli_b.vignettes,
            system_prompts_a: q.stimuli_a.system_prompts,
            system_prompts_b: q.stimuli_b.system_prompts,
            regulation_texts_a: q.stimuli_a.regulation_texts,
            regulation_texts_b: q.stimuli_b.regulation_texts,
        }
    });
    csv_table::write_table(&dir.join("questions.csv"), rows, QuestionRow::default())
}

/// A row of `deviations.csv`: one way a study differs from the published design.
#[derive(Serialize, Default)]
struct DeviationRow {
    study: String,
    aspect: String,
    source: String,
    here: String,
    why: String,
    changes_interpretation: bool,
}

/// Writes `deviations.csv` where a study declares `[[deviation]]`s; the path written.
pub fn write_deviations_csv(dir: &Path, data: &RunData) -> Result<Option<std::path::PathBuf>> {
    let mut rows = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for h in &data.headers {
        for d in &h.study.deviations {
            if seen.insert((h.study.id.clone(), d.aspect.clone())) {
                rows.push(DeviationRow {
                    study: h.study.id.clone(),
                    aspect: d.aspect.clone(),
                    source: d.source.clone(),
                    here: d.here.clone(),
                    why: d.why.clone(),
                    changes_interpretation: d.changes_interpretation,
                });
            }
        }
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let path = dir.join("deviations.csv");
    csv_table::write_table(&path, rows, DeviationRow::default())?;
    Ok(Some(path))
}

/// A difference with its bootstrap CI and Hedges' g with its CI, as tidy statistics.
/// The percentile and BCa bounds as a reader may use them for `n` observations: NaN
/// (written `NA`) below `MIN_N_INTERVAL`, and BCa NaN below `MIN_N_BCA`.
fn ci_bounds(ci: &BootstrapCi, n: usize) -> [f64; 4] {
    let nan = f64::NAN;
    let pct = if n >= MIN_N_INTERVAL {
        [ci.percentile.low, ci.percentile.high]
    } else {
        [nan, nan]
    };
    let bca = if n >= MIN_N_BCA {
        [ci.bca.low, ci.bca.high]
    } else {
        [nan, nan]
    };
    [pct[0], pct[1], bca[0], bca[1]]
}

fn effect_stats(difference: &BootstrapCi, g: &HedgesG, n: usize) -> [(&'static str, f64); 8] {
    let [pl, ph, bl, bh] = ci_bounds(difference, n);
    [
        ("difference", difference.estimate),
        ("difference_ci95_percentile_low", pl),
        ("difference_ci95_percentile_high", ph),
        ("difference_ci95_bca_low", bl),
        ("difference_ci95_bca_high", bh),
        ("hedges_g", g.g),
        ("hedges_g_ci95_low", g.ci.low),
        ("hedges_g_ci95_high", g.ci.high),
    ]
}

/// All tidy tables of an analysis, in the order they are written.
pub fn tidy_tables(a: &Analysis) -> Vec<Tidy> {
    vec![
        descriptives_table(a),
        contrasts_table(a),
        baseline_table(a),
        valence_table(a),
        judge_table(a),
        agreement_table(a),
        quality_table(a),
        position_table(a),
        explained_variance_table(a),
    ]
}

/// Per cell: n, mean, SD, median and the bootstrap CI bounds.
fn descriptives_table(a: &Analysis) -> Tidy {
    let validity = |model: &str, instrument: &str, readout| {
        a.verdict(model, instrument, readout).name().to_string()
    };
    let mut descriptives = Tidy::new(
        "descriptives",
        &[
            "model",
            "instrument",
            "emotion",
            "condition",
            "readout",
            "validity",
        ],
    );
    for c in &a.cells {
        let [pct_low, pct_high, bca_low, bca_high] = ci_bounds(&c.ci, c.describe.n);
        descriptives.push(
            vec![
                c.model.clone(),
                c.instrument.clone(),
                c.emotion.clone(),
                c.condition.clone(),
                c.readout.name().into(),
                validity(&c.model, &c.instrument, c.readout),
            ],
            &[
                ("n", c.describe.n as f64),
                ("mean", c.describe.mean),
                ("sd", c.describe.sd),
                ("median", c.describe.median),
                ("ci95_percentile_low", pct_low),
                ("ci95_percentile_high", pct_high),
                ("ci95_bca_low", bca_low),
                ("ci95_bca_high", bca_high),
            ],
        );
    }
    descriptives
}

/// The role of every row of contrasts.csv and of negativity_bias.csv's contrasts.
const EXPLORATORY: &str = "exploratory";

/// The induction and regulation contrasts: arms, difference, Hedges' g, Welch and
/// Mann-Whitney tests, Holm's p.
fn contrasts_table(a: &Analysis) -> Tidy {
    let validity = |model: &str, instrument: &str, readout| {
        a.verdict(model, instrument, readout).name().to_string()
    };
    let mut contrasts = Tidy::new(
        "contrasts",
        &[
            "model",
            "readout",
            "instrument",
            "emotion",
            "family",
            "condition_a",
            "condition_b",
            "validity",
            "role",
        ],
    );
    for c in &a.contrasts {
        contrasts.push(
            vec![
                c.model.clone(),
                c.readout.name().into(),
                c.instrument.clone(),
                c.emotion.clone(),
                c.family.into(),
                c.a.clone(),
                c.b.clone(),
                validity(&c.model, &c.instrument, c.readout),
                // The design's contrasts are not declared questions: never in the
                // confirmatory family (questions.csv holds those).
                EXPLORATORY.into(),
            ],
            &[
                &[
                    ("n_a", c.n_a as f64),
                    ("n_b", c.n_b as f64),
                    ("mean_a", c.mean_a),
                    ("mean_b", c.mean_b),
                ][..],
                &effect_stats(&c.difference, &c.g, interval_n(c.n_a, c.n_b, c.constant)),
                &[
                    // 1 where that arm is one conversation, tested as a constant (the
                    // welch_* columns then hold the one-sample t test).
                    ("a_is_constant", (c.constant == Some(Arm::A)) as u8 as f64),
                    ("b_is_constant", (c.constant == Some(Arm::B)) as u8 as f64),
                    ("welch_t", c.welch.t),
                    ("welch_df", c.welch.df),
                    ("welch_p", c.welch.p),
                    ("mann_whitney_u", c.mann_whitney.u),
                    ("mann_whitney_p", c.mann_whitney.p),
                    ("welch_p_holm", c.p_holm),
                ],
                &stimulus_stats(&c.stimuli_a, &c.stimuli_b, c.crossed.as_ref()),
            ]
            .concat(),
        );
    }
    contrasts
}

/// The distinct stimuli of each arm and the crossed random-effects fit, as tidy
/// statistics (NaN where the model was not fitted; a factor that did not enter took 0).
fn stimulus_stats(
    a: &StimulusCounts,
    b: &StimulusCounts,
    crossed: Option<&CrossedFit>,
) -> Vec<(&'static str, f64)> {
    let fit = |x: fn(&CrossedFit) -> f64| crossed.map_or(f64::NAN, x);
    let component = |factor: &str| crossed.map_or(f64::NAN, |f| f.variance_of(factor));
    vec![
        ("vignettes_a", a.vignettes as f64),
        ("vignettes_b", b.vignettes as f64),
        ("system_prompts_a", a.system_prompts as f64),
        ("system_prompts_b", b.system_prompts as f64),
        ("regulation_texts_a", a.regulation_texts as f64),
        ("regulation_texts_b", b.regulation_texts as f64),
        ("crossed_estimate", fit(|f| f.estimate)),
        ("crossed_se", fit(|f| f.se)),
        ("crossed_df", fit(|f| f.df)),
        ("crossed_p", fit(|f| f.p)),
        ("crossed_var_conversation", component("conversation")),
        ("crossed_var_vignette", component("vignette")),
        ("crossed_var_system_prompt", component("system prompt")),
        ("crossed_var_regulation_text", component("regulation text")),
        ("crossed_var_residual", fit(|f| f.var_residual)),
    ]
}

/// Whether each regulated condition returned to baseline (the equivalence test).
fn baseline_table(a: &Analysis) -> Tidy {
    let validity = |model: &str, instrument: &str, readout| {
        a.verdict(model, instrument, readout).name().to_string()
    };
    let mut baseline = Tidy::new(
        "baseline_return",
        &[
            "model",
            "readout",
            "instrument",
            "emotion",
            "condition",
            "baseline",
            "verdict",
            "validity",
        ],
    );
    for b in &a.baseline_returns {
        baseline.push(
            vec![
                b.model.clone(),
                b.readout.name().into(),
                b.instrument.clone(),
                b.emotion.clone(),
                b.condition.clone(),
                b.baseline.clone(),
                b.verdict.into(),
                validity(&b.model, &b.instrument, b.readout),
            ],
            &[
                ("hedges_g", b.g.g),
                ("hedges_g_ci90_low", b.g.ci.low),
                ("hedges_g_ci90_high", b.g.ci.high),
                ("equivalence_margin", a.options.equivalence_margin),
            ],
        );
    }
    baseline
}

/// Completion valence per condition, then the negativity contrasts at the
/// completion, conversation, stem and mixed-model levels.
fn valence_table(a: &Analysis) -> Tidy {
    let mut valence = Tidy::new(
        "negativity_bias",
        &["model", "scorer", "condition", "reference", "role"],
    );
    for v in &a.valence {
        let [_, _, bca_low, bca_high] = ci_bounds(&v.ci, v.describe.n);
        valence.push(
            vec![
                v.model.clone(),
                v.scorer.clone(),
                v.condition.clone(),
                String::new(),
                String::new(),
            ],
            &[
                ("n", v.describe.n as f64),
                ("mean", v.describe.mean),
                ("sd", v.describe.sd),
                ("median", v.describe.median),
                ("ci95_bca_low", bca_low),
                ("ci95_bca_high", bca_high),
            ],
        );
    }
    for v in &a.valence_contrasts {
        valence.push(
            vec![
                v.model.clone(),
                v.scorer.clone(),
                v.a.clone(),
                v.b.clone(),
                EXPLORATORY.into(),
            ],
            &[
                // Completions are many per condition; the CI is shown as computed.
                &effect_stats(&v.difference, &v.g, MIN_N_BCA)[..],
                &[("welch_p", v.welch.p), ("mann_whitney_p", v.mann_whitney.p)],
                // The same contrast at the conversation level and paired by stem, the
                // units completions are nested in.
                &[
                    ("conversations_a", v.conversations.0 as f64),
                    ("conversations_b", v.conversations.1 as f64),
                    ("conversation_welch_t", v.conversations.2.t),
                    ("conversation_welch_df", v.conversations.2.df),
                    ("conversation_welch_p", v.conversations.2.p),
                    ("stems_paired", v.by_stem.n as f64),
                    ("stem_mean_difference", v.by_stem.mean_difference),
                    ("stem_paired_t", v.by_stem.t),
                    ("stem_paired_df", v.by_stem.df),
                    ("stem_paired_p", v.by_stem.p),
                ],
                // Every completion, conversation as a random intercept, stem fixed.
                &[
                    ("mixed_estimate", v.mixed.map_or(f64::NAN, |f| f.estimate)),
                    ("mixed_se", v.mixed.map_or(f64::NAN, |f| f.se)),
                    ("mixed_z", v.mixed.map_or(f64::NAN, |f| f.z)),
                    ("mixed_p", v.mixed.map_or(f64::NAN, |f| f.p)),
                    (
                        "mixed_var_conversation",
                        v.mixed.map_or(f64::NAN, |f| f.var_conversation),
                    ),
                    (
                        "mixed_var_residual",
                        v.mixed.map_or(f64::NAN, |f| f.var_residual),
                    ),
                ],
                // Conversation, vignette and system prompt as crossed samples.
                &stimulus_stats(&v.stimuli_a, &v.stimuli_b, v.crossed.as_ref()),
            ]
            .concat(),
        );
    }
    valence
}

/// Answer quality per model and condition.
fn quality_table(a: &Analysis) -> Tidy {
    let mut quality = Tidy::new("data_quality", &["model", "condition"]);
    for q in &a.quality {
        let n = q.items as f64;
        quality.push(
            vec![q.model.clone(), q.condition.clone()],
            &[
                ("items", n),
                ("answered_rate", q.answered as f64 / n),
                (
                    "first_reply_unreadable_rate",
                    q.first_reply_unreadable as f64 / n,
                ),
                ("reask_rate", q.reasked as f64 / n),
                ("unanswered_rate", 1.0 - q.answered as f64 / n),
                ("error_rate", q.errors as f64 / n),
                (
                    "mean_option_mass",
                    if q.option_mass_n > 0 {
                        q.option_mass_sum / q.option_mass_n as f64
                    } else {
                        f64::NAN
                    },
                ),
            ],
        );
    }
    quality
}

/// Answer-position bias per display position.
fn position_table(a: &Analysis) -> Tidy {
    let mut position = Tidy::new(
        "position_bias",
        &["model", "instrument", "readout", "n_options", "position"],
    );
    for p in &a.position_bias {
        position.push(
            vec![
                p.model.clone(),
                p.instrument.clone(),
                p.readout.name().to_string(),
                p.n_options.to_string(),
                p.position.to_string(),
            ],
            &[
                ("trials", p.trials as f64),
                ("argmax_share", p.argmax_share),
                ("mean_probability", p.mean_probability),
                ("uniform_share", 1.0 / p.n_options as f64),
            ],
        );
    }
    position
}

/// Variance shares of the perturbation factors.
fn explained_variance_table(a: &Analysis) -> Tidy {
    let mut variance = Tidy::new("variance_explained", &["model", "readout", "factor"]);
    for v in &a.variance {
        variance.push(
            vec![v.model.clone(), v.readout.name().into(), v.factor.into()],
            &[
                ("cells", v.cells as f64),
                ("eta_squared", v.eta_squared),
                ("epsilon_squared", v.epsilon_squared),
            ],
        );
    }
    variance
}

/// The completion scorers' compliance, coverage, order agreement and bias.
fn judge_table(a: &Analysis) -> Tidy {
    let mut judge = Tidy::new("judge_quality", &["model"]);
    let opt = |x: Option<f64>| x.unwrap_or(f64::NAN);
    for q in &a.judge_quality {
        judge.push(
            vec![q.model.clone()],
            &[
                ("completions", q.completions as f64),
                ("compliance_known", q.compliance_known as f64),
                ("compliant", q.compliant as f64),
                ("lexicon_scored", q.lexicon_scored as f64),
                ("judged", q.judged as f64),
                ("judged_in_two_orders", q.two_orders as f64),
                ("orders_agree", q.orders_agree as f64),
                ("mean_order_gap", q.mean_order_gap),
                ("content_free_valence", opt(q.content_free_valence)),
                ("judge_lexicon_r", opt(q.judge_lexicon_r)),
                (
                    "judge_calibrated_lexicon_r",
                    opt(q.judge_calibrated_lexicon_r),
                ),
            ],
        );
    }
    judge
}

/// Agreement of the run's judge with each second judge.
fn agreement_table(a: &Analysis) -> Tidy {
    let opt = |x: Option<f64>| x.unwrap_or(f64::NAN);
    let mut agreement = Tidy::new("judge_agreement", &["model", "second_judge"]);
    for g in &a.judge_agreement {
        agreement.push(
            vec![g.model.clone(), g.second_judge.clone()],
            &[
                ("paired", g.paired as f64),
                ("r", opt(g.r)),
                ("r_calibrated", opt(g.r_calibrated)),
                ("same_side", g.same_side as f64),
                ("second_judged_in_two_orders", g.second_two_orders as f64),
                ("second_orders_agree", g.second_orders_agree as f64),
                (
                    "second_content_free_valence",
                    opt(g.second_content_free_valence),
                ),
                ("second_lexicon_r", opt(g.second_lexicon_r)),
            ],
        );
    }
    agreement
}

/// A row of `trials.csv`: one trial, every read-out flattened, the lexicon and judge
/// valence added for completions. Lists (labels, probabilities, option order) are
/// space-separated in one cell.
#[derive(Serialize, Default)]
struct TrialRow {
    trial_id: String,
    seed: u64,
    group_id: String,
    model: String,
    condition: String,
    induction: String,
    induction_variant: String,
    regulation: String,
    regulation_variant: String,
    repetition: usize,
    kind: &'static str,
    instrument: String,
    item: String,
    stem: String,
    label_style: String,
    option_order: String,
    label_binding: String,
    prompt_sha256: String,
    prompt_tokens: usize,
    reply: String,
    replies: String,
    generated_value: Num,
    generated_keyed: Num,
    option_labels: String,
    option_probs: String,
    option_mass: Num,
    option_expected: Num,
    option_keyed_expected: Num,
    option_argmax: Num,
    option_draw: Num,
    calibrated_probs: String,
    calibrated_expected: Num,
    calibrated_keyed_expected: Num,
    completion: String,
    lexicon_valence: Num,
    judge_valence: Num,
    judge_calibrated_valence: Num,
    continues_stem: String,
    error: String,
    total_ms: Num,
}

/// What a trial asked, as the `kind` .. `label_binding` cells of `trials.csv`.
struct AskedCells {
    kind: &'static str,
    instrument: String,
    item: String,
    stem: String,
    label_style: String,
    option_order: String,
    label_binding: String,
}

fn asked_cells(question: &Question) -> AskedCells {
    let order_text = |order: &[usize]| {
        order
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let binding_text = |b: &LabelBinding| {
        match b {
            LabelBinding::Position => "position",
            LabelBinding::Option => "option",
        }
        .to_string()
    };
    match question {
        Question::ContentFree {
            instrument,
            content,
            label_style,
            option_order,
            label_binding,
        } => AskedCells {
            kind: "content-free",
            instrument: instrument.clone(),
            item: content.clone(),
            stem: String::new(),
            label_style: label_style.name().to_string(),
            option_order: order_text(option_order),
            label_binding: binding_text(label_binding),
        },
        Question::Item {
            instrument,
            item,
            label_style,
            option_order,
            label_binding,
        } => AskedCells {
            kind: "item",
            instrument: instrument.clone(),
            item: item.clone().unwrap_or_default(),
            stem: String::new(),
            label_style: label_style.name().to_string(),
            option_order: order_text(option_order),
            label_binding: binding_text(label_binding),
        },
        Question::Completion { stem, .. } => AskedCells {
            kind: "completion",
            instrument: String::new(),
            item: String::new(),
            stem: stem.clone(),
            label_style: String::new(),
            option_order: String::new(),
            label_binding: String::new(),
        },
    }
}

fn number_list(xs: &[f64]) -> String {
    xs.iter().map(|p| num(*p)).collect::<Vec<_>>().join(" ")
}

fn trial_row(t: &TrialRecord) -> TrialRow {
    let s = |x: &Option<String>| x.clone().unwrap_or_default();
    let asked = asked_cells(&t.question);
    let g = t.generate.as_ref();
    let c = t.choice.as_ref();
    let cal = t.calibrated.as_ref();
    TrialRow {
        trial_id: t.trial_id.clone(),
        seed: t.seed,
        group_id: t.group_id.clone(),
        model: t.model.clone(),
        condition: t.condition.clone(),
        induction: s(&t.induction),
        induction_variant: s(&t.induction_variant),
        regulation: s(&t.regulation),
        regulation_variant: s(&t.regulation_variant),
        repetition: t.repetition,
        kind: asked.kind,
        instrument: asked.instrument,
        item: asked.item,
        stem: asked.stem,
        label_style: asked.label_style,
        option_order: asked.option_order,
        label_binding: asked.label_binding,
        prompt_sha256: t.prompt_sha256.clone(),
        prompt_tokens: t.prompt_tokens,
        reply: g
            .and_then(|g| g.replies.last().cloned())
            .unwrap_or_default(),
        replies: g.map(|g| g.replies.len().to_string()).unwrap_or_default(),
        generated_value: Num::or_na(g.and_then(|g| g.value)),
        generated_keyed: Num::or_na(g.and_then(|g| g.keyed)),
        option_labels: c.map(|c| c.labels.join(" ")).unwrap_or_default(),
        option_probs: c.map(|c| number_list(&c.probs)).unwrap_or_default(),
        option_mass: Num::or_na(c.map(|c| c.mass)),
        option_expected: Num::or_na(c.map(|c| c.expected)),
        option_keyed_expected: Num::or_na(c.map(|c| c.keyed_expected)),
        option_argmax: Num::or_na(c.map(|c| c.argmax)),
        option_draw: Num::or_na(c.map(|c| c.draw)),
        calibrated_probs: cal.map(|c| number_list(&c.probs)).unwrap_or_default(),
        calibrated_expected: Num::or_na(cal.map(|c| c.expected)),
        calibrated_keyed_expected: Num::or_na(cal.map(|c| c.keyed_expected)),
        completion: s(&t.completion),
        lexicon_valence: Num::or_na(t.completion.as_ref().map(|x| lexicon::score(x).valence)),
        judge_valence: Num::or_na(recorded_judge_valence(t)),
        judge_calibrated_valence: Num::or_na(
            t.judge_detail.as_ref().map(|d| d.calibrated_expected),
        ),
        continues_stem: t
            .continues_stem
            .map(|b| b.to_string())
            .unwrap_or_else(|| "NA".into()),
        error: s(&t.error),
        total_ms: Num::or_na(t.timing.total_ms),
    }
}

/// `trials.csv`: one row per trial (the content-free trials after the others).
pub fn write_trials_csv(path: &Path, data: &RunData) -> Result<()> {
    let rows = data.trials.iter().chain(&data.content_free).map(trial_row);
    csv_table::write_table(path, rows, TrialRow::default())
}
