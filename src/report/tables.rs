//! The report's tables as tidy CSV (one row per model x ... x statistic, columns
//! `statistic,value` last; missing values written `NA`, which pandas and R read as
//! missing) and `trials.csv`, one flat row per trial.

use super::analysis::{interval_n, test_name, Analysis, Arm};
use super::bias;
use super::lexicon;
use super::load::RunData;
use super::scores::recorded_judge_valence;
use crate::error::{Error, Result};
use crate::results::{LabelBinding, Question};
use crate::stats::{BootstrapCi, HedgesG, MIN_N_BCA, MIN_N_INTERVAL};
use std::path::Path;

pub fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "NA".into()
    }
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

fn csv_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Report(format!("{}: {e}", path.display()))
}

/// Writes `t` as `<name>.csv`; the first column, `seeds`, names the run seeds whose
/// trials the numbers pool (e.g. `7` or `7+8` for two replications).
pub fn write_tidy(dir: &Path, t: &Tidy, seeds: &str) -> Result<()> {
    let path = dir.join(format!("{}.csv", t.name));
    let mut w = csv::Writer::from_path(&path).map_err(|e| csv_err(&path, e))?;
    let mut header: Vec<&str> = vec!["seeds"];
    header.extend(t.keys.iter());
    header.extend(["statistic", "value"]);
    w.write_record(&header).map_err(|e| csv_err(&path, e))?;
    for (keys, stat, value) in &t.rows {
        let mut rec = vec![seeds.to_string()];
        rec.extend(keys.iter().cloned());
        rec.push(stat.to_string());
        rec.push(num(*value));
        w.write_record(&rec).map_err(|e| csv_err(&path, e))?;
    }
    w.flush().map_err(|e| csv_err(&path, e))
}

/// Writes the validity gate's checks as `validity.csv`: model, instrument, readout,
/// check, value (NA where not estimable), threshold, verdict, n, note, seeds.
pub fn write_validity_csv(dir: &Path, a: &Analysis, seeds: &str) -> Result<()> {
    let path = dir.join("validity.csv");
    let mut w = csv::Writer::from_path(&path).map_err(|e| csv_err(&path, e))?;
    w.write_record([
        "model",
        "instrument",
        "readout",
        "check",
        "value",
        "threshold",
        "verdict",
        "n",
        "note",
        "seeds",
    ])
    .map_err(|e| csv_err(&path, e))?;
    for c in &a.validity {
        w.write_record([
            c.model.clone(),
            c.instrument.clone(),
            c.readout.name().to_string(),
            c.check.clone(),
            c.value.map(num).unwrap_or_else(|| "NA".into()),
            c.threshold.clone(),
            c.verdict.name().to_string(),
            c.n.to_string(),
            c.note.clone(),
            seeds.to_string(),
        ])
        .map_err(|e| csv_err(&path, e))?;
    }
    w.flush().map_err(|e| csv_err(&path, e))
}

/// Writes `calibration.csv` (the content-free distribution of every arrangement, one
/// row per option) and `label_style_effect.csv` (letters minus digits, per model x
/// instrument x read-out).
pub fn write_bias_csvs(dir: &Path, data: &RunData, seeds: &str) -> Result<()> {
    let path = dir.join("calibration.csv");
    let mut w = csv::Writer::from_path(&path).map_err(|e| csv_err(&path, e))?;
    w.write_record([
        "model",
        "instrument",
        "label_style",
        "label_binding",
        "option_order",
        "position",
        "label",
        "value",
        "p_content_free",
        "n_prompts",
        "seeds",
    ])
    .map_err(|e| csv_err(&path, e))?;
    for r in bias::content_free_rows(data) {
        w.write_record([
            r.model,
            r.instrument,
            r.label_style,
            r.label_binding,
            r.option_order,
            r.position.to_string(),
            r.label,
            num(r.value),
            num(r.probability),
            r.n.to_string(),
            seeds.to_string(),
        ])
        .map_err(|e| csv_err(&path, e))?;
    }
    w.flush().map_err(|e| csv_err(&path, e))?;

    let path = dir.join("label_style_effect.csv");
    let mut w = csv::Writer::from_path(&path).map_err(|e| csv_err(&path, e))?;
    w.write_record([
        "model",
        "instrument",
        "readout",
        "letters_mean",
        "digits_mean",
        "difference",
        "n_letters",
        "n_digits",
        "seeds",
    ])
    .map_err(|e| csv_err(&path, e))?;
    for r in bias::label_style_effects(data) {
        w.write_record([
            r.model,
            r.instrument,
            r.readout.name().to_string(),
            num(r.letters_mean),
            num(r.digits_mean),
            num(r.difference),
            r.n_letters.to_string(),
            r.n_digits.to_string(),
            seeds.to_string(),
        ])
        .map_err(|e| csv_err(&path, e))?;
    }
    w.flush().map_err(|e| csv_err(&path, e))
}

/// Writes the answers to the declared questions as `questions.csv`, one row per
/// question x model x read-out (wide: one column per statistic; missing = NA).
pub fn write_questions_csv(dir: &Path, a: &Analysis, seeds: &str) -> Result<()> {
    let path = dir.join("questions.csv");
    let mut w = csv::Writer::from_path(&path).map_err(|e| csv_err(&path, e))?;
    w.write_record([
        "question",
        "family",
        "kind",
        "model",
        "readout",
        "validity",
        "instrument",
        "subscale",
        "condition_a",
        "condition_b",
        "n_a",
        "n_b",
        "mean_a",
        "mean_b",
        "difference",
        "difference_ci95_low",
        "difference_ci95_high",
        "ci_method",
        "hedges_g",
        "hedges_g_ci95_low",
        "hedges_g_ci95_high",
        "welch_t",
        "welch_df",
        "welch_p",
        "welch_p_holm",
        "mde_d_80",
        "repetitions_per_arm_80",
        "seeds",
        "test",
        "paired_n",
        "paired_mean_difference",
        "paired_t",
        "paired_df",
        "paired_p",
    ])
    .map_err(|e| csv_err(&path, e))?;
    for q in &a.questions {
        let (ci, method) = match q.difference.shown(interval_n(q.n_a, q.n_b, q.constant)) {
            Some((i, m)) => ((i.low, i.high), m),
            None => ((f64::NAN, f64::NAN), "none"),
        };
        let c = &q.contrast;
        w.write_record([
            c.question.clone(),
            c.family.clone(),
            c.kind.clone(),
            q.model.clone(),
            q.readout.name().to_string(),
            q.validity.name().to_string(),
            c.instrument.clone(),
            c.subscale.clone(),
            c.a.clone(),
            c.b.clone(),
            q.n_a.to_string(),
            q.n_b.to_string(),
            num(q.mean_a),
            num(q.mean_b),
            num(q.difference.estimate),
            num(ci.0),
            num(ci.1),
            method.to_string(),
            num(q.g.g),
            num(q.g.ci.low),
            num(q.g.ci.high),
            num(q.welch.t),
            num(q.welch.df),
            num(q.welch.p),
            num(q.p_holm),
            num(q.mde_d),
            q.repetitions_needed.map(num).unwrap_or_else(|| "NA".into()),
            seeds.to_string(),
            test_name(q.constant).to_string(),
            q.paired.map_or("NA".into(), |t| t.n.to_string()),
            num(q.paired.map_or(f64::NAN, |t| t.mean_difference)),
            num(q.paired.map_or(f64::NAN, |t| t.t)),
            num(q.paired.map_or(f64::NAN, |t| t.df)),
            num(q.paired.map_or(f64::NAN, |t| t.p)),
        ])
        .map_err(|e| csv_err(&path, e))?;
    }
    w.flush().map_err(|e| csv_err(&path, e))
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

/// All tidy tables of an analysis.
pub fn tidy_tables(a: &Analysis) -> Vec<Tidy> {
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
                ("ci95_percentile_low", ci_bounds(&c.ci, c.describe.n)[0]),
                ("ci95_percentile_high", ci_bounds(&c.ci, c.describe.n)[1]),
                ("ci95_bca_low", ci_bounds(&c.ci, c.describe.n)[2]),
                ("ci95_bca_high", ci_bounds(&c.ci, c.describe.n)[3]),
            ],
        );
    }
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
            ]
            .concat(),
        );
    }
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
    let mut valence = Tidy::new(
        "negativity_bias",
        &["model", "scorer", "condition", "reference"],
    );
    for v in &a.valence {
        valence.push(
            vec![
                v.model.clone(),
                v.scorer.clone(),
                v.condition.clone(),
                String::new(),
            ],
            &[
                ("n", v.describe.n as f64),
                ("mean", v.describe.mean),
                ("sd", v.describe.sd),
                ("median", v.describe.median),
                ("ci95_bca_low", ci_bounds(&v.ci, v.describe.n)[2]),
                ("ci95_bca_high", ci_bounds(&v.ci, v.describe.n)[3]),
            ],
        );
    }
    for v in &a.valence_contrasts {
        valence.push(
            vec![v.model.clone(), v.scorer.clone(), v.a.clone(), v.b.clone()],
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
            ]
            .concat(),
        );
    }
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
    vec![
        descriptives,
        contrasts,
        baseline,
        valence,
        judge,
        agreement,
        quality,
        position,
        variance,
    ]
}

/// `trials.csv`: one row per trial, every read-out flattened, lexicon and judge valence
/// added for completions.
pub fn write_trials_csv(path: &Path, data: &RunData) -> Result<()> {
    let mut w = csv::Writer::from_path(path).map_err(|e| csv_err(path, e))?;
    w.write_record([
        "trial_id",
        "seed",
        "group_id",
        "model",
        "condition",
        "induction",
        "induction_variant",
        "regulation",
        "regulation_variant",
        "repetition",
        "kind",
        "instrument",
        "item",
        "stem",
        "label_style",
        "option_order",
        "label_binding",
        "prompt_sha256",
        "prompt_tokens",
        "reply",
        "replies",
        "generated_value",
        "generated_keyed",
        "option_labels",
        "option_probs",
        "option_mass",
        "option_expected",
        "option_keyed_expected",
        "option_argmax",
        "option_draw",
        "calibrated_probs",
        "calibrated_expected",
        "calibrated_keyed_expected",
        "completion",
        "lexicon_valence",
        "judge_valence",
        "judge_calibrated_valence",
        "continues_stem",
        "error",
        "total_ms",
    ])
    .map_err(|e| csv_err(path, e))?;
    let opt = |x: Option<f64>| x.map(num).unwrap_or_else(|| "NA".into());
    let s = |x: &Option<String>| x.clone().unwrap_or_default();
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
    for t in data.trials.iter().chain(&data.content_free) {
        let (kind, instrument, item, stem, label_style, order, binding) = match &t.question {
            Question::ContentFree {
                instrument,
                content,
                label_style,
                option_order,
                label_binding,
            } => (
                "content-free",
                instrument.clone(),
                content.clone(),
                String::new(),
                label_style.name().to_string(),
                order_text(option_order),
                binding_text(label_binding),
            ),
            Question::Item {
                instrument,
                item,
                label_style,
                option_order,
                label_binding,
            } => (
                "item",
                instrument.clone(),
                item.clone().unwrap_or_default(),
                String::new(),
                label_style.name().to_string(),
                order_text(option_order),
                binding_text(label_binding),
            ),
            Question::Completion { stem, .. } => (
                "completion",
                String::new(),
                String::new(),
                stem.clone(),
                String::new(),
                String::new(),
                String::new(),
            ),
        };
        let g = t.generate.as_ref();
        let c = t.choice.as_ref();
        let timing = t.timing.total_ms;
        w.write_record([
            t.trial_id.clone(),
            t.seed.to_string(),
            t.group_id.clone(),
            t.model.clone(),
            t.condition.clone(),
            s(&t.induction),
            s(&t.induction_variant),
            s(&t.regulation),
            s(&t.regulation_variant),
            t.repetition.to_string(),
            kind.to_string(),
            instrument,
            item,
            stem,
            label_style,
            order,
            binding,
            t.prompt_sha256.clone(),
            t.prompt_tokens.to_string(),
            g.and_then(|g| g.replies.last().cloned())
                .unwrap_or_default(),
            g.map(|g| g.replies.len().to_string()).unwrap_or_default(),
            opt(g.and_then(|g| g.value)),
            opt(g.and_then(|g| g.keyed)),
            c.map(|c| c.labels.join(" ")).unwrap_or_default(),
            c.map(|c| {
                c.probs
                    .iter()
                    .map(|p| num(*p))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
            opt(c.map(|c| c.mass)),
            opt(c.map(|c| c.expected)),
            opt(c.map(|c| c.keyed_expected)),
            opt(c.map(|c| c.argmax)),
            opt(c.map(|c| c.draw)),
            t.calibrated
                .as_ref()
                .map(|c| {
                    c.probs
                        .iter()
                        .map(|p| num(*p))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default(),
            opt(t.calibrated.as_ref().map(|c| c.expected)),
            opt(t.calibrated.as_ref().map(|c| c.keyed_expected)),
            s(&t.completion),
            opt(t.completion.as_ref().map(|x| lexicon::score(x).valence)),
            opt(recorded_judge_valence(t)),
            opt(t.judge_detail.as_ref().map(|d| d.calibrated_expected)),
            t.continues_stem
                .map(|b| b.to_string())
                .unwrap_or_else(|| "NA".into()),
            s(&t.error),
            opt(timing),
        ])
        .map_err(|e| csv_err(path, e))?;
    }
    w.flush().map_err(|e| csv_err(path, e))
}
