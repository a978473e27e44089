//! A study's trials on server models: each group rendered with the model's template
//! (`group::render_group`, as for a local run), its pending trials sent at most
//! `max_in_flight` at a time, and their records written in plan order. The read-outs
//! are the local ones over HTTP: option probabilities from the server's
//! log-probabilities, answers sampled with a per-request seed drawn from the trial's
//! own stream, read by the same parser with the same re-asks.
//!
//! A server that stops answering (after every retry) ends the run as interrupted: the
//! records finished before it are kept, none is written for a trial that did not
//! finish, and `--resume` completes the run once the server is back. A request the
//! server keeps failing (HTTP 500) leaves its trial unrecorded (the run ends `partial`,
//! never `success`), and a reply from another model than the run's first stops it.

use super::answers::{answer_with_reasks, through_first_line, Answering};
use super::group::{render_group, RenderedGroup, Renderer, TrialPrompt};
use super::plan::{GroupToRun, Plan, Question, Trial};
use super::progress::Progress;
use super::prompt::{for_template, question_text};
use super::readouts::{
    base_record_for, choice_readout, item_options, judge_content_free, judge_valence,
    ConversationScorer, JudgeBias,
};
use super::run_dir::RunDir;
use super::runner::{write_record, Tally};
use crate::chat::Message;
use crate::error::{Error, Result};
use crate::option_scoring::normalise;
use crate::results::{Timing, TrialRecord};
use crate::rng::Stream;
use crate::scenario::study::ConditionSetup;
use crate::scenario::{Library, Study};
use crate::server::model::{Prompt, Sample, ServerModel};
use rand::Rng;
use std::collections::HashSet;
use std::time::Instant;

/// A generation at the study's temperature, seeded from `stream`: the same trial asks
/// with the same seed in any run, resume or shard. The seed is below 2^31, which every
/// server's seed field takes.
fn sample(study: &Study, max_tokens: usize, stream: Stream<'_>) -> Sample {
    Sample {
        temperature: f64::from(study.temperature),
        max_tokens,
        seed: u64::from(stream.rng(study.seed).random::<u32>() >> 1),
    }
}

impl ConversationScorer for ServerModel {
    fn option_distribution(
        &self,
        conversation: &[Message],
        labels: &[String],
    ) -> Result<(Vec<f64>, f64)> {
        let (text, tokens) = self.rendered(conversation)?;
        let options = labels
            .iter()
            .map(|l| self.tokenizer.encode(l, false))
            .collect::<Result<Vec<_>>>()?;
        let (lps, _) = self.option_logprobs(
            &Prompt {
                messages: conversation,
                text: &text,
                tokens: &tokens,
            },
            &options,
        )?;
        Ok(normalise(&lps))
    }
}

/// Refuses, before anything runs, a choice read-out the servers cannot give: no
/// log-probabilities at all, or only a top list and a label longer than one token.
pub(super) fn check_servers_can_run(
    study: &Study,
    lib: &Library,
    servers: &[ServerModel],
    plan: &Plan,
    pending: &[&Trial],
) -> Result<()> {
    let default_setup = ConditionSetup::default();
    let mut seen = HashSet::new();
    for t in pending {
        let group = &plan.groups[t.group];
        let (Question::Item { instrument, .. } | Question::ContentFree { instrument, .. }) =
            &t.question
        else {
            continue;
        };
        let setup = study
            .condition(&group.condition)
            .map_or(&default_setup, |c| &c.setup);
        let labels = question_text(lib, &t.question, setup).labels;
        if !seen.insert((group.model.clone(), instrument.clone(), labels.clone())) {
            continue;
        }
        let server = server_for(servers, &group.model)?;
        if let Some(options) = item_options(
            study,
            &server.tokenizer,
            &lib.instruments[instrument],
            &labels,
        )? {
            if let Some(why) = server.option_readout_refusal(&options.tokens) {
                return Err(Error::Server(why));
            }
        }
    }
    Ok(())
}

fn server_for<'a>(servers: &'a [ServerModel], label: &str) -> Result<&'a ServerModel> {
    servers
        .iter()
        .find(|s| s.label == label)
        .ok_or_else(|| Error::Run("internal: a planned server model is not connected".into()))
}

/// Runs the pending trials group by group, at most `max_in_flight` requests at a time,
/// appending each record in plan order.
#[allow(clippy::too_many_arguments)]
pub(super) fn execute_on_servers(
    study: &Study,
    lib: &Library,
    servers: &[ServerModel],
    plan: &Plan,
    pending: &[&Trial],
    max_in_flight: usize,
    dir: &mut RunDir,
    progress: &mut Progress,
    tally: &mut Tally,
) -> Result<()> {
    let pending_ids: HashSet<&str> = pending.iter().map(|t| t.id.as_str()).collect();
    let mut judge_bias = JudgeBias::new();
    for GroupToRun {
        group,
        members,
        todo,
    } in plan.groups_to_run(&pending_ids)
    {
        progress.set_message(format!("{} rep {}", group.condition, group.repetition + 1));
        let server = server_for(servers, &group.model)?;
        let rendered = render_on(study, lib, server, group, &members)?;
        for t in &todo {
            if let Question::Completion { task, .. } = &t.question {
                if let Some(judge) = &lib.tasks[task].judge {
                    let key = (group.model.clone(), task.clone());
                    if let std::collections::btree_map::Entry::Vacant(slot) = judge_bias.entry(key)
                    {
                        slot.insert(judge_content_free(study, server, judge)?);
                    }
                }
            }
        }
        for chunk in todo.chunks(max_in_flight.max(1)) {
            let records: Vec<Result<TrialRecord>> = std::thread::scope(|s| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|t| {
                        let (rendered, judge_bias) = (&rendered, &judge_bias);
                        s.spawn(move || {
                            run_trial(study, lib, server, group, rendered, t, judge_bias)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(Error::Run("internal error (a panic in a request)".into()))
                        })
                    })
                    .collect()
            });
            let mut unreachable = None;
            for (trial, record) in chunk.iter().zip(records) {
                let record = match record {
                    Err(e @ (Error::ServerUnreachable(_) | Error::ServerChanged(_))) => {
                        unreachable.get_or_insert(e);
                        continue;
                    }
                    // Not the trial's fault: no record, so the run ends partial and a
                    // resume asks it again instead of keeping a hole marked done.
                    Err(e @ Error::ServerFailed(_)) => {
                        tally.deferred += 1;
                        if tally.deferred == 1 || tally.deferred.is_power_of_two() {
                            progress.note(&format!(
                                "{e} ({} trial(s) left for --resume so far)",
                                tally.deferred
                            ));
                        }
                        continue;
                    }
                    Err(e) => {
                        tally.failed += 1;
                        TrialRecord {
                            error: Some(e.to_string()),
                            ..base_record_for(
                                study,
                                group,
                                trial,
                                rendered.prompts.get(&trial.id),
                                None,
                            )
                        }
                    }
                    Ok(r) => r,
                };
                write_record(dir, progress, tally, record)?;
            }
            if let Some(e) = unreachable {
                return Err(e);
            }
            if tally.deferred >= 10 && tally.deferred * 5 > tally.written + tally.deferred {
                return Err(Error::ServerFailed(format!(
                    "{} of {} requests failed on server errors (HTTP 500); stopping, every \
                     finished trial kept: fix the server, then `affectbench run --resume {}`",
                    tally.deferred,
                    tally.written + tally.deferred,
                    dir.path.display()
                )));
            }
        }
    }
    Ok(())
}

/// A group rendered on a server: its template, its tokenizer, and protocol turns
/// generated by the server with seeds from their streams.
fn render_on(
    study: &Study,
    lib: &Library,
    server: &ServerModel,
    group: &super::plan::Group,
    members: &[&Trial],
) -> Result<RenderedGroup> {
    let render = |m: &[Message]| server.render(m);
    let encode = |text: &str| server.tokenizer.encode(text, false);
    let generate_turn = |m: &[Message], stream: Stream<'_>, max_tokens: usize| {
        let (text, tokens) = server.rendered(m)?;
        let (reply, _) = server.generate(
            &Prompt {
                messages: m,
                text: &text,
                tokens: &tokens,
            },
            sample(study, max_tokens, stream),
        )?;
        Ok(reply.trim().to_string())
    };
    render_group(
        study,
        lib,
        group,
        members,
        &Renderer {
            render: &render,
            encode: &encode,
            generate_turn: &generate_turn,
        },
    )
}

fn run_trial(
    study: &Study,
    lib: &Library,
    server: &ServerModel,
    group: &super::plan::Group,
    rendered: &RenderedGroup,
    trial: &Trial,
    judge_bias: &JudgeBias,
) -> Result<TrialRecord> {
    let prompt = rendered
        .prompts
        .get(&trial.id)
        .ok_or_else(|| Error::Run("internal: a trial's prompt was not rendered".into()))?;
    let rec = base_record_for(study, group, trial, Some(prompt), None);
    match &trial.question {
        Question::Completion { .. } => {
            completion_trial(study, lib, server, rendered, trial, rec, judge_bias)
        }
        _ => item_trial(study, lib, server, rendered, prompt, trial, rec),
    }
}

/// The conversation a trial's prompt renders, as the template receives it.
fn question_conversation(rendered: &RenderedGroup, question: &str) -> Vec<Message> {
    let mut conversation = rendered.messages.clone();
    conversation.push(Message::user(question.to_string()));
    conversation
}

fn item_trial(
    study: &Study,
    lib: &Library,
    server: &ServerModel,
    rendered: &RenderedGroup,
    prompt: &TrialPrompt,
    trial: &Trial,
    mut rec: TrialRecord,
) -> Result<TrialRecord> {
    let (instrument, item) = match &trial.question {
        Question::Item {
            instrument, item, ..
        } => (instrument, item.as_ref()),
        Question::ContentFree { instrument, .. } => (instrument, None),
        Question::Completion { .. } => {
            return Err(Error::Run("internal: not an item trial".into()))
        }
    };
    let ins = &lib.instruments[instrument];
    let item_def = item.and_then(|id| ins.items.iter().find(|i| &i.id == id));
    let conversation = question_conversation(rendered, &prompt.question);
    let started = Instant::now();
    if let Some(options) = item_options(study, &server.tokenizer, ins, &prompt.labels)? {
        let messages = for_template(&rendered.acknowledgement, &conversation);
        let (lps, unobserved) = server.option_logprobs(
            &Prompt {
                messages: &messages,
                text: &prompt.text,
                tokens: &prompt.tokens,
            },
            &options.tokens,
        )?;
        if lps.iter().all(|l| *l == f64::NEG_INFINITY) {
            return Err(Error::Server(format!(
                "{}: none of the labels {:?} is among the next token's top log-probabilities",
                server.client.endpoint.describe(),
                options.shown
            )));
        }
        let (probs, mass) = normalise(&lps);
        let mut choice = choice_readout(
            study.seed,
            options.shown,
            options.values,
            probs,
            mass,
            Stream::ChoiceDraw { trial: &trial.id },
            item_def.map(|it| (ins, it)),
        )?;
        choice.unobserved = unobserved;
        rec.choice = Some(choice);
    }
    let choice_ms = started.elapsed().as_secs_f64() * 1e3;
    if trial.question.is_content_free() {
        rec.timing = Timing {
            choice_ms: Some(choice_ms),
            ..Timing::default()
        };
        return Ok(rec);
    }
    let started = Instant::now();
    let single = trial.question.item().is_some();
    let ask = |attempt: usize, conversation: &[Message]| -> Result<(String, usize)> {
        let messages = for_template(&rendered.acknowledgement, conversation);
        // The first ask is the prompt already rendered; a re-ask renders the longer
        // conversation.
        let reasked;
        let (text, tokens) = if attempt == 0 {
            (prompt.text.as_str(), prompt.tokens.as_slice())
        } else {
            reasked = server.rendered(&messages)?;
            (reasked.0.as_str(), reasked.1.as_slice())
        };
        let (reply, n) = server.generate(
            &Prompt {
                messages: &messages,
                text,
                tokens,
            },
            sample(
                study,
                study.max_answer_tokens,
                Stream::Answer {
                    trial: &trial.id,
                    attempt,
                },
            ),
        )?;
        // The local engine stops an item's answer at its first line; a server is cut
        // there instead.
        let reply = if single {
            through_first_line(&reply).to_string()
        } else {
            reply
        };
        Ok((reply, n))
    };
    rec.generate = Some(answer_with_reasks(
        Answering::new(
            study,
            lib,
            trial,
            (ins, item_def),
            &prompt.labels,
            conversation,
        ),
        ask,
    )?);
    rec.timing = Timing {
        choice_ms: Some(choice_ms),
        generate_ms: Some(started.elapsed().as_secs_f64() * 1e3),
        ..Timing::default()
    };
    Ok(rec)
}

fn completion_trial(
    study: &Study,
    lib: &Library,
    server: &ServerModel,
    rendered: &RenderedGroup,
    trial: &Trial,
    mut rec: TrialRecord,
    judge_bias: &JudgeBias,
) -> Result<TrialRecord> {
    let Question::Completion { task, stem, .. } = &trial.question else {
        return Err(Error::Run("internal: not a completion trial".into()));
    };
    let prompt = rendered
        .prompts
        .get(&trial.id)
        .ok_or_else(|| Error::Run("internal: a trial's prompt was not rendered".into()))?;
    let messages = for_template(
        &rendered.acknowledgement,
        &question_conversation(rendered, &prompt.question),
    );
    let (reply, _) = server.generate(
        &Prompt {
            messages: &messages,
            text: &prompt.text,
            tokens: &prompt.tokens,
        },
        sample(
            study,
            super::group::completion_tokens(study),
            Stream::Completion { trial: &trial.id },
        ),
    )?;
    let text = reply.trim().to_string();
    let started = Instant::now();
    let task_def = &lib.tasks[task];
    rec.continues_stem = task_def
        .stems
        .iter()
        .find(|s| &s.id == stem)
        .map(|s| s.continued_by(&text));
    if let Some(judge) = &task_def.judge {
        let bias = judge_bias
            .get(&(rec.model.clone(), task.clone()))
            .ok_or_else(|| Error::Run("internal: the judge's bias was not computed".into()))?;
        let (readout, detail) = judge_valence(study, server, judge, &text, &trial.id, bias)?;
        rec.judge = Some(readout);
        rec.judge_detail = Some(detail);
    }
    rec.completion = Some(text);
    rec.timing.judge_ms = Some(started.elapsed().as_secs_f64() * 1e3);
    Ok(rec)
}
