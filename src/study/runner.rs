//! Executing a planned study, resumably.
//!
//! Order of work: group by group. A group's prefix is built once (generated protocol
//! replies included, each from its own seeded stream), every trial's full prompt is
//! rendered and tokenised, and the longest token prefix common to *all* the group's
//! trials (done or not) is computed once and forked per trial. Because that shared part
//! never depends on which trials are still pending, a resumed or partial run computes
//! every trial exactly as an uninterrupted one does.
//!
//! Records are appended to `trials.jsonl` and flushed one by one; `run.json` carries the
//! status (`running`, `success`, `error`). A failing trial is recorded with its error;
//! the run stops only when more than 20% of at least 10 trials have failed.

use super::choice::{normalise, option_logprobs, option_logprobs_rows};
use super::parse::{parse_label, parse_number};
use super::plan::{expand, Group, Plan, Question, Trial};
use super::prompt::{prefix_steps, question_text, reask_text, Step};
use super::record::{file_info_json, now_rfc3339, ChoiceReadout, GenerateReadout, InstrumentScoring, ModelProvenance, RunHeader, TrialRecord, SCHEMA};
use crate::cache;
use crate::chat::{sha256_hex, Message};
use crate::error::{Error, IoContext, Result};
use crate::model::{KvCache, LoadOptions, LogitsAt, Model};
use crate::registry::ModelRef;
use crate::generate::{decode, decode_lockstep, extend_rows};
use crate::sampling::{inverse_cdf, sequence_rng, Sampling, SamplingParams};
use crate::scenario::study::PerConversation;
use crate::scenario::{Library, Response, Study};
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
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
    pub load: LoadOptions,
    pub device_label: String,
    pub threads: usize,
    pub show_progress: bool,
    /// Most sequences decoded together in one lockstep batch (sampled repetitions of
    /// the same prompt). Results do not depend on it.
    pub batch_size: usize,
    /// Run only shard `index` of `count`: the groups whose position in the plan is
    /// index mod count (a group's trials stay together, so shared prefixes stay shared).
    /// Merge shard directories with `affectbench report DIR1 DIR2 ...`.
    pub shard: Option<(usize, usize)>,
}

/// The default lockstep batch cap.
pub const DEFAULT_BATCH_SIZE: usize = 32;

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

/// Reads `run.json` of an earlier run (for `--resume`).
pub fn read_header(dir: &Path) -> Result<RunHeader> {
    let path = dir.join("run.json");
    let text = std::fs::read_to_string(&path).with_path(&path)?;
    serde_json::from_str(&text).map_err(|e| Error::DataFile { path, line: e.line(), message: e.to_string() })
}

/// Trial ids already in `trials.jsonl`; a truncated or corrupt last line (a crash while
/// writing) is cut off so the file ends with a complete record.
pub fn finished_trials(dir: &Path) -> Result<HashSet<String>> {
    let path = dir.join("trials.jsonl");
    let Ok(bytes) = std::fs::read(&path) else { return Ok(HashSet::new()) };
    let mut done = HashSet::new();
    let mut good_end = 0usize;
    let mut start = 0usize;
    while start < bytes.len() {
        let Some(nl) = bytes[start..].iter().position(|&b| b == b'\n') else { break };
        let line = &bytes[start..start + nl];
        match serde_json::from_slice::<serde_json::Value>(line) {
            Ok(v) => {
                if let Some(id) = v.get("trial_id").and_then(|x| x.as_str()) {
                    done.insert(id.to_string());
                }
                good_end = start + nl + 1;
            }
            Err(_) => break,
        }
        start += nl + 1;
    }
    if good_end < bytes.len() {
        let f = std::fs::OpenOptions::new().write(true).open(&path).with_path(&path)?;
        f.set_len(good_end as u64).with_path(&path)?;
    }
    Ok(done)
}

fn write_header(dir: &Path, h: &RunHeader) -> Result<()> {
    let path = dir.join("run.json");
    let tmp = dir.join("run.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(h).expect("header serialises")).with_path(&tmp)?;
    std::fs::rename(&tmp, &path).with_path(&path)
}

fn provenance(model_ref: &ModelRef, m: &Model) -> Result<ModelProvenance> {
    let sha256 = match model_ref {
        ModelRef::Registry(e) => e.sha256.clone(),
        ModelRef::GgufFile(p) => cache::sha256_file(p, |_| {})?,
        ModelRef::SafetensorsDir(d) => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(d).with_path(d)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
            files.sort();
            let mut all = String::new();
            for f in files {
                all.push_str(&cache::sha256_file(&f, |_| {})?);
            }
            sha256_hex(all.as_bytes())
        }
    };
    Ok(ModelProvenance {
        label: m.info.label.clone(),
        path: m.info.path.display().to_string(),
        sha256,
        architecture: m.info.arch.name().to_string(),
        tokenizer_sha256: sha256_hex(m.tokenizer.tokenizer.to_string(false).unwrap_or_default().as_bytes()),
        chat_template_sha256: m.chat_template.as_ref().map(|t| t.hash()),
    })
}

/// Runs (or resumes) the study into `cfg.out_dir`.
pub fn run_study(cfg: &RunConfig) -> Result<RunOutcome> {
    let root = cfg.scenarios_root.clone().unwrap_or_else(|| default_scenarios_root(&cfg.study_path));
    let lib = Library::load(&root)?;
    let mut study = Study::load(&cfg.study_path, &lib)?;
    if let Some(s) = cfg.seed {
        study.seed = s;
    }
    let repetitions = cfg.repetitions.unwrap_or(study.repetitions);
    std::fs::create_dir_all(&cfg.out_dir).with_path(&cfg.out_dir)?;

    let mut models = Vec::new();
    let mut prov = Vec::new();
    for r in &cfg.models {
        let m = Model::load_ref(r, &cfg.load)?;
        if m.chat_template.is_none() {
            return Err(run_err(format!("{} has no chat template; studies are conversations (add chat_template to its registry entry)", m.info.label)));
        }
        prov.push(provenance(r, &m)?);
        models.push(m);
    }
    let labels: Vec<String> = models.iter().map(|m| m.info.label.clone()).collect();
    let plan = expand(&study, &lib, &labels, repetitions);

    let done = finished_trials(&cfg.out_dir)?;
    let in_shard = |group: usize| cfg.shard.is_none_or(|(index, count)| group % count == index);
    let shard_trials = plan.trials.iter().filter(|t| in_shard(t.group)).count();
    let shard_done = plan.trials.iter().filter(|t| in_shard(t.group) && done.contains(&t.id)).count();
    let mut pending: Vec<usize> = (0..plan.trials.len()).filter(|&i| in_shard(plan.trials[i].group) && !done.contains(&plan.trials[i].id)).collect();
    if let Some(n) = cfg.max_trials {
        pending.truncate(n);
    }
    let pending_set: HashSet<usize> = pending.iter().copied().collect();

    let mut files = vec![file_info_json(&study.info)];
    let used: HashSet<String> = study.conditions.iter().flat_map(|c| c.instruments.clone()).collect();
    files.extend(lib.inductions.values().map(|x| file_info_json(&x.info)));
    files.extend(lib.regulations.values().map(|x| file_info_json(&x.info)));
    files.extend(lib.instruments.values().filter(|x| used.contains(&x.info.id)).map(|x| file_info_json(&x.info)));
    files.extend(lib.tasks.values().map(|x| file_info_json(&x.info)));
    let mut header = RunHeader {
        schema: SCHEMA,
        affectbench_version: env!("CARGO_PKG_VERSION").to_string(),
        git_revision: env!("AFFECTBENCH_GIT_REVISION").to_string(),
        status: "running".into(),
        error: None,
        started: now_rfc3339(),
        ended: None,
        study_path: cfg.study_path.display().to_string(),
        study: serde_json::json!({ "id": study.info.id, "version": study.info.version, "sha256": study.info.sha256, "description": study.description,
            "conditions": study.conditions, "temperature": study.temperature }),
        scenario_files: files,
        models: prov,
        seed: study.seed,
        repetitions,
        device: cfg.device_label.clone(),
        threads: cfg.threads,
        trials_planned: plan.trials.len(),
        shard: cfg.shard.map(|(i, n)| format!("{i}/{n}")),
        scoring: lib.instruments.values().filter(|x| used.contains(&x.info.id)).map(InstrumentScoring::from_instrument).collect(),
    };
    if let Ok(old) = read_header(&cfg.out_dir) {
        if old.seed != header.seed || old.repetitions != header.repetitions || old.study["sha256"] != header.study["sha256"] || old.models != header.models || old.shard != header.shard {
            return Err(run_err(format!(
                "{} holds a run with a different study file, seed, repetitions, model or shard; resume it with the same settings or choose another --out",
                cfg.out_dir.display()
            )));
        }
        header.started = old.started;
    }
    write_header(&cfg.out_dir, &header)?;

    let trials_path = cfg.out_dir.join("trials.jsonl");
    let mut out = std::fs::OpenOptions::new().create(true).append(true).open(&trials_path).with_path(&trials_path)?;
    let bar = if cfg.show_progress { ProgressBar::new(pending.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} trials  {per_sec}  eta {eta}  {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );

    let mut written = 0usize;
    let mut failed = 0usize;
    let result = (|| -> Result<()> {
        for (gi, group) in plan.groups.iter().enumerate() {
            let members: Vec<&Trial> = plan.trials.iter().filter(|t| t.group == gi).collect();
            let todo: Vec<usize> = plan.trials.iter().enumerate().filter(|(i, t)| t.group == gi && pending_set.contains(i)).map(|(i, _)| i).collect();
            if todo.is_empty() {
                continue;
            }
            bar.set_message(format!("{} rep {}", group.condition, group.repetition + 1));
            let model = &models[labels.iter().position(|l| l == &group.model).expect("planned model")];
            let ctx = GroupContext::build(&study, &lib, model, group, &members)?;
            let completions = lockstep_completions(&study, model, &ctx, todo.iter().map(|&i| &plan.trials[i]), cfg.batch_size)?;
            for unit in work_units(&plan.trials, &todo, cfg.batch_size) {
                // One forward prefills a unit's items (each row equal to its lone prefill;
                // on failure each runs alone).
                let is_items = unit.iter().all(|&i| matches!(plan.trials[i].question, Question::Item { .. }));
                let batch_started = Instant::now();
                let mut prefilled: Vec<Option<(KvCache, Vec<f32>)>> = match is_items {
                    true => {
                        let suffixes: Vec<Vec<u32>> = unit.iter().map(|&i| ctx.prompts[&plan.trials[i].id].tokens[ctx.shared.len()..].to_vec()).collect();
                        extend_rows(model, &ctx.cache, &suffixes).map(|rows| rows.into_iter().map(Some).collect()).unwrap_or_else(|_| vec![None; unit.len()])
                    }
                    false => vec![None; unit.len()],
                };
                // The unit's choice read-outs scored together (multi-token labels need
                // further passes; one per unit instead of one per item). On failure each
                // trial scores its own.
                let mut scored: Vec<Option<Vec<f64>>> = vec![None; unit.len()];
                if is_items && prefilled.iter().all(|p| p.is_some()) {
                    let options: Option<Vec<Vec<Vec<u32>>>> = unit
                        .iter()
                        .map(|&i| match &plan.trials[i].question {
                            Question::Item { instrument, .. } => item_options(&study, model, &lib.instruments[instrument], &ctx.prompts[&plan.trials[i].id].labels).ok().flatten().map(|o| o.2),
                            _ => None,
                        })
                        .collect();
                    if let Some(options) = options {
                        let rows: Vec<_> = prefilled.iter().zip(&options).map(|(p, o)| {
                            let (cache, logits) = p.as_ref().expect("checked above");
                            (cache, &logits[..], &o[..])
                        }).collect();
                        if let Ok(lps) = option_logprobs_rows(model, &rows) {
                            scored = lps.into_iter().map(Some).collect();
                        }
                    }
                }
                let prefill_ms = batch_started.elapsed().as_secs_f64() * 1e3 / unit.len() as f64;
                for (k, i) in unit.into_iter().enumerate() {
                    let trial = &plan.trials[i];
                    let started = Instant::now();
                    let ready = prefilled[k].take().map(|(c, l)| (c, l, prefill_ms, scored[k].take()));
                    let record = match run_trial(&study, &lib, model, group, &ctx, trial, completions.get(&trial.id), ready) {
                        Ok(r) => r,
                        Err(e) => {
                            failed += 1;
                            error_record(group, trial, &ctx, e.to_string())
                        }
                    };
                    let mut record = record;
                    if let Some(obj) = record.timing.as_object_mut() {
                        obj.insert("total_ms".into(), serde_json::json!(started.elapsed().as_secs_f64() * 1e3));
                    }
                    let line = serde_json::to_string(&record).expect("records serialise");
                    out.write_all(line.as_bytes()).and_then(|_| out.write_all(b"\n")).and_then(|_| out.flush()).with_path(&trials_path)?;
                    written += 1;
                    bar.inc(1);
                    if failed >= 10 && failed * 5 > written {
                        return Err(run_err(format!("{failed} of {written} trials failed; stopping (see the error field in trials.jsonl)")));
                    }
                }
            }
        }
        Ok(())
    })();
    bar.finish_and_clear();
    let remaining = shard_trials - shard_done - written;
    header.ended = Some(now_rfc3339());
    match &result {
        Ok(()) if remaining == 0 => header.status = "success".into(),
        Ok(()) => header.status = "partial".into(),
        Err(e) => {
            header.status = "error".into();
            header.error = Some(e.to_string());
        }
    }
    write_header(&cfg.out_dir, &header)?;
    result?;
    let summary = summarise(&cfg.out_dir, &lib)?;
    Ok(RunOutcome { out_dir: cfg.out_dir.clone(), trials_written: written, trials_remaining: remaining, summary })
}

/// One trial's rendered question and prompt.
#[derive(Clone, Default)]
struct TrialPrompt {
    /// The question turn's text.
    question: String,
    /// Answer labels in display order, with the option each stands for.
    labels: Vec<(String, usize)>,
    /// The whole rendered prompt and its tokens.
    text: String,
    tokens: Vec<u32>,
}

/// A group's rendered prompts, and the KV cache of the part they all share.
struct GroupContext {
    messages: Vec<Message>,
    prompts: BTreeMap<String, TrialPrompt>,
    shared: Vec<u32>,
    cache: KvCache,
}

impl GroupContext {
    fn build(study: &Study, lib: &Library, model: &Model, group: &Group, members: &[&Trial]) -> Result<Self> {
        let cond = study.conditions.iter().find(|c| c.name == group.condition).expect("planned condition");
        let sampling = study_sampling(study)?;
        let mut messages = Vec::new();
        for (k, step) in prefix_steps(study, lib, cond, group).into_iter().enumerate() {
            match step {
                Step::Message(m) => messages.push(m),
                Step::Generate { max_tokens } => {
                    let text = model.render_chat(&messages)?;
                    let tokens = model.tokenizer.encode(&text, false)?;
                    let g = crate::generate::generate(model, &tokens, &sampling, study.seed, &format!("{}/turn/{k}", group.id), max_tokens, |_| {})?;
                    messages.push(Message::assistant(g.text.trim().to_string()));
                }
            }
        }
        let mut prompts = BTreeMap::new();
        for t in members {
            let q = question_text(lib, &t.question);
            let mut conv = messages.clone();
            conv.push(Message::user(q.text.clone()));
            let text = model.render_chat(&conv)?;
            let tokens = model.tokenizer.encode(&text, false)?;
            prompts.insert(t.id.clone(), TrialPrompt { question: q.text, labels: q.labels, text, tokens });
        }
        // The longest common token prefix of every member, leaving each at least one token.
        let mut shared: Vec<u32> = prompts.values().next().map(|p| p.tokens.clone()).unwrap_or_default();
        for p in prompts.values() {
            let common = shared.iter().zip(&p.tokens).take_while(|(a, b)| a == b).count();
            shared.truncate(common.min(p.tokens.len() - 1));
        }
        let context = model.transformer.max_positions();
        if let Some(longest) = prompts.values().map(|p| p.tokens.len()).max() {
            if longest + study.max_answer_tokens * (study.max_reasks + 2) + 64 > context {
                return Err(Error::ContextOverflow { tokens: longest, context });
            }
        }
        let mut cache = KvCache::new(model.transformer.config.n_layer);
        if !shared.is_empty() {
            model.transformer.forward(&[shared.clone()], &mut cache, &LogitsAt::Last)?;
        }
        Ok(Self { messages, prompts, shared, cache })
    }

    /// A cache holding `tokens` (which must start with the shared prefix) and the logits
    /// at its last position.
    fn extend(&self, model: &Model, tokens: &[u32]) -> Result<(KvCache, Vec<f32>)> {
        if tokens.len() <= self.shared.len() || tokens[..self.shared.len()] != self.shared[..] {
            return Err(run_err("internal: a prompt does not start with its group's shared prefix"));
        }
        let mut cache = self.cache.clone();
        let logits = model.transformer.last_logits(&tokens[self.shared.len()..], &mut cache)?;
        Ok((cache, logits))
    }
}

fn study_sampling(study: &Study) -> Result<Sampling> {
    Ok(SamplingParams { temperature: study.temperature, ..Default::default() }.resolve()?)
}

/// For answers: stop once a non-empty first line is complete. An answer is read from the
/// first number or label, which later text cannot change.
fn first_line_complete(model: &Model, tokens: &[u32]) -> Result<bool> {
    let text = model.tokenizer.decode(tokens)?;
    Ok(text.trim_start().split_once('\n').is_some_and(|(line, _)| !line.trim().is_empty()))
}

fn base_record(group: &Group, trial: &Trial, ctx: &GroupContext) -> TrialRecord {
    let TrialPrompt { text: prompt, tokens, .. } = ctx.prompts.get(&trial.id).cloned().unwrap_or_default();
    TrialRecord {
        kind: "trial".into(),
        schema: SCHEMA,
        trial_id: trial.id.clone(),
        group_id: group.id.clone(),
        model: group.model.clone(),
        condition: group.condition.clone(),
        induction: group.induction.clone(),
        induction_variant: group.induction_variant.clone(),
        regulation: group.regulation.clone(),
        regulation_variant: group.regulation_variant.clone(),
        repetition: group.repetition,
        question: serde_json::to_value(&trial.question).expect("question serialises"),
        prompt_sha256: sha256_hex(prompt.as_bytes()),
        prompt,
        prompt_tokens: tokens.len(),
        generate: None,
        choice: None,
        completion: None,
        judge: None,
        error: None,
        timing: serde_json::json!({}),
    }
}

fn error_record(group: &Group, trial: &Trial, ctx: &GroupContext, error: String) -> TrialRecord {
    TrialRecord { error: Some(error), ..base_record(group, trial, ctx) }
}

/// The sampled completions of a group's pending completion trials, decoded in lockstep
/// batches of the trials that share a prompt (a stem's repeated completions). Each
/// trial keeps its own random stream. A lone pending completion (after a resume) takes
/// the same path as a batch of one: the KV cache is then split into the same segments
/// (shared prefix | prompt tail | sampled tokens) as in a batch, and the attention sums
/// over segments in the same order, so its tokens are bit-identical (tested).
fn lockstep_completions<'a>(study: &Study, model: &Model, ctx: &GroupContext, trials: impl Iterator<Item = &'a Trial>, batch_size: usize) -> Result<BTreeMap<String, Vec<u32>>> {
    let mut by_prompt: BTreeMap<Vec<u32>, Vec<&Trial>> = BTreeMap::new();
    for t in trials.filter(|t| matches!(t.question, Question::Completion { .. })) {
        by_prompt.entry(ctx.prompts[&t.id].tokens.clone()).or_default().push(t);
    }
    let sampling = study_sampling(study)?;
    let max = study.completion.as_ref().map(|c| c.max_tokens).unwrap_or(24);
    let mut out = BTreeMap::new();
    for (tokens, trials) in by_prompt {
        let (cache, logits) = ctx.extend(model, &tokens)?;
        let mut rngs: Vec<_> = trials.iter().map(|t| sequence_rng(study.seed, &format!("{}/completion", t.id))).collect();
        let rows = decode_lockstep(model, &cache, &logits, &sampling, &mut rngs, max, batch_size)?;
        for (t, (sampled, _)) in trials.iter().zip(rows) {
            out.insert(t.id.clone(), sampled);
        }
    }
    Ok(out)
}

/// The order a group's pending trials run in: item trials in units of at most
/// `batch_size`, in plan order (each unit prefilled together, whatever the lengths of
/// its members); completions one by one (their tokens come from the lockstep batch).
fn work_units(trials: &[Trial], todo: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let is_item = |i: &usize| matches!(trials[*i].question, Question::Item { .. });
    let mut units: Vec<Vec<usize>> = todo.iter().filter(|i| !is_item(i)).map(|&i| vec![i]).collect();
    let items: Vec<usize> = todo.iter().filter(|i| is_item(i)).copied().collect();
    units.extend(items.chunks(batch_size.max(1)).map(|c| c.to_vec()));
    units
}

/// An item trial's prompt already prefilled with its unit: cache, last logits, prefill
/// ms per trial, and the options' log-probabilities when they were scored with the unit.
type Prefilled = (KvCache, Vec<f32>, f64, Option<Vec<f64>>);

fn run_trial(study: &Study, lib: &Library, model: &Model, group: &Group, ctx: &GroupContext, trial: &Trial, decoded: Option<&Vec<u32>>, prefilled: Option<Prefilled>) -> Result<TrialRecord> {
    let mut rec = base_record(group, trial, ctx);
    let TrialPrompt { question, labels, tokens, .. } = ctx.prompts.get(&trial.id).cloned().expect("prompt rendered for every member");
    let sampling = study_sampling(study)?;
    match &trial.question {
        Question::Completion { .. } => {
            // Prefill and sampling happened in the group's lockstep batch.
            let tokens = decoded.cloned().ok_or_else(|| run_err("internal: a completion trial was not decoded with its group"))?;
            let text = model.tokenizer.decode(&tokens)?.trim().to_string();
            let t1 = Instant::now();
            if let Question::Completion { task, .. } = &trial.question {
                if let Some(judge) = &lib.tasks[task].judge {
                    rec.judge = Some(judge_valence(study, model, judge, &text, &trial.id)?);
                }
            }
            rec.completion = Some(text);
            rec.timing = serde_json::json!({ "judge_ms": t1.elapsed().as_secs_f64() * 1e3 });
        }
        Question::Item { instrument, item, .. } => {
            let (cache, logits, prefill_ms, scored) = match prefilled {
                Some(ready) => ready,
                None => {
                    let t0 = Instant::now();
                    let (cache, logits) = ctx.extend(model, &tokens)?;
                    (cache, logits, t0.elapsed().as_secs_f64() * 1e3, None)
                }
            };
            let ins = &lib.instruments[instrument];
            let item_def = item.as_ref().and_then(|id| ins.items.iter().find(|i| &i.id == id));
            // Choice read-out (one item per conversation only: with all items in one turn
            // there is no single answer position).
            let t1 = Instant::now();
            if let Some((shown, values, option_tokens)) = item_options(study, model, ins, &labels)? {
                let lps = match scored {
                    Some(lps) => lps,
                    None => option_logprobs(model, &cache, &logits, &option_tokens)?,
                };
                let (probs, mass) = normalise(&lps);
                let keying = item_def.map(|it| (ins, it));
                rec.choice = Some(choice_readout(study, shown, values, probs, mass, &format!("{}/choice-draw", trial.id), keying));
            }
            let choice_ms = t1.elapsed().as_secs_f64() * 1e3;

            // Generate read-out with bounded re-asks on fresh seed substreams.
            let t2 = Instant::now();
            let mut replies = Vec::new();
            let mut failures = Vec::new();
            let mut value = None;
            let mut used_tokens = 0;
            let mut conv_messages = ctx.messages.clone();
            conv_messages.push(Message::user(question));
            let (mut cache, mut logits, mut cached_tokens) = (cache, logits, tokens.clone());
            for attempt in 0..=study.max_reasks {
                if attempt > 0 {
                    // Continue from what is already computed: the longest token prefix the
                    // re-rendered conversation shares with the cached prompt + reply.
                    let text = model.render_chat(&conv_messages)?;
                    let conv_tokens = model.tokenizer.encode(&text, false)?;
                    let common = conv_tokens.iter().zip(&cached_tokens).take_while(|(a, b)| a == b).count().min(conv_tokens.len() - 1);
                    if common >= ctx.shared.len() {
                        cache.truncate(common)?;
                        logits = model.transformer.last_logits(&conv_tokens[common..], &mut cache)?;
                    } else {
                        (cache, logits) = ctx.extend(model, &conv_tokens)?;
                    }
                    cached_tokens = conv_tokens;
                }
                let mut rng = sequence_rng(study.seed, &format!("{}/generate/{attempt}", trial.id));
                let (sampled, after, _) = decode(model, cache.clone(), logits.clone(), &sampling, &mut rng, study.max_answer_tokens, |t| {
                    Ok(item.is_none() || !first_line_complete(model, t)?)
                })?;
                let reply = model.tokenizer.decode(&sampled)?;
                used_tokens += sampled.len();
                // `after` holds the prompt plus the sampled tokens (maybe all but the last);
                // the common-prefix truncation above copes with either.
                if !sampled.is_empty() {
                    cache = after;
                    cached_tokens.extend_from_slice(&sampled[..sampled.len() - 1]);
                }
                let parsed = read_answer(ins, &labels, item.is_some(), &reply);
                replies.push(reply.clone());
                match parsed {
                    Ok(v) => {
                        value = Some(v);
                        break;
                    }
                    Err(why) => {
                        failures.push(why);
                        conv_messages.push(Message::assistant(reply.trim().to_string()));
                        conv_messages.push(Message::user(reask_text(lib, &trial.question, &labels)));
                    }
                }
            }
            let keyed = value.map(|v| item_def.map(|it| ins.keyed_value(it, v)).unwrap_or(v));
            rec.generate = Some(GenerateReadout {
                replies,
                failures,
                value,
                keyed,
                sampling: serde_json::to_value(sampling).expect("sampling serialises"),
                tokens: used_tokens,
            });
            rec.timing = serde_json::json!({ "prefill_ms": prefill_ms, "choice_ms": choice_ms, "generate_ms": t2.elapsed().as_secs_f64() * 1e3 });
        }
    }
    Ok(rec)
}

/// Summaries of an option distribution: expected value, argmax, a seeded draw (from the
/// stream `draw_stream`) and the expected value after reverse keying.
/// The labels an item trial shows, their values and their tokens, for the choice
/// read-out; None when the conversation holds all items (no single answer position).
fn item_options(study: &Study, model: &Model, ins: &crate::scenario::Instrument, labels: &[(String, usize)]) -> Result<Option<(Vec<String>, Vec<f64>, Vec<Vec<u32>>)>> {
    if study.per_conversation != PerConversation::One {
        return Ok(None);
    }
    let (shown, values): (Vec<String>, Vec<f64>) = match &ins.response {
        Response::Options(opts) => labels.iter().map(|(l, idx)| (l.clone(), opts[*idx].value)).unzip(),
        Response::Numeric { bins, .. } => bins.iter().map(|b| (b.to_string(), *b as f64)).unzip(),
    };
    let tokens = shown.iter().map(|l| model.tokenizer.encode(l, false)).collect::<Result<Vec<_>>>()?;
    Ok(Some((shown, values, tokens)))
}

fn choice_readout(study: &Study, labels: Vec<String>, values: Vec<f64>, probs: Vec<f64>, mass: f64, draw_stream: &str, keying: Option<(&crate::scenario::Instrument, &crate::scenario::Item)>) -> ChoiceReadout {
    let expected: f64 = probs.iter().zip(&values).map(|(p, v)| p * v).sum();
    let best = probs.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0);
    let u: f64 = sequence_rng(study.seed, draw_stream).random();
    let drawn = inverse_cdf(&probs, u).unwrap_or(probs.len() - 1);
    let keyed_expected = keying.map(|(ins, it)| ins.keyed_value(it, expected)).unwrap_or(expected);
    ChoiceReadout { argmax: values[best], draw: values[drawn], labels, values, probs, mass, expected, keyed_expected }
}

/// The model-as-judge read-out: a fresh conversation (the study's system prompt, then the
/// judge instruction around `text`) and the probability of each judge label.
fn judge_valence(study: &Study, model: &Model, judge: &crate::scenario::Judge, text: &str, trial_id: &str) -> Result<ChoiceReadout> {
    let mut conv = Vec::new();
    if let Some(s) = &study.system_prompt {
        conv.push(Message::system(s.clone()));
    }
    conv.push(Message::user(judge.prompt(text)));
    let tokens = model.tokenizer.encode(&model.render_chat(&conv)?, false)?;
    let mut cache = KvCache::new(model.transformer.config.n_layer);
    let logits = model.transformer.last_logits(&tokens, &mut cache)?;
    let (labels, values): (Vec<String>, Vec<f64>) = judge.options.iter().cloned().unzip();
    let option_tokens = labels.iter().map(|l| model.tokenizer.encode(l, false)).collect::<Result<Vec<_>>>()?;
    let (probs, mass) = normalise(&option_logprobs(model, &cache, &logits, &option_tokens)?);
    Ok(choice_readout(study, labels, values, probs, mass, &format!("{trial_id}/judge-draw"), None))
}

/// The value an answer gives, or why it could not be read. With all items in one turn
/// the value is the mean of the items read (reverse keying applies per item upstream).
fn read_answer(ins: &crate::scenario::Instrument, labels: &[(String, usize)], single: bool, reply: &str) -> std::result::Result<f64, String> {
    let one = |text: &str| -> std::result::Result<f64, String> {
        match &ins.response {
            Response::Numeric { min, max, .. } => parse_number(text, *min as f64, *max as f64).map_err(|e| format!("{e:?}")),
            Response::Options(opts) => {
                let shown: Vec<String> = labels.iter().map(|(l, _)| l.clone()).collect();
                parse_label(text, &shown).map(|pos| opts[labels[pos].1].value).map_err(|e| format!("{e:?}"))
            }
        }
    };
    if single {
        return one(reply);
    }
    let parts = super::parse::split_numbered(reply, ins.items.len());
    let mut keyed = Vec::new();
    for (item, part) in ins.items.iter().zip(parts) {
        let v = one(part.as_deref().ok_or_else(|| format!("no answer for statement {}", item.id))?)?;
        keyed.push(ins.keyed_value(item, v));
    }
    ins.score(&keyed.into_iter().map(Some).collect::<Vec<_>>()).ok_or_else(|| "no items".to_string())
}

/// Mean ± SD of scale scores per model, condition and instrument, across repetitions, for
/// both read-outs, from everything in `trials.jsonl`.
pub fn summarise(dir: &Path, lib: &Library) -> Result<String> {
    let path = dir.join("trials.jsonl");
    let text = std::fs::read_to_string(&path).with_path(&path)?;
    // (model, condition, instrument, repetition) -> keyed values of both read-outs.
    type Key = (String, String, String, usize);
    #[derive(Default)]
    struct Cell {
        generated: Vec<Option<f64>>,
        choice: Vec<Option<f64>>,
        /// All items were asked in one turn: each record already holds the scale score.
        whole: bool,
    }
    let mut cells: BTreeMap<Key, Cell> = BTreeMap::new();
    let mut completions: BTreeMap<(String, String), usize> = BTreeMap::new();
    for line in text.lines() {
        let Ok(r) = serde_json::from_str::<TrialRecord>(line) else { continue };
        match r.question.get("kind").and_then(|k| k.as_str()) {
            Some("item") => {
                let ins = r.question["instrument"].as_str().unwrap_or("").to_string();
                let e = cells.entry((r.model.clone(), r.condition.clone(), ins, r.repetition)).or_default();
                e.whole = r.question.get("item").is_some_and(|i| i.is_null());
                e.generated.push(r.generate.as_ref().and_then(|g| g.keyed));
                e.choice.push(r.choice.as_ref().map(|c| c.keyed_expected));
            }
            Some("completion") => *completions.entry((r.model.clone(), r.condition.clone())).or_default() += 1,
            _ => {}
        }
    }
    // Scale scores per repetition, then mean ± SD over repetitions.
    let mut per_cond: BTreeMap<(String, String, String), (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let mut answered: BTreeMap<(String, String, String), (usize, usize)> = BTreeMap::new();
    for ((model, cond, ins, _), cell) in &cells {
        let Some(instrument) = lib.instruments.get(ins) else { continue };
        let (g, c) = (&cell.generated, &cell.choice);
        let a = answered.entry((model.clone(), cond.clone(), ins.clone())).or_default();
        a.0 += g.iter().filter(|v| v.is_some()).count();
        a.1 += g.len();
        let entry = per_cond.entry((model.clone(), cond.clone(), ins.clone())).or_default();
        let items = instrument.items.len();
        let generated_score = match (cell.whole, g.len()) {
            (true, 1) => g[0],
            (false, n) if n == items => instrument.score(g),
            _ => None,
        };
        entry.0.extend(generated_score);
        if c.len() == items {
            entry.1.extend(instrument.score(c));
        }
    }
    let fmt = |v: &[f64]| -> String {
        if v.is_empty() {
            return "-".into();
        }
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let sd = if v.len() > 1 { (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
        format!("{mean:7.2} ± {sd:5.2} (n={})", v.len())
    };
    let mut out = String::new();
    out.push_str("Scale scores, mean ± SD over repetitions (a generated score needs every item answered).\n");
    out.push_str(&format!("{:<28} {:<40} {:<15} {:>9} {:<24} {:<24}\n", "model", "condition", "instrument", "answered", "generated answers", "option probabilities"));
    for ((model, cond, ins), (g, c)) in &per_cond {
        let (ok, all) = answered.get(&(model.clone(), cond.clone(), ins.clone())).copied().unwrap_or((0, 0));
        let rate = if all > 0 { format!("{:.0}%", 100.0 * ok as f64 / all as f64) } else { "-".into() };
        out.push_str(&format!("{:<28} {:<40} {:<15} {:>9} {:<24} {:<24}\n", model, cond, ins, rate, fmt(g), fmt(c)));
    }
    for ((model, cond), n) in &completions {
        out.push_str(&format!("{model:<28} {cond:<40} completions: {n}\n"));
    }
    Ok(out)
}

/// Groups and trials of a study, for `--dry-run`-style inspection and tests.
pub fn plan_for(study_path: &Path, scenarios_root: Option<&Path>, models: &[String], repetitions: Option<usize>) -> Result<(Study, Library, Plan)> {
    let root = scenarios_root.map(Path::to_path_buf).unwrap_or_else(|| default_scenarios_root(study_path));
    let lib = Library::load(&root)?;
    let study = Study::load(study_path, &lib)?;
    let reps = repetitions.unwrap_or(study.repetitions);
    let plan = expand(&study, &lib, models, reps);
    Ok((study, lib, plan))
}
