//! The report's internal-states sections: the probes' accuracy over blocks (what
//! `affectbench probe` wrote into each run's `probes/`), the steering dose-response
//! (steered conditions' scale scores by strength alpha), and the three routes to a state
//! compared on one instrument: the text, the steering vector, the instruction.
//!
//! The dose-response trend is tested per repetition: each repetition (one system prompt,
//! the same conversation at every alpha) gives one least-squares slope of score on
//! alpha, and the slopes are tested against zero, so the unit is the conversation, not
//! the item or the alpha level.

use super::analysis::Analysis;
use super::blocks::{f, validity_mark, Block, Section, Table};
use super::load::RunData;
use super::plots::{Figure, Panel, Series, COLOURS};
use super::scores::{ConditionInfo, Readout};
use crate::error::Result;
use crate::measures::Verdict;
use crate::stats::{mean, one_sample_t};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One steered cell: a model's mean score on a (sub)scale at one alpha.
#[derive(Debug, Clone, Serialize)]
pub struct DoseCell {
    pub model: String,
    pub direction: String,
    pub instrument: String,
    pub subscale: String,
    pub readout: Readout,
    pub alpha: f64,
    pub n: usize,
    pub mean: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// The trend of a (sub)scale over alpha for one direction.
#[derive(Debug, Clone, Serialize)]
pub struct DoseTrend {
    pub model: String,
    pub direction: String,
    pub instrument: String,
    pub subscale: String,
    pub readout: Readout,
    pub alphas: usize,
    /// Repetitions with a score at two or more alphas (the unit of the test).
    pub repetitions: usize,
    /// Mean of the per-repetition least-squares slopes (score per unit alpha).
    pub slope: f64,
    pub t: f64,
    pub p: f64,
    /// Spearman's rank correlation of the cell means with alpha.
    pub rho_means: f64,
    /// Whether consecutive cell means all move in the slope's direction.
    pub monotonic: bool,
    /// The validity gate's verdict for the instrument and read-out.
    pub validity: Verdict,
}

/// A (sub)scale moved three ways: the text (induction minus neutral text), the steering
/// vector (highest alpha minus alpha 0) and the instruction (high minus low), each a
/// difference of cell means in scale points.
#[derive(Debug, Clone, Serialize)]
pub struct Routes {
    pub model: String,
    pub emotion: String,
    pub instrument: String,
    pub subscale: String,
    pub readout: Readout,
    pub text: Option<f64>,
    pub steering: Option<f64>,
    pub steering_alpha: Option<f64>,
    pub instructed: Option<f64>,
    pub validity: Verdict,
}

fn steered(a: &Analysis) -> BTreeMap<&str, (&str, f64)> {
    a.conditions
        .iter()
        .filter_map(|c: &ConditionInfo| {
            c.steering
                .as_ref()
                .map(|(d, alpha)| (c.name.as_str(), (d.as_str(), *alpha)))
        })
        .collect()
}

/// Every steered cell, ordered by model, direction, scale, read-out and alpha.
pub fn dose_cells(a: &Analysis) -> Vec<DoseCell> {
    let steered = steered(a);
    let mut out: Vec<DoseCell> = a
        .cells
        .iter()
        .filter_map(|c| {
            let (direction, alpha) = steered.get(c.condition.as_str())?;
            let ci = c.ci.shown(c.describe.n).map(|(i, _)| i);
            Some(DoseCell {
                model: c.model.clone(),
                direction: direction.to_string(),
                instrument: c.instrument.clone(),
                subscale: c.emotion.clone(),
                readout: c.readout,
                alpha: *alpha,
                n: c.describe.n,
                mean: c.describe.mean,
                ci_low: ci.map_or(f64::NAN, |i| i.low),
                ci_high: ci.map_or(f64::NAN, |i| i.high),
            })
        })
        .collect();
    // Read-outs by name, as the tables have always listed them.
    out.sort_by(|x, y| {
        (
            &x.model,
            &x.direction,
            &x.instrument,
            &x.subscale,
            x.readout.name(),
        )
            .cmp(&(
                &y.model,
                &y.direction,
                &y.instrument,
                &y.subscale,
                y.readout.name(),
            ))
            .then(x.alpha.total_cmp(&y.alpha))
    });
    out
}

fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        for k in i..=j {
            r[idx[k]] = (i + j) as f64 / 2.0;
        }
        i = j + 1;
    }
    r
}

/// The slope of least squares of y on x.
fn slope(x: &[f64], y: &[f64]) -> f64 {
    let (mx, my) = (mean(x), mean(y));
    let sxx: f64 = x.iter().map(|v| (v - mx).powi(2)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    sxy / sxx
}

/// The trend of every steered (sub)scale, per repetition as the module says.
pub fn dose_trends(a: &Analysis, cells: &[DoseCell]) -> Vec<DoseTrend> {
    let steered = steered(a);
    // (model, direction, instrument, subscale, readout) -> repetition -> (alpha, score)
    type Key = (String, String, String, String, Readout);
    /// (seed, repetition) -> the (alpha, score) points of that conversation.
    type ByRepetition = BTreeMap<(u64, usize), Vec<(f64, f64)>>;
    let mut by: BTreeMap<Key, ByRepetition> = BTreeMap::new();
    for s in &a.scores {
        let Some((direction, alpha)) = steered.get(s.condition.as_str()) else {
            continue;
        };
        by.entry((
            s.model.clone(),
            direction.to_string(),
            s.instrument.clone(),
            s.subscale.clone(),
            s.readout,
        ))
        .or_default()
        .entry((s.seed, s.repetition))
        .or_default()
        .push((*alpha, s.value));
    }
    by.into_iter()
        .map(
            |((model, direction, instrument, subscale, readout), reps)| {
                let slopes: Vec<f64> = reps
                    .values()
                    .filter(|pts| pts.len() >= 2)
                    .map(|pts| {
                        let (x, y): (Vec<f64>, Vec<f64>) = pts.iter().copied().unzip();
                        slope(&x, &y)
                    })
                    .filter(|s| s.is_finite())
                    .collect();
                let test = one_sample_t(&slopes, 0.0);
                let mine: Vec<&DoseCell> = cells
                    .iter()
                    .filter(|c| {
                        c.model == model
                            && c.direction == direction
                            && c.instrument == instrument
                            && c.subscale == subscale
                            && c.readout == readout
                    })
                    .collect();
                let alphas: Vec<f64> = mine.iter().map(|c| c.alpha).collect();
                let means: Vec<f64> = mine.iter().map(|c| c.mean).collect();
                let mean_slope = mean(&slopes);
                let monotonic = means.len() >= 2
                    && means
                        .windows(2)
                        .all(|w| (w[1] - w[0]) * mean_slope.signum() > 0.0);
                DoseTrend {
                    validity: a.verdict(&model, &instrument, readout),
                    model,
                    direction,
                    instrument,
                    subscale,
                    readout,
                    alphas: alphas.len(),
                    repetitions: slopes.len(),
                    slope: mean_slope,
                    t: test.t,
                    p: test.p,
                    rho_means: crate::stats::correlation_or_nan(&ranks(&alphas), &ranks(&means)),
                    monotonic,
                }
            },
        )
        .collect()
}

/// Text vs steering vs instruction on the subscale named after each steered direction.
pub fn routes(data: &RunData, a: &Analysis, cells: &[DoseCell]) -> Vec<Routes> {
    let control = data
        .headers
        .iter()
        .find_map(|h| h.study.positive_control.clone());
    let cell_mean = |model: &str, ins: &str, sub: &str, cond: &str, r: Readout| {
        a.cells
            .iter()
            .find(|c| {
                c.model == model
                    && c.instrument == ins
                    && c.emotion == sub
                    && c.condition == cond
                    && c.readout == r
            })
            .map(|c| c.describe.mean)
    };
    let neutral = a
        .conditions
        .iter()
        .find(|c| c.is_neutral())
        .map(|c| c.name.clone());
    // Ordered by the read-out's name, as the table has always listed them.
    let mut keys: BTreeSet<(String, String, String, String, &str, Readout)> = BTreeSet::new();
    for c in cells.iter().filter(|c| c.subscale == c.direction) {
        keys.insert((
            c.model.clone(),
            c.direction.clone(),
            c.instrument.clone(),
            c.subscale.clone(),
            c.readout.name(),
            c.readout,
        ));
    }
    keys.into_iter()
        .map(|(model, emotion, instrument, subscale, _, r)| {
            let induced = a
                .conditions
                .iter()
                .find(|c| {
                    c.steering.is_none()
                        && c.regulation.is_none()
                        && c.induction.as_deref() == Some(emotion.as_str())
                })
                .map(|c| c.name.clone());
            let text = match (&induced, &neutral) {
                (Some(i), Some(n)) => cell_mean(&model, &instrument, &subscale, i, r)
                    .zip(cell_mean(&model, &instrument, &subscale, n, r))
                    .map(|(x, y)| x - y),
                _ => None,
            };
            let mine: Vec<&DoseCell> = cells
                .iter()
                .filter(|c| {
                    c.model == model
                        && c.direction == emotion
                        && c.instrument == instrument
                        && c.subscale == subscale
                        && c.readout == r
                })
                .collect();
            let zero = mine.iter().find(|c| c.alpha == 0.0);
            let top = mine
                .iter()
                .filter(|c| c.alpha > 0.0)
                .max_by(|x, y| x.alpha.total_cmp(&y.alpha));
            let instructed = control.as_ref().and_then(|pc| {
                cell_mean(&model, &instrument, &subscale, &pc.high_condition, r)
                    .zip(cell_mean(
                        &model,
                        &instrument,
                        &subscale,
                        &pc.low_condition,
                        r,
                    ))
                    .map(|(h, l)| h - l)
            });
            Routes {
                validity: a.verdict(&model, &instrument, r),
                steering: zero.zip(top).map(|(z, t)| t.mean - z.mean),
                steering_alpha: top.map(|t| t.alpha),
                model,
                emotion,
                instrument,
                subscale,
                readout: r,
                text,
                instructed,
            }
        })
        .collect()
}

/// The figures: probe accuracy over blocks per model, and the dose-response per model
/// and direction.
pub fn figures(data: &RunData, cells: &[DoseCell]) -> Vec<Figure> {
    let mut out = Vec::new();
    let models: BTreeSet<&str> = data
        .probes
        .accuracy
        .iter()
        .map(|r| r.model.as_str())
        .collect();
    for model in models {
        let panels = ["answer", "prefix"]
            .iter()
            .map(|site| {
                let rows: Vec<_> = data
                    .probes
                    .accuracy
                    .iter()
                    .filter(|r| r.model == model && r.site == *site)
                    .collect();
                let blocks: BTreeSet<usize> = rows.iter().map(|r| r.block).collect();
                let blocks: Vec<usize> = blocks.into_iter().collect();
                let mean_of =
                    |kind: Option<&str>, pick: fn(&crate::results::probes::AccuracyRow) -> f64| {
                        blocks
                            .iter()
                            .enumerate()
                            .filter_map(|(i, b)| {
                                let v: Vec<f64> = rows
                                    .iter()
                                    .filter(|r| r.block == *b && kind.is_none_or(|k| r.kind == k))
                                    .map(|r| pick(r))
                                    .collect();
                                (!v.is_empty()).then(|| {
                                    let m = mean(&v);
                                    (i, m, f64::NAN, f64::NAN)
                                })
                            })
                            .collect::<Vec<_>>()
                    };
                let mut series = Vec::new();
                for (k, (kind, label)) in [
                    ("induction", "emotion vs neutral text"),
                    ("regulation", "regulated vs not"),
                    ("instructed", "instructed high vs low"),
                ]
                .into_iter()
                .enumerate()
                {
                    let points = mean_of(Some(kind), |r| r.accuracy);
                    if !points.is_empty() {
                        series.push(Series {
                            name: label.into(),
                            colour: COLOURS[k],
                            triangle: false,
                            points,
                        });
                    }
                }
                series.push(Series {
                    name: "length control".into(),
                    colour: COLOURS[4],
                    triangle: true,
                    points: mean_of(None, |r| r.control_accuracy),
                });
                series.push(Series {
                    name: "permutation null, 95th pct".into(),
                    colour: RGB_GREY,
                    triangle: true,
                    points: mean_of(None, |r| r.null_p95),
                });
                Panel {
                    title: match *site {
                        "answer" => "at the answer position".into(),
                        _ => "mean over the conversation".into(),
                    },
                    x_labels: blocks
                        .iter()
                        .map(|b| {
                            if b % 4 == 0 {
                                b.to_string()
                            } else {
                                String::new()
                            }
                        })
                        .collect(),
                    y_desc: "held-out accuracy (mean over tasks)".into(),
                    series,
                    reference: Some(0.5),
                    y_range: Some((0.0, 1.0)),
                }
            })
            .collect();
        out.push(Figure {
            id: format!("probes-{}", crate::results::states::file_stem(model)),
            title: format!("Linear probes of {model}'s residual stream, by block"),
            caption: "Held-out accuracy of L2 logistic probes (leave-one-induction-variant-out; averaged per conversation), mean over the tasks of each kind; block 0 is the token embeddings, so its accuracy is what the input text alone gives. The length control decodes whether the conversation is longer than the median; the grey triangles are the permutation null's 95th percentile. probes/probe_accuracy.csv has every task.".into(),
            panels,
            heat_map: None,
        });
    }
    let mut groups: BTreeMap<(String, String, &str), Vec<&DoseCell>> = BTreeMap::new();
    for c in cells {
        groups
            .entry((c.model.clone(), c.direction.clone(), c.readout.name()))
            .or_default()
            .push(c);
    }
    for ((model, direction, readout), cs) in groups {
        let mut alphas: Vec<f64> = cs.iter().map(|c| c.alpha).collect();
        alphas.sort_by(f64::total_cmp);
        alphas.dedup();
        let scales: BTreeSet<(String, String)> = cs
            .iter()
            .map(|c| (c.instrument.clone(), c.subscale.clone()))
            .collect();
        let panels = scales
            .iter()
            .filter(|(_, sub)| *sub == direction)
            .map(|(ins, sub)| Panel {
                title: format!("{ins} ({sub})"),
                x_labels: alphas.iter().map(|a| format!("{a:+}")).collect(),
                y_desc: format!("{sub} score (mean, 95% CI)"),
                series: vec![Series {
                    name: format!("steered along '{direction}'"),
                    colour: COLOURS[1],
                    triangle: false,
                    points: cs
                        .iter()
                        .filter(|c| &c.instrument == ins && &c.subscale == sub)
                        .map(|c| {
                            let i = alphas.iter().position(|a| *a == c.alpha).unwrap_or(0);
                            (i, c.mean, c.ci_low, c.ci_high)
                        })
                        .collect(),
                }],
                reference: None,
                y_range: None,
            })
            .collect::<Vec<_>>();
        if panels.is_empty() {
            continue;
        }
        out.push(Figure {
            id: format!(
                "steering-{}-{direction}-{readout}",
                crate::results::states::file_stem(&model)
            ),
            title: format!("{model}: steering along '{direction}' ({readout} read-out)"),
            caption: format!("Scale scores with the '{direction}' direction added to the residual stream at strength alpha (alpha 1 = the mean shift the {direction} text caused at the answer position), with no affective text in the conversation. Means over repetitions with 95% bootstrap CIs; tables/steering_dose_response.csv."),
            panels,
            heat_map: None,
        });
    }
    out
}

const RGB_GREY: plotters::style::RGBColor = plotters::style::RGBColor(120, 120, 120);

/// The sections, with figure indices from `fig`.
pub fn sections(
    data: &RunData,
    a: &Analysis,
    cells: &[DoseCell],
    fig: &dyn Fn(&str) -> Option<usize>,
) -> Vec<Section> {
    let mut out = Vec::new();
    if !data.probes.accuracy.is_empty() {
        let mut blocks = vec![Block::Text("Linear probes read the condition from the model's residual stream: for each pair of conditions, at every block, an L2 logistic regression on standardised states, trained on some induction texts and tested on a held-out text (so it cannot memorise a text), with accuracy averaged per conversation. Decoding shows that the states carry the difference between the texts; it does not show an emotion: the embedding block (0) and the length control show how much of it the input alone explains.".into())];
        let rows = data
            .probes
            .best
            .iter()
            .map(|b| {
                let at = |site: &str, block: usize| {
                    data.probes.accuracy.iter().find(|r| {
                        r.model == b.model && r.task == b.task && r.site == site && r.block == block
                    })
                };
                let best = at("answer", b.block);
                let embed = at("prefix", 0);
                let within = data
                    .probes
                    .self_report
                    .iter()
                    .find(|r| r.model == b.model && r.task == b.task && r.block == b.block)
                    .map_or(f64::NAN, |r| r.r_within_condition);
                vec![
                    b.model.clone(),
                    b.task.clone(),
                    best.map_or("".into(), |r| format!("{} vs {}", r.a, r.b)),
                    b.block.to_string(),
                    format!(
                        "{} [{}, {}]",
                        f(b.accuracy, 2),
                        best.map_or("–".into(), |r| f(r.ci_low, 2)),
                        best.map_or("–".into(), |r| f(r.ci_high, 2))
                    ),
                    best.map_or("–".into(), |r| f(r.null_p95, 2)),
                    f(b.p_max_over_blocks, 3),
                    embed.map_or("–".into(), |r| f(r.accuracy, 2)),
                    best.map_or("–".into(), |r| {
                        format!(
                            "{} (agrees {})",
                            f(r.control_accuracy, 2),
                            f(r.control_agreement, 2)
                        )
                    }),
                    format!("{} / {}", f(b.self_report_r, 2), f(within, 2)),
                    best.map_or("–".into(), |r| {
                        format!("{} ({} conv.)", r.samples, r.conversations)
                    }),
                ]
            })
            .collect();
        blocks.push(Block::Table(Table {
            caption: "Best block per task at the answer position. p: against the best block of each label permutation (so the choice of block is paid for). Embedding: the conversation-mean probe at block 0 (the text's tokens, no computation). Length control: accuracy of decoding the conversation's length, and how often length and condition labels agree (1 = they are the same split, so the control cannot tell them apart). Self-report r: the probe's out-of-fold score against the self-report, across trials / within condition.".into(),
            headers: ["model", "task", "conditions", "block", "accuracy [95% CI]", "null 95th pct", "p (max over blocks)", "embedding acc.", "length control", "self-report r", "trials"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            rows,
        }));
        for m in data
            .probes
            .best
            .iter()
            .map(|b| &b.model)
            .collect::<BTreeSet<_>>()
        {
            if let Some(i) = fig(&format!("probes-{}", crate::results::states::file_stem(m))) {
                blocks.push(Block::Figure(i));
            }
        }
        out.push(Section {
            title: "Internal states: probes".into(),
            blocks,
        });
    }
    if !cells.is_empty() {
        let trends = dose_trends(a, cells);
        let mut blocks = vec![Block::Text("Steered conditions hold no affective text: a direction (the mean difference of the residual stream between an induction and the neutral text, from `affectbench probe`) is added at one block with strength alpha. A self-report that rises with alpha follows the model's internal state; a flat one on a model whose instrument passes the instructed-state control is itself a finding. The slope is tested across repetitions (one conversation per system prompt, every alpha), so the unit is the conversation.".into())];
        blocks.push(Block::Table(Table {
            caption: "Dose-response per direction and scale: mean per-repetition slope (scale points per unit alpha), its t test over repetitions, Spearman's rho of the cell means with alpha, and whether the means move monotonically. Rows whose instrument fails the validity gate are not evidence.".into(),
            headers: ["model", "direction", "scale", "read-out", "alphas", "repetitions", "slope", "t", "p", "rho (means)", "monotonic", "validity"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            rows: trends
                .iter()
                .map(|t| {
                    vec![
                        t.model.clone(),
                        t.direction.clone(),
                        format!("{}/{}", t.instrument, t.subscale),
                        t.readout.name().into(),
                        t.alphas.to_string(),
                        t.repetitions.to_string(),
                        f(t.slope, 3),
                        f(t.t, 2),
                        f(t.p, 3),
                        f(t.rho_means, 2),
                        if t.monotonic { "yes" } else { "no" }.into(),
                        validity_mark(t.validity),
                    ]
                })
                .collect(),
        }));
        for fig_id in figures_ids(cells) {
            if let Some(i) = fig(&fig_id) {
                blocks.push(Block::Figure(i));
            }
        }
        let routes = routes(data, a, cells);
        if !routes.is_empty() {
            blocks.push(Block::Table(Table {
                caption: "Three routes to the same scale, each a difference of means in scale points: the text (induction minus neutral text), the steering vector (highest alpha minus alpha 0, no text) and the instruction (instructed high minus low).".into(),
                headers: ["model", "scale", "read-out", "text", "steering", "instructed", "validity"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                rows: routes
                    .iter()
                    .map(|r| {
                        let o = |v: Option<f64>| v.map_or("–".into(), |x| f(x, 2));
                        vec![
                            r.model.clone(),
                            format!("{}/{}", r.instrument, r.subscale),
                            r.readout.name().into(),
                            o(r.text),
                            match r.steering_alpha {
                                Some(al) => format!("{} (alpha {al:+})", o(r.steering)),
                                None => "–".into(),
                            },
                            o(r.instructed),
                            validity_mark(r.validity),
                        ]
                    })
                    .collect(),
            }));
        }
        out.push(Section {
            title: "Internal states: steering".into(),
            blocks,
        });
    }
    out
}

fn figures_ids(cells: &[DoseCell]) -> Vec<String> {
    let ids: BTreeSet<String> = cells
        .iter()
        .map(|c| {
            format!(
                "steering-{}-{}-{}",
                crate::results::states::file_stem(&c.model),
                c.direction,
                c.readout.name()
            )
        })
        .collect();
    ids.into_iter().collect()
}

/// tables/steering_dose_response.csv, steering_trend.csv, affect_routes.csv,
/// probe_accuracy.csv and probe_self_report.csv (the runs' probes, concatenated); each
/// only where it has rows.
pub fn write_csvs(
    dir: &Path,
    data: &RunData,
    a: &Analysis,
    cells: &[DoseCell],
) -> Result<Vec<std::path::PathBuf>> {
    let mut written = Vec::new();
    let trends = dose_trends(a, cells);
    let routes = routes(data, a, cells);
    written.extend(write_rows(&dir.join("steering_dose_response.csv"), cells)?);
    written.extend(write_rows(&dir.join("steering_trend.csv"), &trends)?);
    written.extend(write_rows(&dir.join("affect_routes.csv"), &routes)?);
    written.extend(write_rows(
        &dir.join("probe_accuracy.csv"),
        &data.probes.accuracy,
    )?);
    written.extend(write_rows(
        &dir.join("probe_self_report.csv"),
        &data.probes.self_report,
    )?);
    Ok(written)
}

/// Writes `rows` through the one CSV writer, only where there are rows.
fn write_rows<T: Serialize>(path: &Path, rows: &[T]) -> Result<Option<std::path::PathBuf>> {
    if rows.is_empty() {
        return Ok(None);
    }
    crate::results::csv_table::write_rows(path, rows)?;
    Ok(Some(path.to_path_buf()))
}
