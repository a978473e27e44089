//! The generated read-out: sample an answer, read it, and re-ask on a fresh stream while
//! it cannot be read. `Answering` is one trial's answer loop, shared by both engines; on
//! the local engine `answer_unit` runs a whole unit's loops together, one attempt at a
//! time: the rows asking at that attempt extend their caches in one ragged pass and
//! decode in lockstep (`generate::decode_each`), each row bit-identical to answering it
//! alone, which decoded one row per step and took most of a default study's time.

use super::group::{study_sampling, GroupContext};
use super::parse::{parse_label, parse_number, split_numbered};
use super::plan::Trial;
use super::prompt::{for_template, reask_text};
use super::readouts::Prefilled;
use crate::chat::Message;
use crate::error::{Error, Result};
use crate::generate::decode_each;
use crate::model::{KvCache, Model};
use crate::results::GenerateReadout;
use crate::rng::Stream;
use crate::scenario::{Instrument, Item, Library, Response, Study};
use std::collections::HashSet;
use std::time::Instant;

/// One trial's answer loop: the conversation so far, every reply and why it could not
/// be read. Ask at `next_attempt` with `conversation`, hand the reply to `record`, until
/// `next_attempt` is None (an answer read, or `max_reasks` re-asks spent).
pub(super) struct Answering<'a> {
    study: &'a Study,
    lib: &'a Library,
    trial: &'a Trial,
    ins: &'a Instrument,
    item_def: Option<&'a Item>,
    labels: &'a [(String, usize)],
    conversation: Vec<Message>,
    replies: Vec<String>,
    failures: Vec<String>,
    value: Option<f64>,
    used_tokens: usize,
}

impl<'a> Answering<'a> {
    /// The loop of `trial`, whose question is the last turn of `conversation`.
    pub(super) fn new(
        study: &'a Study,
        lib: &'a Library,
        trial: &'a Trial,
        (ins, item_def): (&'a Instrument, Option<&'a Item>),
        labels: &'a [(String, usize)],
        conversation: Vec<Message>,
    ) -> Self {
        Self {
            study,
            lib,
            trial,
            ins,
            item_def,
            labels,
            conversation,
            replies: Vec::new(),
            failures: Vec::new(),
            value: None,
            used_tokens: 0,
        }
    }

    /// The attempt to make next (0 is the first ask), or None when the loop is over.
    pub(super) fn next_attempt(&self) -> Option<usize> {
        (self.value.is_none() && self.replies.len() <= self.study.max_reasks)
            .then_some(self.replies.len())
    }

    /// The conversation the next attempt answers.
    pub(super) fn conversation(&self) -> &[Message] {
        &self.conversation
    }

    /// Whether the answer is one item's (else all items in one reply).
    fn single(&self) -> bool {
        self.trial.question.item().is_some()
    }

    /// Takes an attempt's reply (cut at the end of its first line for an item) and the
    /// tokens it used; a reply that cannot be read is answered with the re-ask turn.
    pub(super) fn record(&mut self, reply: String, used_tokens: usize) {
        self.used_tokens += used_tokens;
        let parsed = read_answer(self.ins, self.labels, self.single(), &reply);
        self.replies.push(reply.clone());
        match parsed {
            Ok(v) => self.value = Some(v),
            Err(why) => {
                self.failures.push(why);
                self.conversation
                    .push(Message::assistant(reply.trim().to_string()));
                self.conversation.push(Message::user(reask_text(
                    self.lib,
                    &self.trial.question,
                    self.labels,
                )));
            }
        }
    }

    /// The read-out: every reply and failure, and the value (reverse-keyed in `keyed`).
    pub(super) fn finish(self) -> Result<GenerateReadout> {
        let keyed = self.value.map(|v| {
            self.item_def
                .map(|it| self.ins.keyed_value(it, v))
                .unwrap_or(v)
        });
        Ok(GenerateReadout {
            replies: self.replies,
            failures: self.failures,
            value: self.value,
            keyed,
            sampling: study_sampling(self.study)?,
            tokens: self.used_tokens,
        })
    }
}

/// A trial's answer loop run to its end, `ask(attempt, conversation)` giving each
/// reply and the tokens it used (a server's path: one request per attempt).
pub(super) fn answer_with_reasks(
    mut answering: Answering<'_>,
    mut ask: impl FnMut(usize, &[Message]) -> Result<(String, usize)>,
) -> Result<GenerateReadout> {
    while let Some(attempt) = answering.next_attempt() {
        let (reply, used) = ask(attempt, answering.conversation())?;
        answering.record(reply, used);
    }
    answering.finish()
}

/// A unit row's answer loop on the local engine, with the cache it continues from.
struct Row<'a> {
    /// The row's position in the unit.
    at: usize,
    answering: Answering<'a>,
    /// The prompt (and what was fed of earlier replies); None on the fixed-plan path
    /// until a re-ask computes the row alone.
    cache: Option<KvCache>,
    logits: Vec<f32>,
    /// The tokens `cache` is taken to hold, for the prefix a re-ask keeps.
    cached_tokens: Vec<u32>,
    /// The first attempt, decoded with the unit (fixed-plan path).
    first: Option<Vec<u32>>,
    failed: Option<Error>,
    ms: f64,
}

/// The generated read-out of every row of a prefilled item unit that has one (a pending
/// item, not a content-free prompt), with the time it took that row, in unit order
/// (None for the others). The rows asking at each attempt go together: their re-ask
/// turns are prefilled in one ragged pass from what each row has cached, and their
/// answers decoded in lockstep, every row on its own stream `Stream::Answer { trial,
/// attempt }`. The rows' caches are taken from `prefilled`.
pub fn answer_unit(
    study: &Study,
    lib: &Library,
    model: &Model,
    ctx: &GroupContext,
    unit: &[&Trial],
    prefilled: &mut [Prefilled],
    pending: &HashSet<&str>,
) -> Vec<Option<(Result<GenerateReadout>, f64)>> {
    let mut rows: Vec<Row<'_>> = Vec::new();
    let mut out: Vec<Option<(Result<GenerateReadout>, f64)>> =
        (0..unit.len()).map(|_| None).collect();
    for (at, (trial, p)) in unit.iter().zip(prefilled.iter_mut()).enumerate() {
        if trial.question.is_content_free() || !pending.contains(trial.id.as_str()) {
            continue;
        }
        match row_for(study, lib, ctx, trial) {
            Ok((answering, prompt_tokens)) => rows.push(Row {
                at,
                answering,
                cache: p.cache.take(),
                logits: p.logits.clone(),
                cached_tokens: prompt_tokens,
                first: p.first_answer.take(),
                failed: None,
                ms: 0.0,
            }),
            Err(e) => out[at] = Some((Err(e), 0.0)),
        }
    }
    while let Some(attempt) = rows
        .iter()
        .filter(|r| r.failed.is_none())
        .filter_map(|r| r.answering.next_attempt())
        .min()
    {
        let started = Instant::now();
        let asking: Vec<usize> = (0..rows.len())
            .filter(|&i| {
                rows[i].failed.is_none() && rows[i].answering.next_attempt() == Some(attempt)
            })
            .collect();
        if attempt > 0 {
            reask_prefill(model, ctx, &mut rows, &asking);
        }
        decode_answers(study, model, &mut rows, &asking, attempt);
        let ms = started.elapsed().as_secs_f64() * 1e3 / asking.len() as f64;
        for &i in &asking {
            rows[i].ms += ms;
        }
    }
    for row in rows {
        out[row.at] = Some((
            match row.failed {
                Some(e) => Err(e),
                None => row.answering.finish(),
            },
            row.ms,
        ));
    }
    out
}

/// The answer loop of an item row (its instrument, item and the question asked) and
/// its prompt's tokens, which the row's cache holds to begin with.
fn row_for<'a>(
    study: &'a Study,
    lib: &'a Library,
    ctx: &'a GroupContext,
    trial: &'a Trial,
) -> Result<(Answering<'a>, Vec<u32>)> {
    let instrument = trial
        .question
        .instrument()
        .ok_or_else(|| Error::Run("internal: not an item trial".into()))?;
    let ins = &lib.instruments[instrument];
    let item_def = trial
        .question
        .item()
        .and_then(|id| ins.items.iter().find(|i| i.id == id));
    let prompt = ctx.prompt(&trial.id)?;
    let mut conversation = ctx.messages.clone();
    conversation.push(Message::user(prompt.question.clone()));
    let answering = Answering::new(
        study,
        lib,
        trial,
        (ins, item_def),
        &prompt.labels,
        conversation,
    );
    Ok((answering, prompt.tokens.clone()))
}

/// Prefills the re-ask turn of every asking row in one ragged pass: each row keeps the
/// longest token prefix its re-rendered conversation shares with what it has cached
/// (at least the group's shared prefix; else it starts again from that prefix alone)
/// and computes the rest.
fn reask_prefill(model: &Model, ctx: &GroupContext, rows: &mut [Row<'_>], asking: &[usize]) {
    let mut extending: Vec<(usize, KvCache, Vec<u32>, Vec<u32>)> = Vec::new();
    for &i in asking {
        match reask_start(model, ctx, &mut rows[i]) {
            Ok((cache, suffix, conversation)) => extending.push((i, cache, suffix, conversation)),
            Err(e) => rows[i].failed = Some(e),
        }
    }
    if extending.is_empty() {
        return;
    }
    let suffixes: Vec<Vec<u32>> = extending.iter().map(|e| e.2.clone()).collect();
    let mut caches: Vec<KvCache> = extending
        .iter_mut()
        .map(|e| std::mem::take(&mut e.1))
        .collect();
    let extended = extend_caches(model, &suffixes, &mut caches);
    match extended {
        Ok(logits) => {
            for (((i, _, _, conversation), cache), logits) in
                extending.into_iter().zip(caches).zip(logits)
            {
                let row = &mut rows[i];
                row.cache = Some(cache);
                row.logits = logits;
                row.cached_tokens = conversation;
            }
        }
        Err(e) => {
            let why = e.to_string();
            for (i, ..) in extending {
                rows[i].failed = Some(Error::Run(format!("a re-ask's prefill failed: {why}")));
            }
        }
    }
}

/// Where a row's re-ask starts: the cache to extend, the tokens to extend it with, and
/// the whole re-rendered conversation's tokens.
fn reask_start(
    model: &Model,
    ctx: &GroupContext,
    row: &mut Row<'_>,
) -> Result<(KvCache, Vec<u32>, Vec<u32>)> {
    let tokens = model.tokenizer.encode(
        &model.render_chat(&for_template(
            &ctx.acknowledgement,
            row.answering.conversation(),
        ))?,
        false,
    )?;
    let common = tokens
        .iter()
        .zip(&row.cached_tokens)
        .take_while(|(a, b)| a == b)
        .count()
        .min(tokens.len().saturating_sub(1));
    let shared = ctx.shared.len();
    match row.cache.take() {
        Some(mut cache) if common >= shared => {
            cache.truncate(common)?;
            let suffix = tokens[common..].to_vec();
            Ok((cache, suffix, tokens))
        }
        // No cache (the fixed-plan path: the row alone, a composition of its own), or
        // one that shares less than the group's prefix.
        _ => {
            let suffix = ctx.after_shared(&tokens)?.to_vec();
            Ok((ctx.cache.clone(), suffix, tokens))
        }
    }
}

/// Extends cache i with suffix i and returns each row's last-position logits: one
/// ragged pass where the kernels are batch-invariant (each row's bits those of
/// `last_logits` alone), row by row otherwise. Not `generate::extend_each`: its lone
/// rows go through `forward_keeping`, and a re-ask has always been `last_logits`, whose
/// bits the other kernels keep only on that same call.
fn extend_caches(
    model: &Model,
    suffixes: &[Vec<u32>],
    caches: &mut [KvCache],
) -> Result<Vec<Vec<f32>>> {
    if suffixes.len() == 1 || !model.transformer.batch_invariant() {
        return suffixes
            .iter()
            .zip(caches.iter_mut())
            .map(|(s, c)| Ok(model.transformer.last_logits(s, c)?))
            .collect();
    }
    Ok(model.transformer.last_logits_ragged(suffixes, caches)?)
}

/// Decodes attempt `attempt` of every asking row (a first attempt the unit decoded
/// already is taken as it is) and records each reply.
fn decode_answers(
    study: &Study,
    model: &Model,
    rows: &mut [Row<'_>],
    asking: &[usize],
    attempt: usize,
) {
    let mut sampled: Vec<(usize, Vec<u32>)> = Vec::new();
    let mut decoding: Vec<usize> = Vec::new();
    for &i in asking {
        if rows[i].failed.is_some() {
            continue;
        }
        match rows[i].first.take().filter(|_| attempt == 0) {
            Some(first) => sampled.push((i, first)),
            None if rows[i].cache.is_some() => decoding.push(i),
            None => {
                rows[i].failed = Some(Error::Run(
                    "internal: an item's answer has neither a cache nor a decoded first attempt"
                        .into(),
                ))
            }
        }
    }
    if !decoding.is_empty() {
        let decoded = study_sampling(study).and_then(|sampling| {
            let mut rngs: Vec<_> = decoding
                .iter()
                .map(|&i| {
                    Stream::Answer {
                        trial: &rows[i].answering.trial.id,
                        attempt,
                    }
                    .rng(study.seed)
                })
                .collect();
            let single: Vec<bool> = decoding
                .iter()
                .map(|&i| rows[i].answering.single())
                .collect();
            // Forks of the rows' caches, decoded while the caches live on, as a lone
            // decode does: each fork then starts a segment of its own for the answer, so
            // the segments, and the attention's order of sums, are the lone decode's.
            decode_each(
                model,
                decoding
                    .iter()
                    .map(|&i| rows[i].cache.clone().expect("checked"))
                    .collect(),
                decoding.iter().map(|&i| rows[i].logits.clone()).collect(),
                &sampling,
                &mut rngs,
                study.max_answer_tokens,
                |r, tokens| Ok(!single[r] || !first_line_complete(model, tokens)?),
            )
        });
        match decoded {
            Ok(results) => {
                for (&i, result) in decoding.iter().zip(results) {
                    match result {
                        Ok((tokens, after, _)) => {
                            // `after` holds the prompt plus the sampled tokens (maybe all
                            // but the last); a re-ask's common prefix copes with either.
                            if !tokens.is_empty() {
                                rows[i].cache = Some(after);
                            }
                            sampled.push((i, tokens));
                        }
                        Err(e) => rows[i].failed = Some(e),
                    }
                }
            }
            Err(e) => {
                let why = e.to_string();
                for &i in &decoding {
                    rows[i].failed =
                        Some(Error::Run(format!("decoding the answers failed: {why}")));
                }
            }
        }
    }
    for (i, tokens) in sampled {
        let row = &mut rows[i];
        match model.tokenizer.decode(&tokens) {
            Ok(reply) => {
                if !tokens.is_empty() && row.cache.is_some() {
                    row.cached_tokens
                        .extend_from_slice(&tokens[..tokens.len() - 1]);
                }
                row.answering.record(reply, tokens.len());
            }
            Err(e) => row.failed = Some(e),
        }
    }
}

/// A reply up to the end of its first non-empty line (newline included): what the
/// local engine decodes for an answer, applied to a server's text.
pub(crate) fn through_first_line(reply: &str) -> &str {
    let start = reply.len() - reply.trim_start().len();
    match reply[start..].find('\n') {
        Some(i) => &reply[..start + i + 1],
        None => reply,
    }
}

/// For answers: stop once a non-empty first line is complete. An answer is read from the
/// first number or label, which later text cannot change.
pub(super) fn first_line_complete(model: &Model, tokens: &[u32]) -> Result<bool> {
    let text = model.tokenizer.decode(tokens)?;
    Ok(text
        .trim_start()
        .split_once('\n')
        .is_some_and(|(line, _)| !line.trim().is_empty()))
}

/// The value an answer gives, or why it could not be read. With all items in one turn
/// the value is the instrument's score over the items read (each reverse-keyed).
fn read_answer(
    ins: &Instrument,
    labels: &[(String, usize)],
    single: bool,
    reply: &str,
) -> std::result::Result<f64, String> {
    let one = |text: &str| -> std::result::Result<f64, String> {
        match &ins.response {
            Response::Numeric { min, max, .. } => {
                parse_number(text, *min as f64, *max as f64).map_err(|e| format!("{e:?}"))
            }
            Response::Options(opts) => {
                let shown: Vec<String> = labels.iter().map(|(l, _)| l.clone()).collect();
                parse_label(text, &shown)
                    .map(|pos| opts[labels[pos].1].value)
                    .map_err(|e| format!("{e:?}"))
            }
        }
    };
    if single {
        return one(reply);
    }
    let parts = split_numbered(reply, ins.items.len());
    let mut keyed = Vec::new();
    for (item, part) in ins.items.iter().zip(parts) {
        let v = one(part
            .as_deref()
            .ok_or_else(|| format!("no answer for statement {}", item.id))?)?;
        keyed.push(Some(ins.keyed_value(item, v)));
    }
    ins.score(&keyed).ok_or_else(|| "no items".to_string())
}
