//! The model-as-judge's questions prefilled from what they share. The judge asks every
//! completion in a fresh conversation that opens the same way (system prompt, chat
//! template, the instruction up to the text) and asks it once per label order, the two
//! prompts differing only at the end; asked alone, each question prefilled all of it.
//! `PrefixSharing` keeps the prompt prefix its questions had in common and extends a fork
//! of it per question. With the packed kernels that gives each question the bits of its
//! own full prefill: they compute each position on its own and each attention score in
//! one chain over the keys, whichever cache segment holds them
//! (`tests/determinism.rs` compares the two). With kernels that are not batch-invariant
//! each question is asked alone, as `Model` asks it.

use super::group::{common_len, shared_prefix};
use super::readouts::{label_distribution, ConversationScorer, OptionAsk};
use crate::chat::Message;
use crate::error::{Error, Result};
use crate::generate::extend_each;
use crate::model::{KvCache, Model};
use std::sync::Mutex;

/// A model as a judge that prefills a shared prompt prefix once.
pub struct PrefixSharing<'m> {
    pub model: &'m Model,
    /// The tokens the last questions had in common, prefilled: the next questions start
    /// from as much of it as they share (a cache truncates without copying).
    shared: Mutex<Option<(Vec<u32>, KvCache)>>,
}

impl<'m> PrefixSharing<'m> {
    pub fn new(model: &'m Model) -> Self {
        Self {
            model,
            shared: Mutex::new(None),
        }
    }

    /// How many prompt tokens the last questions shared (prefilled once for them).
    pub fn shared_tokens(&self) -> usize {
        self.shared
            .lock()
            .map_or(0, |s| s.as_ref().map_or(0, |(p, _)| p.len()))
    }
}

impl ConversationScorer for PrefixSharing<'_> {
    fn option_distribution(
        &self,
        conversation: &[Message],
        labels: &[String],
    ) -> Result<(Vec<f64>, f64)> {
        let ask = OptionAsk {
            conversation: conversation.to_vec(),
            labels: labels.to_vec(),
        };
        let mut answers = self.option_distributions(std::slice::from_ref(&ask))?;
        Ok(answers.remove(0))
    }

    fn option_distributions(&self, asks: &[OptionAsk]) -> Result<Vec<(Vec<f64>, f64)>> {
        let model = self.model;
        if asks.is_empty() {
            return Ok(Vec::new());
        }
        if !model.transformer.batch_invariant() {
            return asks
                .iter()
                .map(|a| model.option_distribution(&a.conversation, &a.labels))
                .collect();
        }
        let tokens = asks
            .iter()
            .map(|a| {
                model
                    .tokenizer
                    .encode(&model.render_chat(&a.conversation)?, false)
            })
            .collect::<Result<Vec<_>>>()?;
        if tokens.iter().any(|t| t.is_empty()) {
            return Err(Error::Run("a judge prompt rendered to no tokens".into()));
        }
        // Each question keeps at least its last token to compute: its logits.
        let common = shared_prefix(tokens.iter().map(Vec::as_slice)).len();
        let mut shared = self
            .shared
            .lock()
            .map_err(|_| Error::Run("internal: the judge's prefix lock was poisoned".into()))?;
        let (mut cache, mut done) = match shared.as_ref() {
            Some((prefix, cache)) => {
                let n = common_len(prefix, &tokens[0][..common]);
                let mut cache = cache.clone();
                cache.truncate(n)?;
                (cache, n)
            }
            None => (KvCache::new(model.transformer.config.n_layer), 0),
        };
        if common > done {
            let suffix = tokens[0][done..common].to_vec();
            cache = extend_each(model, vec![cache], &[suffix])?.remove(0).0;
            done = common;
        }
        *shared = Some((tokens[0][..done].to_vec(), cache.clone()));
        drop(shared);
        let suffixes: Vec<Vec<u32>> = tokens.iter().map(|t| t[done..].to_vec()).collect();
        let rows = extend_each(model, vec![cache; asks.len()], &suffixes)?;
        rows.into_iter()
            .zip(asks)
            .map(|((cache, logits), ask)| label_distribution(model, &cache, &logits, &ask.labels))
            .collect()
    }
}
