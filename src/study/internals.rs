//! A run's set-up for internal states: the blocks each model captures (`[capture]`),
//! the directions file each steered model reads (`[[steering]]`, `run --directions`),
//! copied into the run directory so a resume reads the same vectors, and the steered
//! model a group of a steered condition runs on.

use crate::chat::sha256_hex;
use crate::error::{Error, IoContext, Result};
use crate::model::Model;
use crate::results::directions::Directions;
use crate::results::header::DirectionsRecord;
use crate::results::states::{file_stem, CaptureRecord};
use crate::results::trial::TrialSteering;
use crate::results::{ModelProvenance, RunHeader};
use crate::scenario::{Condition, Study};
use std::path::{Path, PathBuf};

/// Where a run directory keeps its copies of the directions files.
pub const DIRECTIONS_DIR: &str = "directions";

/// One model's capture and directions.
pub struct ModelInternals {
    pub capture: Option<CaptureRecord>,
    pub directions: Option<Directions>,
}

fn run_err(m: String) -> Error {
    Error::Run(m)
}

/// Resolves capture and steering for every model, records them in `provenance`, and
/// copies each steered model's directions file into `out_dir`. A resume (`previous`
/// given) reads the copies it made; `given` are the `--directions` files.
pub fn prepare(
    study: &Study,
    models: &[Model],
    provenance: &mut [ModelProvenance],
    out_dir: &Path,
    given: &[PathBuf],
    previous: Option<&RunHeader>,
) -> Result<Vec<ModelInternals>> {
    let steered: Vec<&Condition> = study
        .conditions
        .iter()
        .filter(|c| c.steering.is_some())
        .collect();
    if steered.is_empty() && !given.is_empty() {
        return Err(run_err(
            "--directions was given but the study has no [[steering]] conditions".into(),
        ));
    }
    let mut out = Vec::new();
    for (m, prov) in models.iter().zip(provenance.iter_mut()) {
        let n_layer = m.transformer.config.n_layer;
        let capture = match &study.capture {
            Some(blocks) => Some(CaptureRecord::new(
                &m.info.label,
                blocks
                    .resolve(n_layer)
                    .map_err(|e| run_err(format!("{}: {e}", m.info.label)))?,
                m.transformer.config.d_model,
            )),
            None => None,
        };
        let directions = if steered.is_empty() {
            None
        } else {
            let recorded = previous
                .and_then(|h| h.models.iter().find(|p| p.label == prov.label))
                .and_then(|p| p.directions.clone());
            let (directions, record) = match recorded {
                Some(r) => (Directions::read(&out_dir.join(&r.file))?, r),
                None => adopt(&prov.label, &prov.sha256, given, out_dir)?,
            };
            if directions.model_sha256 != prov.sha256 {
                return Err(run_err(format!(
                    "{}: the directions in {} were made from weights with sha256 {}, not this model's {}",
                    prov.label, record.file, directions.model_sha256, prov.sha256
                )));
            }
            for c in &steered {
                let s = c.steering.as_ref().expect("filtered");
                let block = s
                    .site
                    .resolve(n_layer)
                    .map_err(|e| run_err(format!("{}: {e}", m.info.label)))?;
                directions.vector(&s.direction, block).map_err(|e| {
                    run_err(format!(
                        "condition '{}' on {}: {e} in {}",
                        c.name, m.info.label, record.source
                    ))
                })?;
            }
            prov.directions = Some(record);
            Some(directions)
        };
        prov.capture = capture.clone();
        out.push(ModelInternals {
            capture,
            directions,
        });
    }
    Ok(out)
}

/// The `--directions` file made from the weights `sha256`, copied into the run.
fn adopt(
    label: &str,
    sha256: &str,
    given: &[PathBuf],
    out_dir: &Path,
) -> Result<(Directions, DirectionsRecord)> {
    let mut seen = Vec::new();
    for path in given {
        let d = Directions::read(path)?;
        if d.model_sha256 == sha256 {
            let dir = out_dir.join(DIRECTIONS_DIR);
            std::fs::create_dir_all(&dir).with_path(&dir)?;
            let file = format!("{DIRECTIONS_DIR}/{}.safetensors", file_stem(label));
            let bytes = std::fs::read(path).with_path(path)?;
            let dest = out_dir.join(&file);
            std::fs::write(&dest, &bytes).with_path(&dest)?;
            let record = DirectionsRecord {
                file,
                sha256: sha256_hex(&bytes),
                source: std::fs::canonicalize(path)
                    .unwrap_or_else(|_| path.clone())
                    .display()
                    .to_string(),
            };
            return Ok((d, record));
        }
        seen.push(format!("{} ({})", path.display(), d.model));
    }
    Err(run_err(format!(
        "the study has steered conditions, but no --directions file was made from {label} (sha256 {sha256}){}; capture states with a [capture] study on this model and run `affectbench probe RUN_DIR`, which writes one",
        if seen.is_empty() {
            String::new()
        } else {
            format!(" (given: {})", seen.join(", "))
        }
    )))
}

/// The model a group of `condition` runs on, and its trials' steering record: the
/// model itself for unsteered conditions, a steered copy (sharing the weights)
/// otherwise.
pub fn model_for(
    model: &Model,
    condition: &Condition,
    internals: &ModelInternals,
) -> Result<(Option<Model>, Option<TrialSteering>)> {
    let (Some(s), Some(directions)) = (&condition.steering, &internals.directions) else {
        return Ok((None, None));
    };
    let block = s
        .site
        .resolve(model.transformer.config.n_layer)
        .map_err(run_err)?;
    let v: Vec<f32> = directions
        .vector(&s.direction, block)
        .map_err(run_err)?
        .iter()
        .map(|x| x * s.alpha as f32)
        .collect();
    // Alpha 0 runs the model itself: the same bits as an unsteered condition.
    let steered = if s.alpha == 0.0 {
        None
    } else {
        Some(Model {
            transformer: model.transformer.steered(&[(block, v)])?,
            ..model.clone()
        })
    };
    Ok((
        steered,
        Some(TrialSteering {
            direction: s.direction.clone(),
            block,
            alpha: s.alpha,
        }),
    ))
}
