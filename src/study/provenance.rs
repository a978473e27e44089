//! What a run records about where its inputs came from: each model's weights,
//! tokenizer and chat-template hashes, every scenario file with its hash, the study's
//! design and scoring rules, and the engine that ran. Built once into the run header.

use crate::cache;
use crate::chat::sha256_hex;
use crate::error::{Error, IoContext, Result};
use crate::model::Model;
use crate::registry::ModelRef;
use crate::results::{
    EngineRecord, InstrumentScoring, ModelProvenance, RunHeader, RunStatus, ScenarioFile,
    StudyRecord, SCHEMA,
};
use crate::scenario::{Library, Study};
use crate::server::model::ServerModel;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// A model's identity: weights, tokenizer and chat template by sha256.
pub fn model_provenance(model_ref: &ModelRef, m: &Model) -> Result<ModelProvenance> {
    let sha256 = match model_ref {
        ModelRef::Registry(e) => e.sha256.clone(),
        ModelRef::GgufFile(p) => cache::sha256_file(p, |_| {})?,
        ModelRef::SafetensorsDir(d) => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(d)
                .with_path(d)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            let mut all = String::new();
            for f in files {
                all.push_str(&cache::sha256_file(&f, |_| {})?);
            }
            sha256_hex(all.as_bytes())
        }
        // A server never loads as a `Model`; its record is `server_provenance`'s.
        ModelRef::Server(e, _) => {
            return Err(Error::Run(format!(
                "internal: {} is a server, not weights loaded here",
                e.describe()
            )))
        }
    };
    Ok(ModelProvenance {
        label: m.info.label.clone(),
        // Absolute, so the record (and a resume) means the same from any directory.
        path: std::fs::canonicalize(&m.info.path)
            .unwrap_or_else(|_| m.info.path.clone())
            .display()
            .to_string(),
        sha256,
        architecture: m.info.arch.name().to_string(),
        tokenizer_sha256: sha256_hex(
            m.tokenizer
                .tokenizer
                .to_string(false)
                .unwrap_or_default()
                .as_bytes(),
        ),
        chat_template_sha256: m.chat_template.as_ref().map(|t| t.hash()),
        template_example: m
            .render_chat(&[crate::chat::Message::user("{question}")])
            .ok(),
        thinking_switch: m
            .chat_template
            .as_ref()
            .is_some_and(|t| t.has_thinking_switch()),
        capture: None,
        directions: None,
        server: None,
    })
}

/// A server model's identity: the endpoint and served id (no weights to hash), the
/// tokenizer and template it was rendered with, and what the server offered.
pub fn server_provenance(s: &ServerModel) -> ModelProvenance {
    ModelProvenance {
        label: s.label.clone(),
        // The spec it was reached by (a registry name resolves to its full spec), so
        // `--resume` reaches it again without the registry file.
        path: s.client.endpoint.spec(),
        sha256: sha256_hex(s.client.endpoint.describe().as_bytes()),
        architecture: "server".to_string(),
        tokenizer_sha256: sha256_hex(
            s.tokenizer
                .tokenizer
                .to_string(false)
                .unwrap_or_default()
                .as_bytes(),
        ),
        chat_template_sha256: Some(s.chat_template.hash()),
        template_example: s.render(&[crate::chat::Message::user("{question}")]).ok(),
        thinking_switch: s.chat_template.has_thinking_switch(),
        capture: None,
        directions: None,
        server: Some(s.record.clone()),
    }
}

/// The engine record of a run on servers: no device or kernels of ours, the guarantee
/// `server` (no bit-for-bit promise), and what the servers offered.
pub fn server_engine_record(max_in_flight: usize, servers: &[ServerModel]) -> EngineRecord {
    EngineRecord {
        device: "server".to_string(),
        threads: max_in_flight,
        batch_size: None,
        weights: Some("server".to_string()),
        int8_kernel: Some("none".to_string()),
        ops: Some("server".to_string()),
        guarantee: Some("server".to_string()),
        accelerator: Some(
            servers
                .iter()
                .map(|s| format!("{}: {}", s.label, s.record.describe()))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

/// Everything that goes into a new run's header.
pub struct HeaderInputs<'a> {
    pub study_path: &'a Path,
    pub study: &'a Study,
    pub lib: &'a Library,
    pub models: Vec<ModelProvenance>,
    pub repetitions: usize,
    pub engine: EngineRecord,
    pub trials_planned: usize,
    pub shard: Option<(usize, usize)>,
}

/// The instruments the study's conditions ask.
fn used_instruments(study: &Study) -> HashSet<&str> {
    study
        .conditions
        .iter()
        .flat_map(|c| c.instruments.iter().map(String::as_str))
        .collect()
}

/// Every scenario file a run of `study` may read, with its hash: the study, every
/// induction, regulation and task of the library, and the instruments it asks.
pub fn scenario_files(study: &Study, lib: &Library) -> Vec<ScenarioFile> {
    let used = used_instruments(study);
    let mut files = vec![ScenarioFile::from(&study.info)];
    files.extend(lib.inductions.values().map(|x| ScenarioFile::from(&x.info)));
    files.extend(
        lib.regulations
            .values()
            .map(|x| ScenarioFile::from(&x.info)),
    );
    files.extend(
        lib.instruments
            .values()
            .filter(|x| used.contains(x.info.id.as_str()))
            .map(|x| ScenarioFile::from(&x.info)),
    );
    files.extend(lib.tasks.values().map(|x| ScenarioFile::from(&x.info)));
    files
}

/// The header of a run that is starting (status `running`).
pub fn new_header(inputs: HeaderInputs<'_>) -> RunHeader {
    let HeaderInputs {
        study_path,
        study,
        lib,
        models,
        repetitions,
        engine,
        trials_planned,
        shard,
    } = inputs;
    let files = scenario_files(study, lib);
    let used: HashSet<&str> = used_instruments(study);
    let instruments = || {
        lib.instruments
            .values()
            .filter(|x| used.contains(x.info.id.as_str()))
    };
    RunHeader {
        schema: SCHEMA,
        affectbench_version: env!("CARGO_PKG_VERSION").to_string(),
        git_revision: env!("AFFECTBENCH_GIT_REVISION").to_string(),
        status: RunStatus::Running,
        error: None,
        started: crate::results::now_rfc3339(),
        ended: None,
        study_path: study_path.display().to_string(),
        study: StudyRecord {
            id: study.info.id.clone(),
            version: study.info.version,
            sha256: study.info.sha256.clone(),
            description: study.description.clone(),
            conditions: study.conditions.clone(),
            temperature: study.temperature,
            positive_control: study.positive_control.clone(),
            contrasts: study.contrasts.clone(),
            primary_readout: study.primary_readout.clone(),
            system_prompt: study.system_prompt.clone(),
            system_prompts: study.system_prompt_variants.clone(),
            assignment: Some(study.assignment),
            acknowledgement: Some(study.acknowledgement.clone()),
            thinking: Some(study.thinking),
            deviations: study.deviations.clone(),
        },
        scenario_files: files,
        models,
        seed: study.seed,
        repetitions,
        engine,
        trials_planned,
        trials_failed: None,
        snapshot: None,
        shard: shard.map(|(i, n)| format!("{i}/{n}")),
        scoring: instruments()
            .map(InstrumentScoring::from_instrument)
            .collect(),
        sources: Default::default(),
        merged_from: Vec::new(),
        gaps: Vec::new(),
    }
}
