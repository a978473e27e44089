//! A conversation group's shared work: its prefix (with any generated protocol turns),
//! every member trial's rendered prompt, the KV cache of the token prefix they all share
//! (computed over all members, done or not, so a resumed run computes exactly what an
//! uninterrupted one does), and how its pending trials are scheduled: items in units
//! prefilled together, completions decoded in lockstep per prompt.

use super::plan::{Group, Question, Trial};
use super::prompt::{for_template, prefix_steps, question_text, Step};
use crate::chat::Message;
use crate::error::{Error, Result};
use crate::generate::{decode_lockstep, generate};
use crate::model::{Keep, KvCache, LogitsAt, Model};
use crate::rng::Stream;
use crate::sampling::{Sampling, SamplingParams};
use crate::scenario::study::{Acknowledgement, ConditionSetup, CONTENT_FREE};
use crate::scenario::{Library, Study};
use std::collections::BTreeMap;

/// One trial's rendered question and prompt.
#[derive(Clone, Default)]
pub struct TrialPrompt {
    /// The question turn's text.
    pub question: String,
    /// Answer labels in display order, with the option each stands for.
    pub labels: Vec<(String, usize)>,
    /// The whole rendered prompt and its tokens.
    pub text: String,
    pub tokens: Vec<u32>,
}

/// A group's rendered prompts, and the KV cache of the part they all share.
pub struct GroupContext {
    /// The prefix conversation (before the question turn).
    pub messages: Vec<Message>,
    /// What follows each text in the group's condition (how the template receives the
    /// conversation when a re-ask extends it).
    pub acknowledgement: Acknowledgement,
    pub prompts: BTreeMap<String, TrialPrompt>,
    /// The token prefix every member's prompt starts with.
    pub shared: Vec<u32>,
    pub cache: KvCache,
    /// The residual stream after each captured block, averaged over the shared prefix's
    /// positions (empty without capture).
    pub prefix_states: Vec<Vec<f32>>,
    /// The blocks captured (empty: none).
    pub capture: Vec<usize>,
    /// The steering of the group's condition, as its trials record it.
    pub steering: Option<crate::results::trial::TrialSteering>,
}

/// The sampling every read-out of a study uses.
pub fn study_sampling(study: &Study) -> Result<Sampling> {
    SamplingParams {
        temperature: study.temperature,
        ..Default::default()
    }
    .resolve()
}

/// A group's conversation before its questions, and every member's rendered prompt:
/// the part of a group's work that needs only a chat template, a tokenizer and a way to
/// generate its protocol turns (a local model or a server).
pub struct RenderedGroup {
    pub messages: Vec<Message>,
    pub acknowledgement: Acknowledgement,
    pub prompts: BTreeMap<String, TrialPrompt>,
}

/// How a group's text is made: the chat template, the tokenizer, and the generation of
/// a protocol turn (its conversation so far as the template receives it, its stream,
/// its most tokens) as trimmed text.
pub struct Renderer<'a> {
    pub render: &'a dyn Fn(&[Message]) -> Result<String>,
    pub encode: &'a dyn Fn(&str) -> Result<Vec<u32>>,
    pub generate_turn: &'a TurnGenerator<'a>,
}

/// Generates one protocol turn: the conversation so far, its stream, its most tokens.
pub type TurnGenerator<'a> = dyn Fn(&[Message], Stream<'_>, usize) -> Result<String> + 'a;

/// Renders a group: its prefix conversation (generating its protocol turns, each on its
/// own stream) and each member's prompt.
pub fn render_group(
    study: &Study,
    lib: &Library,
    group: &Group,
    members: &[&Trial],
    renderer: &Renderer<'_>,
) -> Result<RenderedGroup> {
    // The content-free prompts' conversation holds only the system prompt.
    let condition = if group.condition == CONTENT_FREE {
        None
    } else {
        Some(
            study
                .condition(&group.condition)
                .ok_or_else(|| internal("a planned condition is missing from the study"))?,
        )
    };
    let acknowledgement = condition
        .map_or(&study.acknowledgement, |c| study.acknowledgement_in(c))
        .clone();
    let default_setup = ConditionSetup::default();
    let setup = condition.map_or(&default_setup, |c| &c.setup);
    let mut messages = Vec::new();
    for (step, item) in prefix_steps(study, lib, condition, group)
        .into_iter()
        .enumerate()
    {
        match item {
            Step::Message(m) => messages.push(m),
            Step::Generate { max_tokens } => {
                let stream = Stream::ProtocolTurn {
                    group: &group.id,
                    step,
                };
                let text = (renderer.generate_turn)(
                    &for_template(&acknowledgement, &messages),
                    stream,
                    max_tokens,
                )?;
                messages.push(Message::assistant(text));
            }
        }
    }
    let mut prompts = BTreeMap::new();
    for t in members {
        let q = question_text(lib, &t.question, setup);
        let mut conv = messages.clone();
        conv.push(Message::user(q.text.clone()));
        let text = (renderer.render)(&for_template(&acknowledgement, &conv))?;
        let tokens = (renderer.encode)(&text)?;
        prompts.insert(
            t.id.clone(),
            TrialPrompt {
                question: q.text,
                labels: q.labels,
                text,
                tokens,
            },
        );
    }
    Ok(RenderedGroup {
        messages,
        acknowledgement,
        prompts,
    })
}

impl GroupContext {
    pub fn build(
        study: &Study,
        lib: &Library,
        model: &Model,
        group: &Group,
        members: &[&Trial],
        capture: &[usize],
        steering: Option<crate::results::trial::TrialSteering>,
    ) -> Result<Self> {
        let sampling = study_sampling(study)?;
        let render = |m: &[Message]| model.render_chat(m);
        let encode = |text: &str| model.tokenizer.encode(text, false);
        let generate_turn = |m: &[Message], stream: Stream<'_>, max_tokens: usize| {
            let tokens = model.tokenizer.encode(&model.render_chat(m)?, false)?;
            let g = generate(
                model,
                &tokens,
                &sampling,
                study.seed,
                stream,
                max_tokens,
                |_| {},
            )?;
            Ok(g.text.trim().to_string())
        };
        let RenderedGroup {
            messages,
            acknowledgement,
            prompts,
        } = render_group(
            study,
            lib,
            group,
            members,
            &Renderer {
                render: &render,
                encode: &encode,
                generate_turn: &generate_turn,
            },
        )?;
        let shared = shared_prefix(prompts.values().map(|p| p.tokens.as_slice()));
        let context = model.transformer.max_positions();
        if let Some(longest) = prompts.values().map(|p| p.tokens.len()).max() {
            if longest + study.max_answer_tokens * (study.max_reasks + 2) + 64 > context {
                return Err(Error::ContextOverflow {
                    tokens: longest,
                    context,
                });
            }
        }
        let mut cache = KvCache::new(model.transformer.config.n_layer);
        let mut prefix_states = vec![vec![0f32; model.transformer.config.d_model]; capture.len()];
        if !shared.is_empty() {
            let (_, taps) = model.transformer.forward_keeping(
                std::slice::from_ref(&shared),
                &mut cache,
                &LogitsAt::Last,
                capture,
                Keep::Mean,
            )?;
            prefix_states = taps
                .iter()
                .map(|t| t.squeeze(0)?.to_vec1::<f32>())
                .collect::<candle_core::Result<_>>()?;
        }
        Ok(Self {
            messages,
            acknowledgement,
            prompts,
            shared,
            cache,
            prefix_states,
            capture: capture.to_vec(),
            steering,
        })
    }

    /// The rendered prompt of a member trial.
    pub fn prompt(&self, trial_id: &str) -> Result<&TrialPrompt> {
        self.prompts
            .get(trial_id)
            .ok_or_else(|| internal("a trial's prompt was not rendered with its group"))
    }

    /// A cache holding `tokens` (which must start with the shared prefix) and the logits
    /// at its last position.
    pub fn extend(&self, model: &Model, tokens: &[u32]) -> Result<(KvCache, Vec<f32>)> {
        let suffix = self.after_shared(tokens)?;
        let mut cache = self.cache.clone();
        let logits = model.transformer.last_logits(suffix, &mut cache)?;
        Ok((cache, logits))
    }

    /// The tokens of `tokens` after the shared prefix it must start with (at least one).
    pub fn after_shared<'t>(&self, tokens: &'t [u32]) -> Result<&'t [u32]> {
        if tokens.len() <= self.shared.len() || tokens[..self.shared.len()] != self.shared[..] {
            return Err(internal(
                "a prompt does not start with its group's shared prefix",
            ));
        }
        Ok(&tokens[self.shared.len()..])
    }
}

/// The longest common token prefix of all prompts, leaving each at least one token of
/// its own (the last prompt token's logits are the answer position's).
pub(crate) fn shared_prefix<'a>(mut prompts: impl Iterator<Item = &'a [u32]>) -> Vec<u32> {
    let Some(first) = prompts.next() else {
        return Vec::new();
    };
    let mut shared = first[..first.len().saturating_sub(1)].to_vec();
    for p in prompts {
        shared.truncate(common_len(&shared, p).min(p.len().saturating_sub(1)));
    }
    shared
}

/// How many leading tokens `a` and `b` have in common.
pub(crate) fn common_len(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn internal(what: &str) -> Error {
    Error::Run(format!("internal: {what}"))
}

/// A completion trial's sampled tokens, or why its prompt's decoding failed.
pub type CompletionTokens = std::result::Result<Vec<u32>, String>;

/// The sampled completions of a group's pending completion trials, decoded in lockstep
/// batches of the trials that share a prompt (a stem's repeated completions). Each
/// trial keeps its own random stream. A lone pending completion (after a resume) takes
/// the same path as a batch of one: the KV cache is then split into the same segments
/// (shared prefix | prompt tail | sampled tokens) as in a batch, and the attention sums
/// over segments in the same order, so its tokens are bit-identical (tested).
pub fn lockstep_completions(
    study: &Study,
    model: &Model,
    ctx: &GroupContext,
    pending: &[&Trial],
    batch_size: usize,
) -> Result<BTreeMap<String, CompletionTokens>> {
    let by_prompt = completions_by_prompt(ctx, pending)?;
    let sampling = study_sampling(study)?;
    let max = completion_tokens(study);
    let mut out = BTreeMap::new();
    for (tokens, trials) in by_prompt {
        let mut rngs: Vec<_> = trials
            .iter()
            .map(|t| Stream::Completion { trial: &t.id }.rng(study.seed))
            .collect();
        let decoded = ctx.extend(model, tokens).and_then(|(cache, logits)| {
            decode_lockstep(
                model, &cache, &logits, &sampling, &mut rngs, max, batch_size,
            )
        });
        match decoded {
            Ok(rows) => {
                for (t, (sampled, _)) in trials.iter().zip(rows) {
                    out.insert(t.id.clone(), Ok(sampled));
                }
            }
            // The prompt's trials fail (and are recorded so); the rest of the group goes on.
            Err(e) => {
                for t in &trials {
                    out.insert(t.id.clone(), Err(e.to_string()));
                }
            }
        }
    }
    Ok(out)
}

/// `lockstep_completions` on the fixed-plan path: the rows decoded together are all of
/// the group's completion trials that share a prompt (done or not), in plan order, in
/// chunks of `batch_size`, so a trial's batch, and with it its bits, is the same in an
/// uninterrupted run, a resumed one and any shard. Only chunks holding a trial still to
/// run are computed; the map holds every trial of those chunks.
pub fn fixed_plan_completions(
    study: &Study,
    model: &Model,
    ctx: &GroupContext,
    members: &[&Trial],
    todo: &std::collections::HashSet<&str>,
    batch_size: usize,
) -> Result<BTreeMap<String, CompletionTokens>> {
    let by_prompt = completions_by_prompt(ctx, members)?;
    let sampling = study_sampling(study)?;
    let max = completion_tokens(study);
    let mut out = BTreeMap::new();
    for (tokens, trials) in by_prompt {
        let chunks: Vec<&[&Trial]> = trials
            .chunks(batch_size.max(1))
            .filter(|c| c.iter().any(|t| todo.contains(t.id.as_str())))
            .collect();
        if chunks.is_empty() {
            continue;
        }
        let prompt = ctx.extend(model, tokens);
        for chunk in chunks {
            let decoded = prompt
                .as_ref()
                .map_err(|e| e.to_string())
                .and_then(|(cache, logits)| {
                    let mut rngs: Vec<_> = chunk
                        .iter()
                        .map(|t| Stream::Completion { trial: &t.id }.rng(study.seed))
                        .collect();
                    crate::model::UnitKv::new(&model.transformer, cache, chunk.len(), max)
                        .map_err(Error::from)
                        .and_then(|kv| {
                            crate::unit_work::decode_lockstep(
                                model,
                                kv,
                                vec![logits.clone(); chunk.len()],
                                &sampling,
                                &mut rngs,
                                max,
                                |_, _| Ok(true),
                            )
                        })
                        .map_err(|e| e.to_string())
                });
            match decoded {
                Ok(rows) => {
                    for (t, (sampled, _)) in chunk.iter().zip(rows) {
                        out.insert(t.id.clone(), Ok(sampled));
                    }
                }
                Err(e) => {
                    for t in chunk {
                        out.insert(t.id.clone(), Err(e.clone()));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The completion trials among `trials`, by the prompt they continue, in plan order.
fn completions_by_prompt<'c, 't>(
    ctx: &'c GroupContext,
    trials: &[&'t Trial],
) -> Result<BTreeMap<&'c [u32], Vec<&'t Trial>>> {
    let mut by_prompt: BTreeMap<&[u32], Vec<&Trial>> = BTreeMap::new();
    for t in trials
        .iter()
        .filter(|t| matches!(t.question, Question::Completion { .. }))
    {
        by_prompt
            .entry(&ctx.prompt(&t.id)?.tokens)
            .or_default()
            .push(t);
    }
    Ok(by_prompt)
}

/// Most tokens a completion samples.
pub(crate) fn completion_tokens(study: &Study) -> usize {
    study
        .completion
        .as_ref()
        .map(|c| c.max_tokens)
        .unwrap_or(24)
}

/// The order a group's pending trials run in: completions one by one (their tokens
/// come from the lockstep batch), then item trials in units of at most `batch_size`, in
/// plan order (each unit prefilled together, whatever the lengths of its members).
pub fn work_units<'a>(pending: &[&'a Trial], batch_size: usize) -> Vec<Vec<&'a Trial>> {
    let (items, completions): (Vec<&Trial>, Vec<&Trial>) =
        pending.iter().partition(|t| t.question.is_item());
    let mut units: Vec<Vec<&Trial>> = completions.into_iter().map(|t| vec![t]).collect();
    units.extend(items.chunks(batch_size.max(1)).map(|c| c.to_vec()));
    units
}

#[cfg(test)]
mod tests {
    use super::{common_len, shared_prefix};

    #[test]
    fn common_len_counts_the_leading_tokens_two_sequences_share() {
        assert_eq!(common_len(&[1, 2, 3], &[1, 2, 3]), 3);
        assert_eq!(common_len(&[1, 2, 3], &[1, 2, 4]), 2);
        assert_eq!(common_len(&[1, 2], &[1, 2, 3]), 2);
        assert_eq!(common_len(&[1, 2, 3], &[5]), 0);
        assert_eq!(common_len(&[], &[1]), 0);
    }

    #[test]
    fn the_shared_prefix_leaves_every_prompt_a_token_of_its_own() {
        let a: &[u32] = &[1, 2, 3, 4];
        let b: &[u32] = &[1, 2, 3, 5, 6];
        assert_eq!(shared_prefix([a, b].into_iter()), vec![1, 2, 3]);
        assert_eq!(shared_prefix([a, a].into_iter()), vec![1, 2, 3]);
        assert_eq!(shared_prefix([&a[..2], b].into_iter()), vec![1]);
        assert!(shared_prefix(std::iter::empty()).is_empty());
    }
}
