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

/// Refuses a recorded server spec that would send a key to a destination nobody
/// vouched for in this invocation (see `RunTarget::resume`).
fn check_key_destination(
    dir: &Path,
    spec: &str,
    registry: &Registry,
    send_key_to: &[String],
) -> Result<()> {
    let endpoint = crate::endpoint::Endpoint::parse(spec)?;
    if std::env::var(&endpoint.key_env).map_or(true, |k| k.is_empty()) {
        return Ok(()); // no key would be sent
    }
    let url = endpoint.base_url.trim_end_matches('/');
    let vouched = send_key_to.iter().any(|u| u.trim_end_matches('/') == url)
        || registry
            .servers
            .iter()
            .any(|(_, e)| e.base_url.trim_end_matches('/') == url && e.key_env == endpoint.key_env);
    if vouched {
        return Ok(());
    }
    Err(Error::Run(format!(
        "--resume {}: its run.json would send the key in ${} to {url}; run.json can be \
         edited by anyone who had the directory, so a key goes only where this command \
         says: if {url} is your server, resume with `affectbench run --resume {} \
         --send-key-to {url}` (or name it in a [[server]] entry of your --registry)",
        dir.display(),
        endpoint.key_env,
        dir.display()
    )))
}

impl RunTarget {
    /// The run in `dir` as it was started: its snapshot of the study and scenario
    /// files, its models (a server by its spec; by registry name where the registry
    /// still knows the label, else by the path it recorded), its seed, repetitions and shard. `threads` is not
    /// carried over: it describes the machine, not the run.
    ///
    /// run.json is a file anyone may have edited (a run directory shared with a
    /// colleague, or copied from elsewhere): a server spec in it that would send an API
    /// key is followed only where the key's destination is vouched for, by a
    /// `[[server]]` entry of the registry with the same URL and key variable or by
    /// `--send-key-to URL` (`send_key_to`); otherwise an edited spec could send any
    /// environment variable to any host.
    pub fn resume(dir: &Path, registry: &Registry, send_key_to: &[String]) -> Result<RunTarget> {
        let header = read_header(dir).map_err(|e| {
            Error::Run(format!(
                "--resume {}: not a run directory ({e})",
                dir.display()
            ))
        })?;
        for m in header.models.iter().filter(|m| m.server.is_some()) {
            check_key_destination(dir, &m.path, registry, send_key_to)?;
        }
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
