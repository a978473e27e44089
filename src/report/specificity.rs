//! Emotion specificity: after an induction, is the induced emotion rated higher than the
//! other emotions the VAS asks, or does everything move together? Per model, read-out
//! and induction, the target emotion's rating minus the mean of the others' ratings,
//! computed per repetition (the eight VAS items of one repetition share its seed, system
//! prompt and stimuli) with a bootstrap CI over repetitions; and the induction x rated
//! emotion profile the heat map draws.

use super::analysis::Analysis;
use super::blocks::{estimate, f, table, Block, Section};
use super::plots::{Figure, HeatMap};
use super::scores::Readout;
use crate::error::Result;
use crate::results::csv_table::{self, Num};
use crate::rng::Stream;
use crate::stats::{bootstrap, mean, BootstrapCi};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The instrument that rates every emotion: one subscale per emotion.
pub const RATING_INSTRUMENT: &str = "vas";

/// The 95% level of the intervals.
const LEVEL: f64 = 0.95;

/// One induction's specificity for one model and read-out.
#[derive(Debug, Clone)]
pub struct Specificity {
    pub model: String,
    pub readout: Readout,
    /// The induction (its emotion) and the condition it was read in.
    pub induction: String,
    pub condition: String,
    /// Repetitions with the target and at least one other emotion rated.
    pub n: usize,
    pub target_mean: f64,
    pub others_mean: f64,
    /// Target minus the mean of the others, per repetition, averaged; with its CI.
    pub difference: BootstrapCi,
    /// The validity gate's verdict on the VAS for this model and read-out.
    pub validity: crate::measures::Verdict,
}

/// The mean rating of one emotion after one induction (a heat map cell).
#[derive(Debug, Clone)]
pub struct ProfileCell {
    pub model: String,
    pub readout: Readout,
    pub induction: String,
    pub rated: String,
    pub n: usize,
    pub mean: f64,
}

/// The specificity rows and profile cells of an analysis: inductions named after a VAS
/// subscale, read without regulation and in the study's own set-up.
pub fn analyse(a: &Analysis) -> (Vec<Specificity>, Vec<ProfileCell>) {
    // (model, readout, condition) -> (seed, repetition) -> emotion -> rating
    type Ratings = BTreeMap<(u64, usize), BTreeMap<String, f64>>;
    let mut by_cell: BTreeMap<(String, Readout, String), Ratings> = BTreeMap::new();
    let emotions: Vec<String> = {
        let mut v: Vec<String> = a
            .scores
            .iter()
            .filter(|s| s.instrument == RATING_INSTRUMENT)
            .map(|s| s.subscale.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let inductions: BTreeMap<&str, &str> = a
        .conditions
        .iter()
        .filter(|c| c.regulation.is_none() && c.steering.is_none() && !c.own_setup)
        .filter_map(|c| {
            let e = c.induction.as_deref()?;
            emotions
                .iter()
                .any(|x| x == e)
                .then_some((c.name.as_str(), e))
        })
        .collect();
    for s in &a.scores {
        if s.instrument != RATING_INSTRUMENT || !inductions.contains_key(s.condition.as_str()) {
            continue;
        }
        by_cell
            .entry((s.model.clone(), s.readout, s.condition.clone()))
            .or_default()
            .entry((s.seed, s.repetition))
            .or_default()
            .insert(s.subscale.clone(), s.value);
    }
    let mut rows = Vec::new();
    let mut profile = Vec::new();
    for ((model, readout, condition), reps) in &by_cell {
        let target = inductions[condition.as_str()];
        let mut diffs = Vec::new();
        let (mut targets, mut others) = (Vec::new(), Vec::new());
        for ratings in reps.values() {
            let Some(&t) = ratings.get(target) else {
                continue;
            };
            let rest: Vec<f64> = ratings
                .iter()
                .filter(|(e, _)| e.as_str() != target)
                .map(|(_, v)| *v)
                .collect();
            if rest.is_empty() {
                continue;
            }
            let o = mean(&rest);
            targets.push(t);
            others.push(o);
            diffs.push(t - o);
        }
        for rated in &emotions {
            let values: Vec<f64> = reps
                .values()
                .filter_map(|r| r.get(rated).copied())
                .collect();
            if !values.is_empty() {
                profile.push(ProfileCell {
                    model: model.clone(),
                    readout: *readout,
                    induction: target.to_string(),
                    rated: rated.clone(),
                    n: values.len(),
                    mean: mean(&values),
                });
            }
        }
        if diffs.is_empty() {
            continue;
        }
        let stream = format!("specificity/{model}/{}/{condition}", readout.name());
        let mut rng = Stream::Bootstrap { statistic: &stream }.rng(a.seed);
        let difference = bootstrap(
            &[&diffs],
            |s| mean(s[0]),
            a.options.resamples,
            LEVEL,
            &mut rng,
        );
        rows.push(Specificity {
            model: model.clone(),
            readout: *readout,
            induction: target.to_string(),
            condition: condition.clone(),
            n: diffs.len(),
            target_mean: mean(&targets),
            others_mean: mean(&others),
            difference,
            validity: a.verdict(model, RATING_INSTRUMENT, *readout),
        });
    }
    (rows, profile)
}

/// A row of `emotion_specificity.csv`.
#[derive(Serialize, Default)]
struct SpecificityRow {
    model: String,
    readout: &'static str,
    induction: String,
    condition: String,
    n_repetitions: usize,
    target_mean: Num,
    others_mean: Num,
    difference: Num,
    difference_ci95_low: Num,
    difference_ci95_high: Num,
    ci_method: &'static str,
    validity: &'static str,
}

/// A row of `emotion_profile.csv`.
#[derive(Serialize, Default)]
struct ProfileRow {
    model: String,
    readout: &'static str,
    induction: String,
    rated_emotion: String,
    n_repetitions: usize,
    mean_rating: Num,
}

/// Writes `emotion_specificity.csv` and `emotion_profile.csv` where the design has
/// inductions rated on the VAS; the paths written.
pub fn write_csvs(
    dir: &Path,
    rows: &[Specificity],
    profile: &[ProfileCell],
) -> Result<Vec<PathBuf>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let spec_path = dir.join("emotion_specificity.csv");
    csv_table::write_table(
        &spec_path,
        rows.iter().map(|r| {
            let (ci, method) = match r.difference.shown(r.n) {
                Some((i, m)) => ((i.low, i.high), m),
                None => ((f64::NAN, f64::NAN), "none"),
            };
            SpecificityRow {
                model: r.model.clone(),
                readout: r.readout.name(),
                induction: r.induction.clone(),
                condition: r.condition.clone(),
                n_repetitions: r.n,
                target_mean: Num(r.target_mean),
                others_mean: Num(r.others_mean),
                difference: Num(r.difference.estimate),
                difference_ci95_low: Num(ci.0),
                difference_ci95_high: Num(ci.1),
                ci_method: method,
                validity: r.validity.name(),
            }
        }),
        SpecificityRow::default(),
    )?;
    let profile_path = dir.join("emotion_profile.csv");
    csv_table::write_table(
        &profile_path,
        profile.iter().map(|c| ProfileRow {
            model: c.model.clone(),
            readout: c.readout.name(),
            induction: c.induction.clone(),
            rated_emotion: c.rated.clone(),
            n_repetitions: c.n,
            mean_rating: Num(c.mean),
        }),
        ProfileRow::default(),
    )?;
    Ok(vec![spec_path, profile_path])
}

/// The read-out the heat map shows: the first of `Readout::ALL` with cells.
fn shown_readout(profile: &[ProfileCell]) -> Option<Readout> {
    Readout::ALL
        .into_iter()
        .find(|r| profile.iter().any(|c| c.readout == *r))
}

/// One heat map per model: inductions as rows, rated emotions as columns, the mean VAS
/// rating in each cell, the induced emotion's cell outlined.
pub fn figures(profile: &[ProfileCell]) -> Vec<Figure> {
    let Some(readout) = shown_readout(profile) else {
        return Vec::new();
    };
    let mut models: Vec<&str> = profile.iter().map(|c| c.model.as_str()).collect();
    models.dedup();
    let mut out = Vec::new();
    for (i, model) in models.iter().enumerate() {
        let cells: Vec<&ProfileCell> = profile
            .iter()
            .filter(|c| c.model == *model && c.readout == readout)
            .collect();
        let mut rated: Vec<String> = cells.iter().map(|c| c.rated.clone()).collect();
        rated.sort();
        rated.dedup();
        // Rows in the columns' order, so the induced emotion lies on the diagonal.
        let rows: Vec<String> = rated
            .iter()
            .filter(|e| cells.iter().any(|c| &c.induction == *e))
            .cloned()
            .collect();
        let values = rows
            .iter()
            .map(|r| {
                rated
                    .iter()
                    .map(|e| {
                        cells
                            .iter()
                            .find(|c| &c.induction == r && &c.rated == e)
                            .map_or(f64::NAN, |c| c.mean)
                    })
                    .collect()
            })
            .collect();
        out.push(Figure::heat_map(
            format!("emotion-profile-{}", i + 1),
            format!("What each induction raised: {model}"),
            format!(
                "Mean VAS rating (0-100) of each emotion (columns) after each induction (rows), {} read-out, no regulation; the outlined cell of each row is the induced emotion; shading runs from the lowest cell (white) to the highest (red), so it shows order, not size. A specific induction raises its own column above the others (tables/emotion_profile.csv).",
                readout.name()
            ),
            HeatMap {
                title: format!("{model}, {}", readout.name()),
                rows,
                columns: rated,
                values,
            },
        ));
    }
    out
}

/// The report section: the specificity table and the heat maps.
pub fn section(
    rows: &[Specificity],
    fig: &dyn Fn(&str) -> Option<usize>,
    figure_ids: &[String],
) -> Option<Section> {
    if rows.is_empty() {
        return None;
    }
    let mut blocks = vec![
        Block::Text(
            "Is the induced emotion raised, or every negative emotion at once? Per repetition, \
             the induced emotion's VAS rating minus the mean of the other emotions' ratings, \
             averaged over repetitions (95% bootstrap CI over repetitions; the unit is the \
             repetition, whose VAS items share its seed, system prompt and stimuli). Near 0: \
             the induction moves all emotions together (more negative in general, not this \
             emotion). The state scales are asked only for the induced emotion, so only the \
             VAS can answer this (tables/emotion_specificity.csv). A row on a VAS read-out that \
             failed the validity gate answers nothing."
                .into(),
        ),
        table(
            "Emotion specificity: induced emotion minus the mean of the others (VAS, 0-100)",
            &[
                "model",
                "read-out",
                "validity",
                "induction",
                "n",
                "induced emotion",
                "others (mean)",
                "difference [95% CI]",
            ],
            rows.iter()
                .map(|r| {
                    vec![
                        r.model.clone(),
                        r.readout.name().into(),
                        super::blocks::validity_mark(r.validity),
                        r.induction.clone(),
                        r.n.to_string(),
                        f(r.target_mean, 1),
                        f(r.others_mean, 1),
                        estimate(&r.difference, r.n, 1),
                    ]
                })
                .collect(),
        ),
    ];
    blocks.extend(
        figure_ids
            .iter()
            .filter_map(|id| fig(id))
            .map(Block::Figure),
    );
    Some(Section {
        title: "Emotion specificity".into(),
        blocks,
    })
}
