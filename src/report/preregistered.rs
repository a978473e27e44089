//! A run against its preregistration (`run --prereg`): every aspect of the frozen plan
//! beside what the run did, each marked as preregistered or a deviation, for the
//! report's "Preregistration" section and tables/preregistration.csv.

use super::blocks::{table, Block, Section};
use super::load::RunData;
use crate::error::Result;
use crate::results::csv_table;
use crate::scenario::study::CONTENT_FREE;
use crate::study::prereg::{compare, Comparison};
use std::path::{Path, PathBuf};

/// Each preregistered run's comparisons.
pub fn comparisons(data: &RunData) -> Vec<(PathBuf, Vec<Comparison>)> {
    // The repetitions the trials reached (content-free prompts are not repetitions).
    let reached = data
        .trials
        .iter()
        .filter(|t| t.condition != CONTENT_FREE)
        .map(|t| t.repetition + 1)
        .max()
        .unwrap_or(0);
    data.preregistrations
        .iter()
        .filter_map(|(dir, p)| {
            let i = data.dirs.iter().position(|d| d == dir)?;
            let header = data.headers.get(i)?;
            Some((dir.clone(), compare(p, header, reached)))
        })
        .collect()
}

#[derive(serde::Serialize)]
struct Row<'a> {
    run: String,
    aspect: &'a str,
    preregistered: &'a str,
    this_run: &'a str,
    deviation: bool,
}

/// Writes preregistration.csv where a run kept a preregistration; the path written.
pub fn write_csv(dir: &Path, all: &[(PathBuf, Vec<Comparison>)]) -> Result<Option<PathBuf>> {
    if all.is_empty() {
        return Ok(None);
    }
    let path = dir.join("preregistration.csv");
    csv_table::write_rows(
        &path,
        all.iter().flat_map(|(run, cs)| {
            cs.iter().map(move |c| Row {
                run: run.display().to_string(),
                aspect: &c.aspect,
                preregistered: &c.preregistered,
                this_run: &c.run,
                deviation: c.deviation,
            })
        }),
    )?;
    Ok(Some(path))
}

/// The report's section: deviations first, then what went as planned.
pub fn section(all: &[(PathBuf, Vec<Comparison>)]) -> Option<Section> {
    if all.is_empty() {
        return None;
    }
    let mut blocks = Vec::new();
    for (run, cs) in all {
        let deviations = cs.iter().filter(|c| c.deviation).count();
        blocks.push(Block::Text(format!(
            "{}: {} of {} preregistered aspects deviate{}",
            run.display(),
            deviations,
            cs.len(),
            if deviations == 0 {
                ": the run is the preregistered study."
            } else {
                ". A confirmatory claim holds only where the plan was kept; report each \
                 deviation and why."
            }
        )));
        let mut rows: Vec<&Comparison> = cs.iter().collect();
        rows.sort_by_key(|c| !c.deviation);
        blocks.push(table(
            "The run against its preregistration (tables/preregistration.csv)",
            &["aspect", "preregistered", "this run", "status"],
            rows.into_iter()
                .map(|c| {
                    vec![
                        c.aspect.clone(),
                        c.preregistered.clone(),
                        c.run.clone(),
                        if c.deviation {
                            "DEVIATION".into()
                        } else {
                            "as preregistered".into()
                        },
                    ]
                })
                .collect(),
        ));
    }
    Some(Section {
        title: "Preregistration".into(),
        blocks,
    })
}
