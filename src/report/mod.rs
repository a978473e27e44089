//! `affectbench report`: turns one or more run directories into what goes in a paper:
//! statistics (`analysis`, on `crate::stats`), tidy tables (`tables`, written through
//! `results::csv_table`), figures (`plots`) and a self-contained `report.html` plus
//! `summary.md` (`document`, built from the `blocks` vocabulary).
//!
//! Layers: `load` reads runs -> `scores` derives scale scores and completion valences
//! (`lexicon`), `bias` the content-free calibration rows, `judging` the judge's quality
//! and agreement -> `analysis` computes -> `tables`, `plots`, `document` write;
//! `internal_states` adds the probe and steering sections and tables.

pub mod analysis;
pub mod bias;
pub mod blocks;
pub mod confirmatory;
pub mod document;
pub mod internal_states;
pub mod judging;
pub mod known_answers;
pub mod lexicon;
pub mod load;
pub mod planning;
pub mod plots;
pub mod preregistered;
pub mod scores;
pub mod specificity;
pub mod stimuli;
pub mod tables;

use crate::error::{Error, IoContext, Result};
use std::path::{Path, PathBuf};

pub use analysis::ReportOptions;

/// What a report wrote.
pub struct ReportOutcome {
    pub out_dir: PathBuf,
    pub files: Vec<PathBuf>,
    pub notes: Vec<String>,
}

/// Builds the report of `runs` (merged) into `out_dir`: report.html, summary.md,
/// trials.csv, tables/*.csv and figures/*.svg + *.png.
/// The report's stop point: once a stop signal arrived, an error that says how to build
/// the report again (the run directory is complete; only the report was abandoned).
fn stop_if_asked(runs: &[PathBuf]) -> Result<()> {
    match crate::interrupt::requested() {
        None => Ok(()),
        Some(signal) => Err(Error::Interrupted {
            signal,
            signal_name: crate::interrupt::name(signal),
            resume: format!(
                "affectbench report {}",
                runs.iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        }),
    }
}

pub fn build_report(
    runs: &[PathBuf],
    out_dir: &Path,
    options: &ReportOptions,
) -> Result<ReportOutcome> {
    let data = load::load_runs(runs)?;
    if data.trials.is_empty() {
        return Err(Error::Report(format!(
            "{} holds no trial records yet",
            runs[0].display()
        )));
    }
    plots::register_font()?;
    stop_if_asked(runs)?;
    let a = analysis::analyse(&data, options);
    // Nothing is written once a stop was asked for: a report half from before and half
    // from after would be worse than none.
    stop_if_asked(runs)?;
    let tables_dir = out_dir.join("tables");
    let figures_dir = out_dir.join("figures");
    std::fs::create_dir_all(&tables_dir).with_path(&tables_dir)?;
    std::fs::create_dir_all(&figures_dir).with_path(&figures_dir)?;
    let mut files = Vec::new();

    let seeds = data
        .seeds()
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("+");
    for t in tables::tidy_tables(&a) {
        tables::write_tidy(&tables_dir, &t, &seeds)?;
        files.push(tables_dir.join(format!("{}.csv", t.name)));
    }
    tables::write_validity_csv(&tables_dir, &a, &seeds)?;
    files.push(tables_dir.join("validity.csv"));
    tables::write_questions_csv(&tables_dir, &a, &seeds)?;
    files.push(tables_dir.join("questions.csv"));
    files.extend(tables::write_deviations_csv(&tables_dir, &data)?);
    let preregistration = preregistered::comparisons(&data);
    files.extend(preregistered::write_csv(&tables_dir, &preregistration)?);
    files.extend(known_answers::write_csv(&tables_dir, &a.known_answers)?);
    let (specific, profile) = specificity::analyse(&a);
    files.extend(specificity::write_csvs(&tables_dir, &specific, &profile)?);
    tables::write_bias_csvs(&tables_dir, &data, &seeds)?;
    files.extend([
        tables_dir.join("calibration.csv"),
        tables_dir.join("label_style_effect.csv"),
    ]);
    let dose = internal_states::dose_cells(&a);
    files.extend(internal_states::write_csvs(&tables_dir, &data, &a, &dose)?);
    let trials_csv = out_dir.join("trials.csv");
    tables::write_trials_csv(&trials_csv, &data)?;
    files.push(trials_csv);

    let mut figures = plots::emotion_figures(&a);
    figures.extend(plots::regulation_figure(&a));
    figures.extend(plots::negativity_figure(&a));
    figures.extend(specificity::figures(&profile));
    figures.extend(internal_states::figures(&data, &dose));
    let mut svgs = Vec::new();
    for fig in &figures {
        stop_if_asked(runs)?;
        let svg = fig.svg()?;
        let svg_path = figures_dir.join(format!("{}.svg", fig.id));
        std::fs::write(&svg_path, &svg).with_path(&svg_path)?;
        let png_path = figures_dir.join(format!("{}.png", fig.id));
        fig.write_png(&png_path)?;
        files.extend([svg_path, png_path]);
        svgs.push(svg);
    }

    let study_ids: Vec<String> = data.headers.iter().map(|h| h.study.id.clone()).collect();
    let title = format!(
        "affectbench report: {} ({})",
        study_ids.join(" + "),
        a.models.join(", ")
    );
    stop_if_asked(runs)?;
    let sections = document::sections(&data, &a, &dose, &specific, &figures);
    let inline: Vec<(String, &plots::Figure)> = svgs.into_iter().zip(&figures).collect();
    let html_path = out_dir.join("report.html");
    std::fs::write(
        &html_path,
        document::render_html(&title, &sections, &inline),
    )
    .with_path(&html_path)?;
    let md_path = out_dir.join("summary.md");
    std::fs::write(
        &md_path,
        document::render_markdown(&title, &sections, &figures),
    )
    .with_path(&md_path)?;
    files.extend([html_path, md_path]);
    Ok(ReportOutcome {
        out_dir: out_dir.to_path_buf(),
        files,
        notes: data.notes,
    })
}
