//! Executing a planned study, resumably: the sequence of steps, each of them a function
//! of another module (`run_dir` for the directory protocol, `provenance` for the header,
//! `group` for shared prefixes and scheduling, `readouts` for each trial's answers,
//! `summary` for the terminal table).
//!
//! Order of work: group by group. A group's prefix is built once and the longest token
//! prefix common to all its trials (done or not) is computed once and forked per trial,
//! so a resumed or partial run computes every trial exactly as an uninterrupted one does.
//!
//! A failing trial is recorded with its error (a unit whose batched prefill fails records
//! the error for each of its trials); the run stops, with status `error`, when more than
//! 20% of at least 10 trials have failed or when anything outside a trial fails.

use super::answers::answer_unit;
use super::group::{fixed_plan_completions, lockstep_completions, work_units, GroupContext};
use super::internals::{model_for, prepare as prepare_internals, ModelInternals};
use super::judge_prefix::PrefixSharing;
use super::known_answers;
use super::plan::{count_trials, expand, GroupToRun, Plan, Trial, MAX_PLAN_TRIALS};
use super::progress::Progress;
use super::provenance::{
    model_provenance, new_header, server_engine_record, server_provenance, HeaderInputs,
};
use super::readouts::ConversationScorer;
use super::readouts::{
    base_record, prefill_unit, prefill_unit_fixed_plan, run_completion, run_item, JudgeBias,
    UnitRow,
};
use super::run_dir::RunDir;
use super::server_trials::{check_servers_can_run, execute_on_servers};
use super::summary::summarise;
use crate::engine::EngineConfig;
use crate::error::{Error, IoContext, Result};
use crate::interrupt;
use crate::model::Model;
use crate::registry::ModelRef;
use crate::results::states::StatesWriter;
use crate::results::trial::TrialSteering;
use crate::results::{read_trials, ModelProvenance, RunHeader, RunStatus, TrialRecord};
use crate::scenario::{Library, Study};
use crate::server::model::{Mode, ServerModel};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything a run needs, resolved by the caller.
pub struct RunConfig {
    pub study_path: PathBuf,
    /// The `scenarios/` directory; default: the study file's grandparent directory.
    pub scenarios_root: Option<PathBuf>,
    pub models: Vec<ModelRef>,
    pub out_dir: PathBuf,
    pub seed: Option<u64>,
    pub repetitions: Option<usize>,
    pub max_trials: Option<usize>,
    /// Run only the repetitions below this count now (content-free prompts always), the
    /// rest to follow with a resume: how `run --until-precision` grows a run by whole
    /// balanced blocks, so every arm shows every cell at each stop.
    pub repetitions_now: Option<usize>,
    /// Device, kernels, threads and batch size (results do not depend on the last two).
    pub engine: EngineConfig,
    /// A progress bar (for a terminal).
    pub show_progress: bool,
    /// Without a terminal (a batch job's log), a progress line this often.
    pub progress_every: std::time::Duration,
    /// Run only shard `index` of `count`: the groups whose position in the plan is
    /// index mod count (a group's trials stay together, so shared prefixes stay shared).
    pub shard: Option<(usize, usize)>,
    /// Where settings came from (`threads`, `shard`: a flag or a scheduler's variable),
    /// recorded in run.json.
    pub sources: std::collections::BTreeMap<String, String>,
    /// Steering directions files (`affectbench probe` writes them), one per steered
    /// model; a resume reads the copies the run made.
    pub directions: Vec<PathBuf>,
    /// How server models are asked (ignored for models loaded here).
    pub server: ServerOptions,
}

/// How a run asks server models.
#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    /// Most requests in flight at once (each is one trial's read-outs, in order).
    pub max_in_flight: usize,
    /// How long one request waits, and how often it is retried.
    pub patience: crate::server::client::Patience,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_in_flight: 8,
            patience: Default::default(),
        }
    }
}

pub struct RunOutcome {
    pub out_dir: PathBuf,
    pub trials_written: usize,
    pub trials_remaining: usize,
    pub summary: String,
}

fn run_err(message: impl Into<String>) -> Error {
    Error::Run(message.into())
}

/// The scenarios root for a study path: `X/studies/s.toml` -> `X`, else `scenarios`.
pub fn default_scenarios_root(study_path: &Path) -> PathBuf {
    let parent = study_path.parent().unwrap_or(Path::new("."));
    if parent.file_name().is_some_and(|n| n == "studies") {
        parent.parent().unwrap_or(Path::new(".")).to_path_buf()
    } else {
        PathBuf::from("scenarios")
    }
}

/// Crossed assignment balances its cells only over whole passes; say so before the run.
fn warn_if_unbalanced(study: &Study, lib: &crate::scenario::Library, repetitions: usize) {
    if study.assignment != crate::scenario::study::Assignment::Crossed {
        return;
    }
    let balanced = crate::study::plan::balanced_repetitions(study, lib);
    if !repetitions.is_multiple_of(balanced) {
        crate::say!(
            "warning: crossed assignment needs a multiple of {balanced} repetitions for every vignette x system prompt x option direction to appear equally often in every arm; with {repetitions} some cells appear once more than others (--repetitions {})",
            repetitions.div_ceil(balanced) * balanced
        );
    }
}

/// Runs (or resumes) the study into `cfg.out_dir`.
pub fn run_study(cfg: &RunConfig) -> Result<RunOutcome> {
    let (study, lib) = load_design(cfg)?;
    let repetitions = cfg.repetitions.unwrap_or(study.repetitions);
    let (backends, mut provenance) = load_models(cfg, &study)?;
    let labels = backends.labels();
    let planned = count_trials(&study, &lib, labels.len(), repetitions);
    if planned > MAX_PLAN_TRIALS {
        return Err(run_err(format!(
            "the plan has {planned} trials, more than {MAX_PLAN_TRIALS} in one run; use fewer repetitions per run (replications with other seeds merge in the report)"
        )));
    }
    stop_before_starting(&cfg.out_dir)?;
    let plan = expand(&study, &lib, &labels, repetitions);
    stop_before_starting(&cfg.out_dir)?;
    warn_if_unbalanced(&study, &lib, repetitions);

    let mut dir = RunDir::open(&cfg.out_dir)?;
    let previous = dir.existing_header()?;
    let no_models = Vec::new();
    let models = match &backends {
        Backends::Local(models) => models,
        Backends::Servers(_) => &no_models,
    };
    let internals = prepare_internals(
        &study,
        models,
        &mut provenance,
        &cfg.out_dir,
        &cfg.directions,
        previous.as_ref(),
    )?;
    if cfg.engine.fixed_plan() && internals.iter().any(|i| i.capture.is_some()) {
        return Err(run_err(format!(
            "this study captures internal states ([capture]), which runs on the packed CPU path only; run it with --device cpu{}",
            if cfg.engine.force_fixed_plan { " and without --batching fixed-plan" } else { "" }
        )));
    }
    let mut header = new_header(HeaderInputs {
        study_path: &cfg.study_path,
        study: &study,
        lib: &lib,
        models: provenance,
        repetitions,
        engine: match &backends {
            Backends::Local(models) => cfg.engine.record(models),
            Backends::Servers(servers) => server_engine_record(cfg.server.max_in_flight, servers),
        },
        trials_planned: plan.trials.len(),
        shard: cfg.shard,
    });
    header.sources = cfg.sources.clone();
    match previous {
        Some(old) => {
            check_resumable(&old, &header, &cfg.out_dir)?;
            // The same files by hash: keep the provenance as first recorded (paths
            // included), whichever copy this process read them from.
            header.started = old.started;
            header.study_path = old.study_path;
            header.scenario_files = old.scenario_files;
            header.snapshot = old.snapshot;
        }
        None => {
            dir.refuse_foreign_records()?;
            header.snapshot = Some(snapshot_scenarios(
                &cfg.out_dir,
                &cfg.study_path,
                &lib,
                &header,
            )?)
        }
    }
    stop_before_starting(&cfg.out_dir)?;
    let done = dir.finished_trials(study.seed)?;
    let in_shard = |t: &&Trial| {
        cfg.shard
            .is_none_or(|(index, count)| t.group % count == index)
    };
    let shard_trials = plan.trials.iter().filter(in_shard).count();
    let shard_done = plan
        .trials
        .iter()
        .filter(in_shard)
        .filter(|t| done.contains(&t.id))
        .count();
    let now = |t: &&Trial| {
        let g = &plan.groups[t.group];
        cfg.repetitions_now
            .is_none_or(|k| g.repetition < k || g.condition == crate::scenario::study::CONTENT_FREE)
    };
    let mut pending: Vec<&Trial> = plan
        .trials
        .iter()
        .filter(in_shard)
        .filter(now)
        .filter(|t| !done.contains(&t.id))
        .collect();
    if let Some(n) = cfg.max_trials {
        pending.truncate(n);
    }
    if let Backends::Servers(servers) = &backends {
        check_servers_can_run(&study, &lib, servers, &plan, &pending)?;
    }
    stop_before_starting(&cfg.out_dir)?;
    dir.write_header(&header)?;
    dir.mark_interrupted_on_forced_exit(&header);

    let mut progress = Progress::new(cfg.show_progress, cfg.progress_every, pending.len());
    for (m, i) in models.iter().zip(&internals) {
        if let Some(c) = &i.capture {
            let items = pending
                .iter()
                .filter(|t| t.question.is_item() && plan.groups[t.group].model == m.info.label)
                .count();
            progress.note(&format!(
                "capture: {} blocks x {} values x 2 sites, f16: {:.1} KB per item trial, {:.1} MB for the {items} item trials to run ({})",
                c.blocks.len(),
                c.d_model,
                c.record_bytes() as f64 / 1e3,
                (c.record_bytes() * items) as f64 / 1e6,
                c.states_file
            ));
        }
    }
    if let Backends::Servers(servers) = &backends {
        for s in servers {
            progress.note(&format!(
                "{}: {} (at most {} requests in flight)",
                s.label,
                s.record.describe(),
                cfg.server.max_in_flight
            ));
        }
    }
    if cfg.engine.fixed_plan() {
        for m in models {
            let c = &m.transformer.config;
            // Keys and values, f32, every layer: what one row's slot costs in a unit's grid.
            let per_slot = c.n_layer * c.n_kv_head * c.head_dim * 2 * 4;
            let rows = cfg.engine.batch_size;
            progress.note(&format!(
                "{}: fixed-plan units of up to {rows} rows ({}); their key/value grid takes {:.1} KB per row per position, {:.0} MB for {rows} rows of 256 positions",
                m.info.label,
                cfg.engine.guarantee().name(),
                per_slot as f64 / 1e3,
                (per_slot * rows * 256) as f64 / 1e6
            ));
        }
    }
    let mut tally = Tally::default();
    // A panic anywhere in the engine must still leave run.json saying what happened.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &backends {
        Backends::Local(models) => execute(
            &study,
            &lib,
            models,
            &internals,
            &plan,
            &pending,
            Batching {
                size: cfg.engine.batch_size,
                fixed_plan: cfg.engine.fixed_plan(),
            },
            &mut dir,
            &mut progress,
            &mut tally,
        ),
        Backends::Servers(servers) => execute_on_servers(
            &study,
            &lib,
            servers,
            &plan,
            &pending,
            cfg.server.max_in_flight,
            &mut dir,
            &mut progress,
            &mut tally,
        ),
    }))
    .unwrap_or_else(|payload| {
        Err(run_err(format!(
            "internal error (a panic): {}",
            panic_message(&payload)
        )))
    });
    // A pass cut short by a stop fails with its own error wherever it was: it is the
    // interruption that ended the run.
    let result = match (result, interrupt::requested()) {
        (Err(e), Some(signal)) if !matches!(e, Error::Interrupted { .. }) => {
            Err(Error::Interrupted {
                signal,
                signal_name: interrupt::name(signal),
                resume: format!("affectbench run --resume {}", dir.path.display()),
            })
        }
        (result, _) => result,
    };
    progress.finish();

    let remaining = shard_trials - shard_done - tally.written;
    let written = written_trials(&cfg.out_dir.join("trials.jsonl"), study.seed);
    header.ended = Some(crate::results::now_rfc3339());
    header.trials_failed = written.as_ref().ok().map(|t| failed_trials(t));
    let trials = written.unwrap_or_default();
    (header.status, header.error) = match &result {
        Ok(()) if remaining == 0 => (RunStatus::Success, None),
        Ok(()) => (RunStatus::Partial, None),
        Err(Error::Interrupted { signal, .. }) => (
            RunStatus::Interrupted,
            Some(format!("interrupted by {}", interrupt::name(*signal))),
        ),
        Err(Error::ServerFailed(why)) => (
            RunStatus::Interrupted,
            Some(format!("the server kept failing requests: {why}")),
        ),
        // Not the run's fault: a resume completes it once the server is back.
        Err(Error::ServerUnreachable(why)) => (
            RunStatus::Interrupted,
            Some(format!("the server stopped answering: {why}")),
        ),
        Err(e) => (RunStatus::Error, Some(e.to_string())),
    };
    header.error = header.error.map(|e| crate::secrets::redact(&e));
    interrupt::clear_forced_exit();
    dir.write_header(&header)?;
    if let Err(Error::ServerUnreachable(why)) = result {
        return Err(Error::ServerUnreachable(format!(
            "{why}; the run stopped there with every finished trial kept: once the server \
             is back, `affectbench run --resume {}` completes it",
            cfg.out_dir.display()
        )));
    }
    result?;
    // The judge's known-answer check, once the run is whole (a shard leaves it to
    // `affectbench judge` on the merged run).
    if remaining == 0 && cfg.shard.is_none() && cfg.max_trials.is_none() {
        for path in
            known_answers::check_run_judges(&cfg.out_dir, &study, &lib, &backends.scorers())?
        {
            progress.note(&format!("judge known-answer check: {}", path.display()));
        }
    }
    Ok(RunOutcome {
        out_dir: cfg.out_dir.clone(),
        trials_written: tally.written,
        trials_remaining: remaining,
        summary: summarise(
            &trials,
            &header.scoring,
            header.study.positive_control.as_ref(),
        ),
    })
}

/// A stop asked for while the run is still being prepared (models loading, a large plan
/// expanding) ends it there: nothing has been written to the directory yet, so the
/// same command starts it again (or `--resume` continues a run already begun).
fn stop_before_starting(out_dir: &Path) -> Result<()> {
    match interrupt::requested() {
        None => Ok(()),
        Some(signal) => Err(Error::Interrupted {
            signal,
            signal_name: interrupt::name(signal),
            resume: if out_dir.join("run.json").exists() {
                format!("affectbench run --resume {}", out_dir.display())
            } else {
                "the same `affectbench run` command (nothing was written yet)".to_string()
            },
        }),
    }
}

/// The records a run directory holds at its end. An unreadable file is an error, so that
/// run.json records its failed trials as unknown rather than as none.
fn written_trials(path: &Path, seed: u64) -> Result<Vec<TrialRecord>> {
    read_trials(path, seed).map(|f| f.records.into_iter().map(|(_, r)| r).collect())
}

fn failed_trials(trials: &[TrialRecord]) -> usize {
    trials.iter().filter(|t| t.error.is_some()).count()
}

/// The study and the scenario library it draws on, with the seed override applied.
fn load_design(cfg: &RunConfig) -> Result<(Study, Library)> {
    let root = cfg
        .scenarios_root
        .clone()
        .unwrap_or_else(|| default_scenarios_root(&cfg.study_path));
    let lib = Library::load(&root)?;
    let mut study = Study::load(&cfg.study_path, &lib)?;
    if let Some(s) = cfg.seed {
        study.seed = s;
    }
    Ok((study, lib))
}

/// The models a run computes with: all loaded here, or all servers.
enum Backends {
    Local(Vec<Model>),
    Servers(Vec<ServerModel>),
}

impl Backends {
    fn labels(&self) -> Vec<String> {
        match self {
            Backends::Local(models) => models.iter().map(|m| m.info.label.clone()).collect(),
            Backends::Servers(servers) => servers.iter().map(|s| s.label.clone()).collect(),
        }
    }

    /// Each judging model with its label, for the known-answer check.
    fn scorers(&self) -> Vec<(&str, &dyn ConversationScorer)> {
        match self {
            Backends::Local(models) => models
                .iter()
                .map(|m| (m.info.label.as_str(), m as &dyn ConversationScorer))
                .collect(),
            Backends::Servers(servers) => servers
                .iter()
                .map(|s| (s.label.as_str(), s as &dyn ConversationScorer))
                .collect(),
        }
    }
}

/// Every model with its provenance, its template given the study's thinking switch;
/// studies are conversations, so each needs a chat template.
fn load_models(cfg: &RunConfig, study: &Study) -> Result<(Backends, Vec<ModelProvenance>)> {
    let servers = cfg
        .models
        .iter()
        .filter(|r| matches!(r, ModelRef::Server(..)))
        .count();
    if servers > 0 {
        if servers < cfg.models.len() {
            return Err(run_err(
                "a run's models are all servers or all loaded here; run the two kinds to \
                 separate --out directories (`affectbench compare` sets their results side by side)",
            ));
        }
        return connect_servers(cfg, study);
    }
    let options = cfg.engine.load_options()?;
    let mut models = Vec::new();
    let mut provenance = Vec::new();
    for r in &cfg.models {
        let mut m = Model::load_ref(r, &options)?;
        if let Some(t) = m.chat_template.as_mut() {
            t.set_thinking(Some(study.thinking));
        }
        if m.chat_template.is_none() {
            return Err(run_err(format!(
                "{} has no chat template; studies are conversations: {}",
                m.info.label,
                r.missing_template_fix()
            )));
        }
        provenance.push(model_provenance(r, &m)?);
        models.push(m);
    }
    Ok((Backends::Local(models), provenance))
}

/// Connects to each server model (checking its id, key and log-probabilities) and
/// records what it offers. Studies that read internal states need the weights here.
fn connect_servers(cfg: &RunConfig, study: &Study) -> Result<(Backends, Vec<ModelProvenance>)> {
    if study.capture.is_some() || study.conditions.iter().any(|c| c.steering.is_some()) {
        return Err(run_err(
            "this study captures or steers internal states ([capture], [[steering]]), which \
             needs the weights loaded here; a server gives only text and log-probabilities: \
             run it on a .gguf file or a Hugging Face directory",
        ));
    }
    let mut servers = Vec::new();
    let mut provenance = Vec::new();
    for r in &cfg.models {
        let ModelRef::Server(endpoint, text_from) = r else {
            continue;
        };
        let mode = if endpoint.chat {
            Mode::Chat
        } else {
            Mode::Completions
        };
        let mut server = ServerModel::connect(
            endpoint.clone(),
            text_from.as_deref(),
            mode,
            cfg.server.patience,
        )?;
        server.chat_template.set_thinking(Some(study.thinking));
        provenance.push(server_provenance(&server));
        servers.push(server);
    }
    Ok((Backends::Servers(servers), provenance))
}

/// Copies every scenario file the run uses into `DIR/scenarios/` (the study file under
/// `studies/`, library files at their place below the scenarios root), so the run is
/// self-contained: `--resume` reads the design from there, from any working directory,
/// whatever happened to the originals since. Returns the snapshot's path relative to
/// the run directory.
fn snapshot_scenarios(
    out_dir: &Path,
    study_path: &Path,
    lib: &Library,
    header: &RunHeader,
) -> Result<String> {
    let root = out_dir.join(SNAPSHOT_DIR);
    for f in &header.scenario_files {
        let source = Path::new(&f.path);
        let relative = if source == study_path {
            Path::new("studies").join(source.file_name().unwrap_or_default())
        } else {
            source
                .strip_prefix(&lib.root)
                .map(Path::to_path_buf)
                .map_err(|_| {
                    run_err(format!(
                        "{} is not below the scenarios directory {}",
                        source.display(),
                        lib.root.display()
                    ))
                })?
        };
        let dest = root.join(relative);
        let parent = dest.parent().unwrap_or(&root);
        std::fs::create_dir_all(parent).with_path(parent)?;
        if dest.exists() {
            // `--out` at the folder that holds scenarios/ makes the snapshot the file
            // itself: copying a file onto itself truncates it to 0 bytes.
            if same_file(source, &dest)? {
                continue;
            }
            let (old, new) = (
                std::fs::read(&dest).with_path(&dest)?,
                std::fs::read(source).with_path(source)?,
            );
            if old == new {
                continue;
            }
            return Err(run_err(format!(
                "{} already holds {}, a different file from {}, which the run would \
                 copy there for its snapshot; choose another --out (a new run wants an \
                 empty or new folder)",
                out_dir.display(),
                dest.display(),
                source.display()
            )));
        }
        std::fs::copy(source, &dest).with_path(&dest)?;
    }
    Ok(SNAPSHOT_DIR.to_string())
}

/// Whether two paths name one file (the same device and inode, through any link).
fn same_file(a: &Path, b: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let (ma, mb) = (
        std::fs::metadata(a).with_path(a)?,
        std::fs::metadata(b).with_path(b)?,
    );
    Ok(ma.dev() == mb.dev() && ma.ino() == mb.ino())
}

/// Where a run directory keeps its copy of the scenario files.
pub const SNAPSHOT_DIR: &str = "scenarios";

/// The study file and scenarios root to resume the run in `dir` from: its snapshot,
/// or (runs made before snapshots) the paths it recorded.
pub fn resume_design(dir: &Path, header: &RunHeader) -> (PathBuf, Option<PathBuf>) {
    match &header.snapshot {
        Some(snapshot) => {
            let root = dir.join(snapshot);
            let file = Path::new(&header.study_path)
                .file_name()
                .unwrap_or_default()
                .to_owned();
            (root.join("studies").join(file), Some(root))
        }
        None => (PathBuf::from(&header.study_path), None),
    }
}

/// Refuses to continue a run in `dir` with settings that would change its results,
/// naming each difference.
fn check_resumable(old: &RunHeader, new: &RunHeader, dir: &Path) -> Result<()> {
    let mut differences = old.plan_differences(new);
    if old.shard != new.shard {
        differences.push(format!(
            "shard: {} vs {}",
            old.shard.as_deref().unwrap_or("none"),
            new.shard.as_deref().unwrap_or("none")
        ));
    }
    if differences.is_empty() {
        return Ok(());
    }
    Err(run_err(format!(
        "{} holds a run with a different study file, seed, repetitions, model, shard, engine or scenario files ({}); a changed design is a new run: choose another --out (`affectbench run --resume DIR` continues from the files the run recorded)",
        dir.display(),
        differences.join("; ")
    )))
}

/// Trials written and failed so far.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) written: usize,
    pub(super) failed: usize,
    /// Trials left unrecorded because the server kept failing their requests.
    pub(super) deferred: usize,
}

/// Appends a finished record, counts it, and stops the run where a stop was asked for
/// or too many trials failed.
pub(super) fn write_record(
    dir: &mut RunDir,
    progress: &mut Progress,
    tally: &mut Tally,
    mut record: TrialRecord,
) -> Result<()> {
    record.error = record.error.map(|e| crate::secrets::redact(&e));
    dir.append(&record)?;
    tally.written += 1;
    progress.inc();
    if let Some(signal) = interrupt::requested() {
        return Err(Error::Interrupted {
            signal,
            signal_name: interrupt::name(signal),
            resume: format!("affectbench run --resume {}", dir.path.display()),
        });
    }
    if tally.failed >= 10 && tally.failed * 5 > tally.written {
        return Err(run_err(format!(
            "{} of {} trials failed; stopping (see the error field in trials.jsonl)",
            tally.failed, tally.written
        )));
    }
    Ok(())
}

/// How trials share passes.
#[derive(Clone, Copy)]
struct Batching {
    /// Most rows in a unit.
    size: usize,
    /// Units are the plan's (all of a group's trials, done or not, in plan order), and a
    /// unit with any trial to run is computed whole; only its pending records are
    /// written. Otherwise units are made of the pending trials alone (the packed path,
    /// where batching changes no bits).
    fixed_plan: bool,
}

/// Runs the pending trials group by group, appending each record as it is made.
#[allow(clippy::too_many_arguments)]
fn execute(
    study: &Study,
    lib: &Library,
    models: &[Model],
    internals: &[ModelInternals],
    plan: &Plan,
    pending: &[&Trial],
    batching: Batching,
    dir: &mut RunDir,
    progress: &mut Progress,
    tally: &mut Tally,
) -> Result<()> {
    let pending_ids: HashSet<&str> = pending.iter().map(|t| t.id.as_str()).collect();
    let mut judge_bias = JudgeBias::new();
    let mut states: Vec<Option<StatesWriter>> = internals
        .iter()
        .map(|i| {
            i.capture
                .as_ref()
                .map(|c| StatesWriter::open(&dir.path, c))
                .transpose()
        })
        .collect::<Result<_>>()?;
    // The steered copy of the model the last group ran on, reused by the next group of
    // the same condition (a plan's groups come condition by condition).
    let mut steered: Option<(String, String, Option<Model>, Option<TrialSteering>)> = None;
    for GroupToRun {
        group,
        members,
        todo,
    } in plan.groups_to_run(&pending_ids)
    {
        progress.set_message(format!("{} rep {}", group.condition, group.repetition + 1));
        let mi = models
            .iter()
            .position(|m| m.info.label == group.model)
            .ok_or_else(|| run_err("internal: a planned model is not loaded"))?;
        let key = (group.model.clone(), group.condition.clone());
        if steered
            .as_ref()
            .is_none_or(|s| (&s.0, &s.1) != (&key.0, &key.1))
        {
            let condition = study.conditions.iter().find(|c| c.name == group.condition);
            let (m, record) = match condition {
                Some(c) => model_for(&models[mi], c, &internals[mi])?,
                None => (None, None),
            };
            steered = Some((key.0, key.1, m, record));
        }
        let (_, _, steered_model, steering) = steered.as_ref().expect("set above");
        let model = steered_model.as_ref().unwrap_or(&models[mi]);
        let capture: &[usize] = internals[mi]
            .capture
            .as_ref()
            .map_or(&[], |c| &c.blocks[..]);
        let ctx = GroupContext::build(
            study,
            lib,
            model,
            group,
            &members,
            capture,
            steering.clone(),
        )?;
        let judge_model = PrefixSharing::new(model);
        let batch_size = batching.size;
        let (completions, units) = if batching.fixed_plan {
            let todo_ids: HashSet<&str> = todo.iter().map(|t| t.id.as_str()).collect();
            let units: Vec<Vec<&Trial>> = work_units(&members, batch_size)
                .into_iter()
                .filter(|u| u.iter().any(|t| todo_ids.contains(t.id.as_str())))
                .collect();
            (
                fixed_plan_completions(study, model, &ctx, &members, &todo_ids, batch_size)?,
                units,
            )
        } else {
            (
                lockstep_completions(study, model, &ctx, &todo, batch_size)?,
                work_units(&todo, batch_size),
            )
        };
        for unit in units {
            let started = Instant::now();
            let records: Vec<Result<TrialRecord>> = if unit[0].question.is_item() {
                let prefilled = if batching.fixed_plan {
                    prefill_unit_fixed_plan(study, lib, model, &ctx, &unit)
                } else {
                    prefill_unit(study, lib, model, &ctx, &unit)
                };
                match prefilled {
                    Ok(mut rows) => {
                        let answers =
                            answer_unit(study, lib, model, &ctx, &unit, &mut rows, &pending_ids);
                        unit.iter()
                            .zip(rows)
                            .zip(answers)
                            .map(|((t, mut p), answer)| {
                                if !pending_ids.contains(t.id.as_str()) {
                                    return Err(run_err("written already; computed for its unit"));
                                }
                                if let Some(w) = states[mi].as_mut() {
                                    w.append(
                                        &t.id,
                                        &std::mem::take(&mut p.states),
                                        &ctx.prefix_states,
                                    )?;
                                }
                                run_item(
                                    study,
                                    lib,
                                    model,
                                    &ctx,
                                    base_record(study, group, t, &ctx),
                                    t,
                                    UnitRow {
                                        prefilled: p,
                                        answer,
                                    },
                                )
                            })
                            .collect()
                    }
                    Err(e) => unit
                        .iter()
                        .map(|_| Err(run_err(format!("the unit's batched prefill failed: {e}"))))
                        .collect(),
                }
            } else {
                unit.iter()
                    .map(|t| {
                        if !pending_ids.contains(t.id.as_str()) {
                            return Err(run_err("written already; decoded for its batch"));
                        }
                        run_completion(
                            study,
                            lib,
                            &judge_model,
                            base_record(study, group, t, &ctx),
                            t,
                            completions.get(&t.id),
                            &mut judge_bias,
                        )
                    })
                    .collect()
            };
            let per_trial_ms = started.elapsed().as_secs_f64() * 1e3 / unit.len() as f64;
            // A fixed-plan unit may hold trials already written (before a resume, or
            // outside --max-trials): they were computed only for their unit's sake.
            let (unit, records): (Vec<&Trial>, Vec<Result<TrialRecord>>) = unit
                .iter()
                .zip(records)
                .filter(|(t, _)| pending_ids.contains(t.id.as_str()))
                .map(|(t, r)| (*t, r))
                .unzip();
            // A stop asked for while the unit ran may have cut its passes short: its
            // records are not written (a resume computes them, to the same values).
            if let Some(signal) = interrupt::requested() {
                return Err(Error::Interrupted {
                    signal,
                    signal_name: interrupt::name(signal),
                    resume: format!("affectbench run --resume {}", dir.path.display()),
                });
            }
            for (trial, record) in unit.iter().zip(records) {
                let mut record = record.unwrap_or_else(|e| {
                    tally.failed += 1;
                    TrialRecord {
                        error: Some(e.to_string()),
                        ..base_record(study, group, trial, &ctx)
                    }
                });
                record.timing.total_ms = Some(per_trial_ms);
                write_record(dir, progress, tally, record)?;
            }
        }
    }
    Ok(())
}

/// Groups and trials of a study, without running it (`merge` checks shards against it; tests).
pub fn plan_for(
    study_path: &Path,
    scenarios_root: Option<&Path>,
    models: &[String],
    repetitions: Option<usize>,
) -> Result<(Study, Library, Plan)> {
    let root = scenarios_root
        .map(Path::to_path_buf)
        .unwrap_or_else(|| default_scenarios_root(study_path));
    let lib = Library::load(&root)?;
    let study = Study::load(study_path, &lib)?;
    let reps = repetitions.unwrap_or(study.repetitions);
    let plan = expand(&study, &lib, models, reps);
    Ok((study, lib, plan))
}

/// The text of a panic payload.
fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_trials_file_leaves_the_failed_count_unknown() {
        // Regression: the count was recorded as 0 when trials.jsonl could not be read.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trials.jsonl");
        assert_eq!(
            written_trials(&path, 1).map(|t| failed_trials(&t)).ok(),
            Some(0),
            "no file yet: no trials"
        );
        std::fs::create_dir(&path).unwrap(); // unreadable as a file, even for root
        assert_eq!(
            written_trials(&path, 1).map(|t| failed_trials(&t)).ok(),
            None
        );
        std::fs::remove_dir(&path).unwrap();
        std::fs::write(&path, "{not json\n").unwrap();
        assert!(
            written_trials(&path, 1).is_err(),
            "a corrupt file is not an empty one"
        );
    }
}
