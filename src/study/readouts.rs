//! The read-outs of a trial: for an item, the unit's prefill and the choice read-out
//! (the probability of every option at the answer position; the generated read-out is
//! `answers`'); for a completion, the text and the model-as-judge read-out of it. Each
//! takes the group's shared work and returns the trial's record.

use super::answers::first_line_complete;
use super::group::{common_len, study_sampling, CompletionTokens, GroupContext, TrialPrompt};
use super::judge_prefix::PrefixSharing;
use super::plan::{Group, Question, Trial};
use crate::chat::{sha256_hex, Message};
use crate::error::{Error, Result};
use crate::generate::{extend_each, extend_each_capturing};
use crate::measures::calibration::divide_out;
use crate::model::{KvCache, Model};
use crate::option_scoring::{normalise, option_logprobs, option_logprobs_rows, ScoringRow};
use crate::results::{
    ChoiceReadout, GenerateReadout, JudgeDetail, RecordKind, Timing, TrialRecord, SCHEMA,
};
use crate::rng::Stream;
use crate::sampling::inverse_cdf;
use crate::scenario::study::PerConversation;
use crate::scenario::study::CONTENT_FREE_TEXTS;
use crate::scenario::{Instrument, Item, Judge, Library, Response, Study};
use crate::unit_work;
use rand::Rng;
use std::collections::BTreeMap;
use std::time::Instant;

/// An item trial's prompt prefilled with its unit: the cache holding the prompt, the
/// logits at its last position, the prefill time per trial, and the options'
/// log-probabilities scored with the unit (None where there is no single answer
/// position).
pub struct Prefilled {
    /// The prompt's cache (None on the fixed-plan path, whose rows live in the unit's
    /// grid; a re-ask there recomputes its row alone from the shared prefix).
    pub cache: Option<KvCache>,
    pub logits: Vec<f32>,
    pub prefill_ms: f64,
    pub option_logprobs: Option<Vec<f64>>,
    /// The residual stream at the answer position after each of the group's captured
    /// blocks (empty without capture).
    pub states: Vec<Vec<f32>>,
    /// The generated read-out's first attempt, decoded with the unit (fixed-plan path).
    pub first_answer: Option<Vec<u32>>,
}

/// The labels an item trial shows, their values and their tokens.
pub(crate) struct ItemOptions {
    pub shown: Vec<String>,
    pub values: Vec<f64>,
    pub tokens: Vec<Vec<u32>>,
}

/// Prefills a unit of item trials in one ragged forward pass (each row equal to its
/// lone prefill) and scores all their options together (multi-token labels need further
/// passes: one per unit instead of one per item).
pub fn prefill_unit(
    study: &Study,
    lib: &Library,
    model: &Model,
    ctx: &GroupContext,
    unit: &[&Trial],
) -> Result<Vec<Prefilled>> {
    let started = Instant::now();
    let suffixes = unit_suffixes(ctx, unit)?;
    let (caches, rests) = share_openings(model, &ctx.cache, &suffixes)?;
    let rows: Vec<(KvCache, Vec<f32>, Vec<Vec<f32>>)> =
        extend_each_capturing(model, caches, &rests, &ctx.capture)?
            .into_iter()
            .map(|e| (e.cache, e.logits, e.states))
            .collect();
    let options = unit_options(study, lib, model, ctx, unit)?;
    let scoring: Vec<ScoringRow<'_>> = rows
        .iter()
        .zip(&options)
        .filter_map(|((cache, logits, _), o)| {
            o.as_ref().map(|o| (cache, &logits[..], &o.tokens[..]))
        })
        .collect();
    let mut scored = option_logprobs_rows(model, &scoring)?.into_iter();
    let prefill_ms = started.elapsed().as_secs_f64() * 1e3 / unit.len() as f64;
    Ok(rows
        .into_iter()
        .zip(&options)
        .map(|((cache, logits, states), o)| Prefilled {
            cache: Some(cache),
            logits,
            prefill_ms,
            option_logprobs: o.as_ref().and_then(|_| scored.next()),
            states,
            first_answer: None,
        })
        .collect())
}

/// Fewer tokens than this in common are not worth a pass of their own.
const MIN_SHARED_OPENING: usize = 8;

/// The unit's prompts (after the group's prefix) that open alike, such as the items of
/// one instrument (its instruction, then the item), get that opening prefilled once, in
/// one ragged pass for every such cluster: returns each row's cache to continue (its
/// cluster's, else the group's) and the rest of its prompt. Each row's bits stay those of
/// its whole prompt prefilled after the group's prefix (see `judge_prefix`); kernels that
/// are not batch-invariant get the group's cache and the whole prompt.
fn share_openings(
    model: &Model,
    group: &KvCache,
    suffixes: &[Vec<u32>],
) -> Result<(Vec<KvCache>, Vec<Vec<u32>>)> {
    let alone = || (vec![group.clone(); suffixes.len()], suffixes.to_vec());
    if suffixes.len() < 2 || !model.transformer.batch_invariant() {
        return Ok(alone());
    }
    let mut order: Vec<usize> = (0..suffixes.len()).collect();
    order.sort_by(|&a, &b| suffixes[a].cmp(&suffixes[b]));
    // Sorted, prompts that open alike are neighbours: a cluster is a run of neighbours
    // sharing at least MIN_SHARED_OPENING tokens; its opening is the least they share,
    // leaving each row at least its last token (whose logits are the answer position's).
    let mut clusters: Vec<(Vec<usize>, usize)> = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        let own = suffixes[i].len().saturating_sub(1);
        let with_last = (k > 0).then(|| common_len(&suffixes[order[k - 1]], &suffixes[i]));
        match (clusters.last_mut(), with_last) {
            (Some((rows, shared)), Some(n)) if n.min(own).min(*shared) >= MIN_SHARED_OPENING => {
                *shared = n.min(own).min(*shared);
                rows.push(i);
            }
            _ => clusters.push((vec![i], own)),
        }
    }
    let shared: Vec<&(Vec<usize>, usize)> = clusters.iter().filter(|(r, _)| r.len() > 1).collect();
    if shared.is_empty() {
        return Ok(alone());
    }
    let openings: Vec<Vec<u32>> = shared
        .iter()
        .map(|(rows, n)| suffixes[rows[0]][..*n].to_vec())
        .collect();
    let opened = extend_each(model, vec![group.clone(); openings.len()], &openings)?;
    let (mut caches, mut rests) = alone();
    for ((rows, n), (cache, _)) in shared.iter().zip(opened) {
        for &i in rows {
            caches[i] = cache.clone();
            rests[i] = suffixes[i][*n..].to_vec();
        }
    }
    Ok((caches, rests))
}

/// Each trial's prompt after the group's shared prefix.
fn unit_suffixes(ctx: &GroupContext, unit: &[&Trial]) -> Result<Vec<Vec<u32>>> {
    unit.iter()
        .map(|t| Ok(ctx.prompt(&t.id)?.tokens[ctx.shared.len()..].to_vec()))
        .collect()
}

/// The options each item trial of a unit shows (None where it has no single answer
/// position).
fn unit_options(
    study: &Study,
    lib: &Library,
    model: &Model,
    ctx: &GroupContext,
    unit: &[&Trial],
) -> Result<Vec<Option<ItemOptions>>> {
    unit.iter()
        .map(|t| match &t.question {
            Question::Item { instrument, .. } | Question::ContentFree { instrument, .. } => {
                item_options(
                    study,
                    &model.tokenizer,
                    &lib.instruments[instrument],
                    &ctx.prompt(&t.id)?.labels,
                )
            }
            Question::Completion { .. } => {
                Err(Error::Run("internal: a completion in an item unit".into()))
            }
        })
        .collect()
}

/// `prefill_unit` on the fixed-plan path (`unit_work`): the unit's prompts in one
/// padded pass, its options scored together, and the first attempt of every generated
/// read-out decoded in lockstep, each row on its own stream. The unit must be the
/// plan's (`work_units` of all the group's trials), since its composition decides the
/// bits.
pub fn prefill_unit_fixed_plan(
    study: &Study,
    lib: &Library,
    model: &Model,
    ctx: &GroupContext,
    unit: &[&Trial],
) -> Result<Vec<Prefilled>> {
    let started = Instant::now();
    let suffixes = unit_suffixes(ctx, unit)?;
    let options = unit_options(study, lib, model, ctx, unit)?;
    let prefilled = unit_work::prefill(model, &ctx.cache, &suffixes, study.max_answer_tokens)?;
    let option_tokens: Vec<Option<&[Vec<u32>]>> = options
        .iter()
        .map(|o| o.as_ref().map(|o| &o.tokens[..]))
        .collect();
    let scored = unit_work::option_logprobs(model, &prefilled, &option_tokens)?;
    let prefill_ms = started.elapsed().as_secs_f64() * 1e3 / unit.len() as f64;
    let sampling = study_sampling(study)?;
    // Content-free prompts have no generated read-out: their rows stop at once (the
    // stream they draw that one token from is never used elsewhere).
    let generates: Vec<bool> = unit.iter().map(|t| !t.question.is_content_free()).collect();
    let single = |t: &Trial| t.question.item().is_some();
    let mut rngs: Vec<_> = unit
        .iter()
        .map(|t| {
            Stream::Answer {
                trial: &t.id,
                attempt: 0,
            }
            .rng(study.seed)
        })
        .collect();
    let answers = unit_work::decode_lockstep(
        model,
        prefilled.kv,
        prefilled.logits.clone(),
        &sampling,
        &mut rngs,
        study.max_answer_tokens,
        |r, tokens| Ok(generates[r] && (!single(unit[r]) || !first_line_complete(model, tokens)?)),
    )?;
    Ok(prefilled
        .logits
        .into_iter()
        .zip(scored)
        .zip(answers)
        .zip(&generates)
        .map(
            |(((logits, option_logprobs), (answer, _)), &generates)| Prefilled {
                cache: None,
                logits,
                prefill_ms,
                option_logprobs,
                states: Vec::new(),
                first_answer: generates.then_some(answer),
            },
        )
        .collect())
}

/// The record every read-out fills in: coordinates, prompt and its hash.
pub fn base_record(study: &Study, group: &Group, trial: &Trial, ctx: &GroupContext) -> TrialRecord {
    base_record_for(
        study,
        group,
        trial,
        ctx.prompts.get(&trial.id),
        ctx.steering.clone(),
    )
}

/// `base_record` from the trial's rendered prompt (None: not rendered) and steering.
pub fn base_record_for(
    study: &Study,
    group: &Group,
    trial: &Trial,
    prompt: Option<&TrialPrompt>,
    steering: Option<crate::results::trial::TrialSteering>,
) -> TrialRecord {
    let (prompt, prompt_tokens) = prompt
        .map(|p| (p.text.clone(), p.tokens.len()))
        .unwrap_or_default();
    TrialRecord {
        kind: RecordKind::Trial,
        schema: SCHEMA,
        trial_id: trial.id.clone(),
        seed: study.seed,
        group_id: group.id.clone(),
        model: group.model.clone(),
        condition: group.condition.clone(),
        induction: group.induction.clone(),
        induction_variant: group.induction_variant.clone(),
        regulation: group.regulation.clone(),
        regulation_variant: group.regulation_variant.clone(),
        system_prompt_variant: group.system_prompt_variant,
        repetition: group.repetition,
        question: trial.question.clone(),
        prompt_sha256: sha256_hex(prompt.as_bytes()),
        prompt,
        prompt_tokens,
        generate: None,
        choice: None,
        completion: None,
        judge: None,
        error: None,
        timing: Timing::default(),
        calibrated: None,
        judge_detail: None,
        continues_stem: None,
        steering,
    }
}

/// The judge's content-free distribution per (model label, task), computed once per
/// process: it depends on nothing but the model and the judge, so a resumed run
/// computes the same values.
pub type JudgeBias = BTreeMap<(String, String), Vec<f64>>;

/// A completion trial: its sampled tokens (decoded with its group) as text, whether it
/// continues its stem, and the judge's read-out of the text where the task has a judge
/// (the group's model, sharing its prompts' prefix from one completion to the next).
pub(crate) fn run_completion(
    study: &Study,
    lib: &Library,
    judge_model: &PrefixSharing,
    mut rec: TrialRecord,
    trial: &Trial,
    tokens: Option<&CompletionTokens>,
    judge_bias: &mut JudgeBias,
) -> Result<TrialRecord> {
    let Question::Completion { task, stem, .. } = &trial.question else {
        return Err(Error::Run("internal: not a completion trial".into()));
    };
    let tokens = match tokens {
        Some(Ok(tokens)) => tokens,
        Some(Err(why)) => return Err(Error::Run(format!("decoding the completion failed: {why}"))),
        None => {
            return Err(Error::Run(
                "internal: a completion trial was not decoded with its group".into(),
            ))
        }
    };
    let model = judge_model.model;
    let text = model.tokenizer.decode(tokens)?.trim().to_string();
    let started = Instant::now();
    let task_def = &lib.tasks[task];
    rec.continues_stem = task_def
        .stems
        .iter()
        .find(|s| &s.id == stem)
        .map(|s| s.continued_by(&text));
    if let Some(judge) = &task_def.judge {
        let key = (rec.model.clone(), task.clone());
        if !judge_bias.contains_key(&key) {
            let bias = judge_content_free(study, judge_model, judge)?;
            judge_bias.insert(key.clone(), bias);
        }
        let (readout, detail) = judge_valence(
            study,
            judge_model,
            judge,
            &text,
            &trial.id,
            &judge_bias[&key],
        )?;
        rec.judge = Some(readout);
        rec.judge_detail = Some(detail);
    }
    rec.completion = Some(text);
    rec.timing.judge_ms = Some(started.elapsed().as_secs_f64() * 1e3);
    Ok(rec)
}

/// What a trial's unit computed for it: its prefilled prompt and, for a generated
/// read-out, the answer `answers::answer_unit` decoded with the unit (with the time it
/// took, in ms).
pub struct UnitRow {
    pub prefilled: Prefilled,
    pub answer: Option<(Result<GenerateReadout>, f64)>,
}

/// An item trial, from what its unit computed for it: the choice read-out and the
/// generated read-out. A content-free prompt gets the choice read-out only: it exists
/// to measure the option distribution.
pub fn run_item(
    study: &Study,
    lib: &Library,
    model: &Model,
    ctx: &GroupContext,
    mut rec: TrialRecord,
    trial: &Trial,
    row: UnitRow,
) -> Result<TrialRecord> {
    let UnitRow { prefilled, answer } = row;
    let (instrument, item) = match &trial.question {
        Question::Item {
            instrument, item, ..
        } => (instrument, item.as_ref()),
        Question::ContentFree { instrument, .. } => (instrument, None),
        Question::Completion { .. } => {
            return Err(Error::Run("internal: not an item trial".into()))
        }
    };
    let prompt = ctx.prompt(&trial.id)?;
    let ins = &lib.instruments[instrument];
    let item_def = item.and_then(|id| ins.items.iter().find(|i| &i.id == id));
    let Prefilled {
        cache,
        logits,
        prefill_ms,
        option_logprobs: scored,
        ..
    } = prefilled;

    let started = Instant::now();
    if let Some(options) = item_options(study, &model.tokenizer, ins, &prompt.labels)? {
        let lps = match (scored, &cache) {
            (Some(lps), _) => lps,
            (None, Some(cache)) => option_logprobs(model, cache, &logits, &options.tokens)?,
            (None, None) => {
                return Err(Error::Run(
                    "internal: an item's options were not scored with its unit".into(),
                ))
            }
        };
        let (probs, mass) = normalise(&lps);
        let keying = item_def.map(|it| (ins, it));
        rec.choice = Some(choice_readout(
            study.seed,
            options.shown,
            options.values,
            probs,
            mass,
            Stream::ChoiceDraw { trial: &trial.id },
            keying,
        )?);
    }
    let choice_ms = started.elapsed().as_secs_f64() * 1e3;
    rec.timing = Timing {
        prefill_ms: Some(prefill_ms),
        choice_ms: Some(choice_ms),
        ..Timing::default()
    };
    if trial.question.is_content_free() {
        return Ok(rec);
    }
    let (generated, generate_ms) = answer.ok_or_else(|| {
        Error::Run("internal: an item's answer was not generated with its unit".into())
    })?;
    rec.generate = Some(generated?);
    rec.timing.generate_ms = Some(generate_ms);
    Ok(rec)
}

/// The labels an item trial shows, their values and their tokens, for the choice
/// read-out; None when the conversation holds all items (no single answer position).
pub(crate) fn item_options(
    study: &Study,
    tokenizer: &crate::tokenizer::ModelTokenizer,
    ins: &Instrument,
    labels: &[(String, usize)],
) -> Result<Option<ItemOptions>> {
    if study.per_conversation != PerConversation::One {
        return Ok(None);
    }
    let (shown, values): (Vec<String>, Vec<f64>) = match &ins.response {
        Response::Options(opts) => labels
            .iter()
            .map(|(l, idx)| (l.clone(), opts[*idx].value))
            .unzip(),
        Response::Numeric { bins, .. } => bins.iter().map(|b| (b.to_string(), *b as f64)).unzip(),
    };
    let tokens = shown
        .iter()
        .map(|l| tokenizer.encode(l, false))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(ItemOptions {
        shown,
        values,
        tokens,
    }))
}

/// Summaries of an option distribution: expected value, argmax, a seeded draw (from
/// `draw`) and the expected value after reverse keying.
pub(crate) fn choice_readout(
    seed: u64,
    labels: Vec<String>,
    values: Vec<f64>,
    probs: Vec<f64>,
    mass: f64,
    draw: Stream<'_>,
    keying: Option<(&Instrument, &Item)>,
) -> Result<ChoiceReadout> {
    if let Some(p) = probs.iter().chain([&mass]).find(|p| !p.is_finite()) {
        return Err(Error::NonFinite(format!(
            "an option probability or the option mass is {p}"
        )));
    }
    if probs.is_empty() || probs.len() != values.len() {
        return Err(Error::Run(format!(
            "{} option probabilities for {} options",
            probs.len(),
            values.len()
        )));
    }
    let expected: f64 = probs.iter().zip(&values).map(|(p, v)| p * v).sum();
    let best = probs
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0);
    let u: f64 = draw.rng(seed).random();
    let drawn = inverse_cdf(&probs, u).unwrap_or(probs.len() - 1);
    let keyed_expected = keying
        .map(|(ins, it)| ins.keyed_value(it, expected))
        .unwrap_or(expected);
    Ok(ChoiceReadout {
        argmax: values[best],
        draw: values[drawn],
        labels,
        values,
        probs,
        mass,
        expected,
        keyed_expected,
        unobserved: None,
    })
}

/// What reads an option distribution off a model for the next answer of a
/// conversation: the local engine, or a server.
pub trait ConversationScorer: Sync {
    /// The options' distribution (renormalised over them, in the order given) and the
    /// probability mass they held, for the labels `labels` after `conversation`.
    fn option_distribution(
        &self,
        conversation: &[Message],
        labels: &[String],
    ) -> Result<(Vec<f64>, f64)>;

    /// `option_distribution` for several questions at once, in order. A scorer may share
    /// the work their prompts have in common (`judge_prefix::PrefixSharing`); each
    /// answer stays what it is asked alone.
    fn option_distributions(&self, asks: &[OptionAsk]) -> Result<Vec<(Vec<f64>, f64)>> {
        asks.iter()
            .map(|a| self.option_distribution(&a.conversation, &a.labels))
            .collect()
    }
}

/// One question to a `ConversationScorer`: a conversation and the option labels whose
/// probabilities are read after it.
pub struct OptionAsk {
    pub conversation: Vec<Message>,
    pub labels: Vec<String>,
}

impl ConversationScorer for Model {
    fn option_distribution(
        &self,
        conversation: &[Message],
        labels: &[String],
    ) -> Result<(Vec<f64>, f64)> {
        let tokens = self
            .tokenizer
            .encode(&self.render_chat(conversation)?, false)?;
        let mut cache = KvCache::new(self.transformer.config.n_layer);
        let logits = self.transformer.last_logits(&tokens, &mut cache)?;
        label_distribution(self, &cache, &logits, labels)
    }
}

/// The labels' distribution (renormalised over them) and the mass they held, read after
/// the prompt in `cache` whose last-position logits are `logits`.
pub(crate) fn label_distribution(
    model: &Model,
    cache: &KvCache,
    logits: &[f32],
    labels: &[String],
) -> Result<(Vec<f64>, f64)> {
    let option_tokens = labels
        .iter()
        .map(|l| model.tokenizer.encode(l, false))
        .collect::<Result<Vec<_>>>()?;
    Ok(normalise(&option_logprobs(
        model,
        cache,
        logits,
        &option_tokens,
    )?))
}

/// The judge asked about `text` with its labels in `order`: a fresh conversation (the
/// study's system prompt, then the judge instruction).
fn judge_ask(study: &Study, judge: &Judge, text: &str, order: &[usize]) -> OptionAsk {
    let mut conversation = Vec::new();
    // One judge for every completion: the first system prompt variant.
    if let Some(s) = study.system_prompt_for(0) {
        conversation.push(Message::system(s.to_string()));
    }
    conversation.push(Message::user(judge.prompt(text, order)));
    OptionAsk {
        conversation,
        labels: order.iter().map(|&i| judge.options[i].0.clone()).collect(),
    }
}

/// The judge's distributions for `text` asked in each of `orders`, each mapped back to
/// the listed option order, with its option mass.
fn judge_distributions(
    study: &Study,
    scorer: &dyn ConversationScorer,
    judge: &Judge,
    texts: &[&str],
    orders: &[Vec<usize>],
) -> Result<Vec<(Vec<f64>, f64)>> {
    let asked: Vec<(&str, &Vec<usize>)> = texts
        .iter()
        .flat_map(|&t| orders.iter().map(move |o| (t, o)))
        .collect();
    let asks: Vec<OptionAsk> = asked
        .iter()
        .map(|(t, o)| judge_ask(study, judge, t, o))
        .collect();
    let answers = scorer.option_distributions(&asks)?;
    Ok(asked
        .iter()
        .zip(answers)
        .map(|((_, order), (shown, mass))| {
            let mut listed = vec![0.0; judge.options.len()];
            for (&i, p) in order.iter().zip(shown) {
                listed[i] = p;
            }
            (listed, mass)
        })
        .collect())
}

/// The judge's mean distribution (listed order) over the content-free texts and the
/// orders it is asked in: what it answers with nothing to judge.
pub(crate) fn judge_content_free(
    study: &Study,
    model: &dyn ConversationScorer,
    judge: &Judge,
) -> Result<Vec<f64>> {
    let mut sum = vec![0.0; judge.options.len()];
    let mut n = 0.0;
    for (p, _) in judge_distributions(study, model, judge, &CONTENT_FREE_TEXTS, &judge.orders())? {
        for (s, x) in sum.iter_mut().zip(p) {
            *s += x;
        }
        n += 1.0;
    }
    Ok(sum.into_iter().map(|s| s / n).collect())
}

/// The model-as-judge read-out: the judge asked in each of its orders, the mean
/// distribution as the read-out, and the detail (per order, content-free bias and the
/// valence with that bias divided out).
pub(crate) fn judge_valence(
    study: &Study,
    model: &dyn ConversationScorer,
    judge: &Judge,
    text: &str,
    trial_id: &str,
    content_free: &[f64],
) -> Result<(ChoiceReadout, JudgeDetail)> {
    let orders = judge.orders();
    let mut by_order = Vec::new();
    let mut mass = 0.0;
    for (p, m) in judge_distributions(study, model, judge, &[text], &orders)? {
        by_order.push(p);
        mass += m / orders.len() as f64;
    }
    let probs: Vec<f64> = (0..judge.options.len())
        .map(|i| by_order.iter().map(|p| p[i]).sum::<f64>() / by_order.len() as f64)
        .collect();
    let (labels, values): (Vec<String>, Vec<f64>) = judge.options.iter().cloned().unzip();
    let calibrated_expected = divide_out(&probs, content_free).map_or(f64::NAN, |p| {
        p.iter().zip(&values).map(|(p, v)| p * v).sum()
    });
    let readout = choice_readout(
        study.seed,
        labels,
        values,
        probs,
        mass,
        Stream::JudgeDraw { trial: trial_id },
        None,
    )?;
    Ok((
        readout,
        JudgeDetail {
            orders,
            by_order,
            content_free: content_free.to_vec(),
            calibrated_expected,
        },
    ))
}
