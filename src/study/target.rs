//! What a run is of: the study file, the scenarios, the models, the output directory,
//! the seed, the repetitions and the shard. A new run takes them from its flags; a
//! resumed run reads them back from its own run.json and scenario snapshot, so that
//! `run --resume DIR` continues exactly the run that was started, whatever the flags.

use super::runner::resume_design;
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::results::read_header;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The design half of a run's configuration (the engine half is `EngineConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct RunTarget {
    pub study_path: PathBuf,
    /// The `scenarios/` directory; `None`: the study file's grandparent directory.
    pub scenarios_root: Option<PathBuf>,
    /// Registry names, or paths for models the registry does not know.
    pub models: Vec<String>,
    pub out_dir: PathBuf,
    /// `None`: the study file's seed.
    pub seed: Option<u64>,
    /// `None`: the study file's repetitions.
    pub repetitions: Option<usize>,
    pub shard: Option<(usize, usize)>,
    /// Where settings came from (`shard`: a flag or a scheduler's variable), recorded
    /// in run.json; a resume keeps the recorded ones.
    pub sources: BTreeMap<String, String>,
}

impl RunTarget {
    /// The run in `dir` as it was started: its snapshot of the study and scenario
    /// files, its models (a server by its spec; by registry name where the registry
    /// still knows the label, else by the path it recorded), its seed, repetitions and shard. `threads` is not
    /// carried over: it describes the machine, not the run.
    pub fn resume(dir: &Path, registry: &Registry) -> Result<RunTarget> {
        let header = read_header(dir).map_err(|e| {
            Error::Run(format!(
                "--resume {}: not a run directory ({e})",
                dir.display()
            ))
        })?;
        let models = header
            .models
            .iter()
            .map(|m| {
                // A server is reached by its spec, whatever its label says.
                if m.server.is_some() {
                    m.path.clone()
                } else if registry.get(&m.label).is_some() {
                    m.label.clone()
                } else {
                    m.path.clone()
                }
            })
            .collect();
        let shard = header
            .shard
            .as_deref()
            .map(crate::cluster::parse_shard)
            .transpose()
            .map_err(|e| Error::Run(format!("{}: run.json shard {e}", dir.display())))?;
        let sources = header
            .sources
            .clone()
            .into_iter()
            .filter(|(k, _)| k != "threads")
            .collect();
        let (study_path, scenarios_root) = resume_design(dir, &header);
        Ok(RunTarget {
            study_path,
            scenarios_root,
            models,
            out_dir: dir.to_path_buf(),
            seed: Some(header.seed),
            repetitions: Some(header.repetitions),
            shard,
            sources,
        })
    }
}
