//! The report's figures, drawn with plotters: points with 95% CIs per condition for each
//! emotion, the regulation effects, and the negativity bias. Each figure is drawn once
//! by backend-generic code and written as SVG (inlined in report.html) and PNG.

use super::analysis::{Analysis, CellStats};
use super::scores::{ConditionInfo, Readout};
use crate::error::{Error, Result};
use crate::stats::{BootstrapCi, MIN_N_BCA, MIN_N_INTERVAL};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// A series: points (x index, estimate, low, high) with a name, colour and marker.
pub(super) struct Series {
    pub(super) name: String,
    pub(super) colour: RGBColor,
    pub(super) triangle: bool,
    pub(super) points: Vec<(usize, f64, f64, f64)>,
}

/// One panel: a title, categorical x labels, y label, and its series.
pub(super) struct Panel {
    pub(super) title: String,
    pub(super) x_labels: Vec<String>,
    pub(super) y_desc: String,
    pub(super) series: Vec<Series>,
    /// Draw a horizontal reference line at this y (0 for effect sizes).
    pub(super) reference: Option<f64>,
    /// The y axis spans at least this range (a scale's full range), so a difference
    /// is seen against what the scale allows, not zoomed to the data.
    pub(super) y_range: Option<(f64, f64)>,
}

/// A figure ready to draw: panels side by side, or one heat map.
pub struct Figure {
    pub id: String,
    pub title: String,
    pub caption: String,
    pub(super) panels: Vec<Panel>,
    pub(super) heat_map: Option<HeatMap>,
}

/// A grid of values (rows x columns) drawn as shaded cells with their values written in.
pub(super) struct HeatMap {
    pub(super) title: String,
    pub(super) rows: Vec<String>,
    pub(super) columns: Vec<String>,
    /// values[row][column]; NaN draws an empty cell.
    pub(super) values: Vec<Vec<f64>>,
}

const HEAT_MAP_SIDE: u32 = 560;

fn draw_heat_map<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, h: &HeatMap) -> Result<()> {
    let (nr, nc) = (h.rows.len().max(1), h.columns.len().max(1));
    let finite = h.values.iter().flatten().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let (rows, columns) = (h.rows.clone(), h.columns.clone());
    let row_label = move |y: &f64| {
        let i = y.floor() as usize;
        // Labels sit at cell centres (x.5); the mesh asks for every half step.
        if y.fract().abs() > 0.4 && i < rows.len() {
            rows[rows.len() - 1 - i].clone()
        } else {
            String::new()
        }
    };
    let column_label = move |x: &f64| {
        let i = x.floor() as usize;
        if x.fract().abs() > 0.4 && i < columns.len() {
            columns[i].clone()
        } else {
            String::new()
        }
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&h.title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..nc as f64, 0f64..nr as f64)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(2 * nc + 1)
        .y_labels(2 * nr + 1)
        .x_label_formatter(&column_label)
        .y_label_formatter(&row_label)
        .x_desc("rated emotion")
        .y_desc("induction")
        .axis_desc_style(("sans-serif", 13))
        .draw()
        .map_err(plot_err)?;
    for (r, row) in h.values.iter().enumerate() {
        let y = (nr - 1 - r) as f64;
        for (c, &v) in row.iter().enumerate() {
            let x = c as f64;
            // White (the lowest value) to red (the highest).
            let t = if v.is_finite() { (v - lo) / span } else { 0.0 };
            let shade = RGBColor(
                255,
                (255.0 * (1.0 - 0.8 * t)) as u8,
                (255.0 * (1.0 - 0.8 * t)) as u8,
            );
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x, y), (x + 1.0, y + 1.0)],
                    shade.filled(),
                )))
                .map_err(plot_err)?;
            let outline = if h.rows[r] == h.columns[c] {
                BLACK.stroke_width(3)
            } else {
                BLACK.mix(0.2).stroke_width(1)
            };
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x, y), (x + 1.0, y + 1.0)],
                    outline,
                )))
                .map_err(plot_err)?;
            if v.is_finite() {
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!("{v:.0}"),
                        (x + 0.35, y + 0.6),
                        ("sans-serif", 13),
                    )))
                    .map_err(plot_err)?;
            }
        }
    }
    Ok(())
}

pub(super) const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];
const PANEL_WIDTH: u32 = 640;
const HEIGHT: u32 = 400;

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Report(format!("drawing a figure: {e}"))
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Panel) -> Result<()> {
    let k = p.x_labels.len().max(1);
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for s in &p.series {
        for &(_, y, l, h) in &s.points {
            for v in [y, l, h].into_iter().filter(|v| v.is_finite()) {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
    }
    if let Some(r) = p.reference {
        lo = lo.min(r);
        hi = hi.max(r);
    }
    if let Some((a, b)) = p.y_range {
        lo = lo.min(a);
        hi = hi.max(b);
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let labels = p.x_labels.clone();
    let formatter = move |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
            labels[i as usize].clone()
        } else {
            String::new()
        }
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..(k as f64 - 0.5), (lo - pad)..(hi + pad))
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(k)
        .x_label_formatter(&formatter)
        .x_label_style(("sans-serif", 11))
        .y_desc(p.y_desc.as_str())
        .axis_desc_style(("sans-serif", 13))
        .draw()
        .map_err(plot_err)?;
    if let Some(r) = p.reference {
        chart
            .draw_series(LineSeries::new(
                [(-0.5, r), (k as f64 - 0.5, r)],
                BLACK.mix(0.4),
            ))
            .map_err(plot_err)?;
    }
    let n = p.series.len() as f64;
    for (si, s) in p.series.iter().enumerate() {
        let offset = (si as f64 - (n - 1.0) / 2.0) * (0.6 / n.max(1.0));
        let colour = s.colour;
        let pts: Vec<(f64, f64, f64, f64)> = s
            .points
            .iter()
            .filter(|q| q.1.is_finite())
            .map(|&(x, y, l, h)| (x as f64 + offset, y, l, h))
            .collect();
        chart
            .draw_series(
                pts.iter()
                    .filter(|q| q.2.is_finite() && q.3.is_finite())
                    .map(|&(x, y, l, h)| {
                        ErrorBar::new_vertical(x, l, y, h, colour.stroke_width(2), 8)
                    }),
            )
            .map_err(plot_err)?;
        let drawn = if s.triangle {
            chart
                .draw_series(
                    pts.iter()
                        .map(|&(x, y, _, _)| TriangleMarker::new((x, y), 6, colour.filled())),
                )
                .map_err(plot_err)?
        } else {
            chart
                .draw_series(
                    pts.iter()
                        .map(|&(x, y, _, _)| Circle::new((x, y), 5, colour.filled())),
                )
                .map_err(plot_err)?
        };
        let triangle = s.triangle;
        drawn
            .label(s.name.as_str())
            .legend(move |(x, y)| -> DynElement<'static, DB, (i32, i32)> {
                if triangle {
                    TriangleMarker::new((x + 6, y), 6, colour.filled()).into_dyn()
                } else {
                    Circle::new((x + 6, y), 5, colour.filled()).into_dyn()
                }
            });
    }
    if !p.series.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 12))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(plot_err)?;
    }
    Ok(())
}

fn draw_figure<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, f: &Figure) -> Result<()> {
    root.fill(&WHITE).map_err(plot_err)?;
    if let Some(h) = &f.heat_map {
        draw_heat_map(&root, h)?;
        return root.present().map_err(plot_err);
    }
    let areas = root.split_evenly((1, f.panels.len().max(1)));
    for (area, panel) in areas.iter().zip(&f.panels) {
        draw_panel(area, panel)?;
    }
    root.present().map_err(plot_err)
}

impl Figure {
    /// A figure of one heat map.
    pub(super) fn heat_map(id: String, title: String, caption: String, h: HeatMap) -> Figure {
        Figure {
            id,
            title,
            caption,
            panels: Vec::new(),
            heat_map: Some(h),
        }
    }

    fn size(&self) -> (u32, u32) {
        if self.heat_map.is_some() {
            return (HEAT_MAP_SIDE + 120, HEAT_MAP_SIDE);
        }
        (PANEL_WIDTH * self.panels.len().max(1) as u32, HEIGHT)
    }

    pub fn svg(&self) -> Result<String> {
        let mut out = String::new();
        draw_figure(
            SVGBackend::with_string(&mut out, self.size()).into_drawing_area(),
            self,
        )?;
        Ok(out)
    }

    pub fn write_png(&self, path: &Path) -> Result<()> {
        draw_figure(
            BitMapBackend::new(path, self.size()).into_drawing_area(),
            self,
        )
    }
}

/// Registers a TrueType font for text layout (plotters needs one for SVG sizes too).
/// `AFFECTBENCH_FONT` names a .ttf; otherwise common system locations are tried.
pub fn register_font() -> Result<PathBuf> {
    static FONT: std::sync::OnceLock<std::result::Result<PathBuf, String>> =
        std::sync::OnceLock::new();
    FONT.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = std::env::var_os("AFFECTBENCH_FONT").map(PathBuf::from).into_iter().collect();
        candidates.extend(
            ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf", "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf", "/System/Library/Fonts/Supplemental/Arial.ttf", "C:\\Windows\\Fonts\\arial.ttf"]
                .map(PathBuf::from),
        );
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Ok(path);
                }
            }
        }
        Err("no TrueType font found for the figures: install one (Debian/Ubuntu: `apt-get install fonts-dejavu-core`) or set AFFECTBENCH_FONT=/path/to/font.ttf".to_string())
    })
    .clone()
    .map_err(Error::Report)
}

/// The x label of a condition in an emotion's figure.
fn short_label(c: &ConditionInfo, emotion: &str, all: &[&ConditionInfo]) -> String {
    if c.is_baseline() {
        return "baseline".into();
    }
    if c.is_neutral() {
        return "neutral text".into();
    }
    let base = match (&c.induction, &c.regulation) {
        (Some(e), None) if e == emotion => "induction".to_string(),
        (Some(e), Some(r)) if e == emotion => {
            let strategy = match r.split(':').next().unwrap_or(r) {
                // "neutral text" already names the neutral induction condition.
                "neutral-control" => "control text".to_string(),
                other => other.replace('-', " "),
            };
            let clash = all
                .iter()
                .filter(|o| {
                    o.induction == c.induction
                        && o.regulation.as_deref().map(|x| x.split(':').next())
                            == Some(r.split(':').next())
                })
                .count()
                > 1;
            format!("+ {}", if clash { r.replace('-', " ") } else { strategy })
        }
        _ => c.name.clone(),
    };
    if c.regulation_first {
        format!("{base} (regulation first)")
    } else {
        base
    }
}

fn readout_label(r: Readout) -> &'static str {
    match r {
        Readout::Probability => "option probabilities",
        Readout::Calibrated => "calibrated option probabilities",
        Readout::Generated => "generated answer",
    }
}

/// The conditions shown for an emotion: baseline, neutral, and those inducing it.
fn emotion_conditions<'a>(a: &'a Analysis, emotion: &str) -> Vec<&'a ConditionInfo> {
    a.conditions
        .iter()
        .filter(|c| {
            c.is_baseline()
                || c.is_neutral()
                || (c.steering.is_none() && c.induction.as_deref() == Some(emotion))
        })
        .collect()
}

/// The emotions with an induction in the design and a measure named after them.
pub fn induced_emotions(a: &Analysis) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in &a.conditions {
        if let Some(e) = &c.induction {
            if e != "neutral" && !out.contains(e) && a.cells.iter().any(|x| &x.emotion == e) {
                out.push(e.clone());
            }
        }
    }
    out
}

fn cell<'a>(
    a: &'a Analysis,
    model: &str,
    instrument: &str,
    emotion: &str,
    condition: &str,
    readout: Readout,
) -> Option<&'a CellStats> {
    a.cells.iter().find(|c| {
        c.model == model
            && c.instrument == instrument
            && c.emotion == emotion
            && c.condition == condition
            && c.readout == readout
    })
}

/// A plotted point: the estimate with the interval `BootstrapCi::shown` allows for `n`
/// observations (NaN bounds draw no bar).
fn point(x: usize, y: f64, n: usize, ci: &BootstrapCi) -> (usize, f64, f64, f64) {
    match ci.shown(n) {
        Some((i, _)) => (x, y, i.low, i.high),
        None => (x, y, f64::NAN, f64::NAN),
    }
}

/// One figure per induced emotion: a panel per instrument measuring it, conditions on
/// x, a series per model and read-out.
pub fn emotion_figures(a: &Analysis) -> Vec<Figure> {
    let mut figures = Vec::new();
    for emotion in induced_emotions(a) {
        let conds = emotion_conditions(a, &emotion);
        let mut instruments: Vec<&str> = Vec::new();
        for c in a.cells.iter().filter(|c| c.emotion == emotion) {
            if !instruments.contains(&c.instrument.as_str()) {
                instruments.push(&c.instrument);
            }
        }
        let panels = instruments
            .iter()
            .map(|ins| {
                let mut series = Vec::new();
                for (mi, model) in a.models.iter().enumerate() {
                    for readout in Readout::ALL {
                        let points: Vec<_> = conds
                            .iter()
                            .enumerate()
                            .filter_map(|(x, c)| {
                                cell(a, model, ins, &emotion, &c.name, readout)
                                    .map(|s| point(x, s.describe.mean, s.describe.n, &s.ci))
                            })
                            .collect();
                        if !points.is_empty() {
                            let ri = Readout::ALL.iter().position(|r| *r == readout).unwrap_or(0);
                            series.push(Series {
                                name: format!("{model}, {}", readout_label(readout)),
                                colour: COLOURS[(2 * mi + ri) % COLOURS.len()],
                                triangle: readout == Readout::Generated,
                                points,
                            });
                        }
                    }
                }
                Panel {
                    title: ins.to_string(),
                    x_labels: conds
                        .iter()
                        .map(|c| short_label(c, &emotion, &conds))
                        .collect(),
                    y_desc: format!("{emotion} score (mean, 95% CI)"),
                    series,
                    reference: None,
                    y_range: a
                        .scale_ranges
                        .get(&(ins.to_string(), emotion.clone()))
                        .copied(),
                }
            })
            .collect();
        figures.push(Figure {
            id: format!("emotion-{emotion}"),
            title: format!("{} after {emotion} induction", capitalise(&emotion)),
            caption: format!(
                "Mean {emotion} score per condition (one point per model and read-out; bars: 95% bootstrap CI over repetitions, BCa from n = {MIN_N_BCA}, percentile below, none below n = {MIN_N_INTERVAL}); the y axis spans the scale's full range. Circles: expected value of the option probabilities; triangles: the answer the model wrote (sampled)."
            ),
            panels,
            heat_map: None,
        });
    }
    figures
}

/// Regulation effects: Hedges' g of each regulated condition against the unregulated
/// induction, per emotion, on each emotion's first instrument and the probability read-out.
pub fn regulation_figure(a: &Analysis) -> Option<Figure> {
    let emotions = induced_emotions(a);
    let mut panels = Vec::new();
    for model in &a.models {
        let mut strategies: Vec<String> = Vec::new();
        for c in a
            .contrasts
            .iter()
            .filter(|c| c.family == "regulation" && &c.model == model)
        {
            let unregulated = a
                .conditions
                .iter()
                .any(|x| x.name == c.b && x.regulation.is_none());
            if unregulated && !strategies.contains(&c.a) {
                strategies.push(c.a.clone());
            }
        }
        let mut labels: Vec<String> = Vec::new();
        for c in &strategies {
            let info = a.conditions.iter().find(|x| &x.name == c);
            let label = info
                .and_then(|i| i.regulation.clone())
                .unwrap_or_else(|| c.clone());
            if !labels.contains(&label) {
                labels.push(label);
            }
        }
        let series = labels
            .iter()
            .enumerate()
            .map(|(si, label)| {
                let points = emotions
                    .iter()
                    .enumerate()
                    .filter_map(|(x, e)| {
                        let ins = a
                            .cells
                            .iter()
                            .find(|c| &c.emotion == e && &c.model == model)
                            .map(|c| c.instrument.clone())?;
                        a.contrasts
                            .iter()
                            .find(|c| {
                                c.family == "regulation"
                                    && &c.model == model
                                    && &c.emotion == e
                                    && c.instrument == ins
                                    && c.readout == Readout::Probability
                                    && a.conditions.iter().any(|x| {
                                        x.name == c.a && x.regulation.as_ref() == Some(label)
                                    })
                                    && a.conditions
                                        .iter()
                                        .any(|x| x.name == c.b && x.regulation.is_none())
                            })
                            .map(|c| (x, c.g.g, c.g.ci.low, c.g.ci.high))
                    })
                    .collect();
                Series {
                    name: label.clone(),
                    colour: COLOURS[si % COLOURS.len()],
                    triangle: false,
                    points,
                }
            })
            .collect();
        panels.push(Panel {
            title: model.clone(),
            x_labels: emotions.clone(),
            y_desc: "Hedges' g vs. induction alone (95% CI)".into(),
            series,
            reference: Some(0.0),
            y_range: None,
        });
    }
    if emotions.is_empty() || panels.iter().all(|p| p.series.is_empty()) {
        return None;
    }
    Some(Figure {
        id: "regulation".into(),
        title: "Regulation after induction".into(),
        caption: "Effect of each regulation text on the induced emotion, as Hedges' g against the same induction without regulation (negative: the text lowered the score). First instrument of each emotion (the VAS item where the study has one), option-probability read-out; bars: 95% CI of g.".into(),
        panels,
        heat_map: None,
    })
}

/// Negativity bias: mean completion valence per condition and model, one panel per scorer.
pub fn negativity_figure(a: &Analysis) -> Option<Figure> {
    let mut panels = Vec::new();
    for scorer in ["lexicon", "judge", "judge-calibrated"] {
        let mut conds: Vec<&str> = Vec::new();
        for c in a.conditions.iter().filter(|c| {
            a.valence
                .iter()
                .any(|v| v.condition == c.name && v.scorer == scorer)
        }) {
            conds.push(&c.name);
        }
        if conds.is_empty() {
            continue;
        }
        let series = a
            .models
            .iter()
            .enumerate()
            .map(|(mi, m)| Series {
                name: m.clone(),
                colour: COLOURS[mi % COLOURS.len()],
                triangle: false,
                points: conds
                    .iter()
                    .enumerate()
                    .filter_map(|(x, c)| {
                        a.valence
                            .iter()
                            .find(|v| &v.model == m && v.condition == *c && v.scorer == scorer)
                            .map(|v| point(x, v.describe.mean, v.describe.n, &v.ci))
                    })
                    .collect(),
            })
            .collect();
        let y_desc = if scorer == "lexicon" {
            "lexicon valence (-1..1)"
        } else {
            "judge valence: P(pos) - P(neg)"
        };
        panels.push(Panel {
            title: format!("{scorer} scorer"),
            x_labels: conds.iter().map(|s| s.to_string()).collect(),
            y_desc: y_desc.into(),
            series,
            reference: Some(0.0),
            y_range: None,
        });
    }
    if panels.is_empty() {
        return None;
    }
    Some(Figure {
        id: "negativity".into(),
        title: "Valence of sentence completions".into(),
        caption: "Mean valence of the completions per condition (bars: 95% BCa CI over completions). Lexicon: VADER lexicon scorer; judge: the same model rating each completion negative/neutral/positive in a fresh conversation (mean over the label orders asked); judge-calibrated: the judge with its answer for content-free texts divided out.".into(),
        panels,
        heat_map: None,
    })
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}
