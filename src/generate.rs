//! Token-by-token generation for one sequence: prefill, then sample until a stop token
//! or the token limit, streaming each piece of text as it is decoded.

use crate::error::{Error, Result};
use crate::model::{KvCache, Model};
use crate::sampling::{sample, sequence_rng, Sampling};
use std::time::Instant;

/// What a generation did, with its throughput.
#[derive(Debug, Clone)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    pub tokens: Vec<u32>,
    pub text: String,
    pub stopped_by: StopReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    StopToken,
    MaxTokens,
    /// The caller's `keep_going` said stop.
    Caller,
}

impl GenerationStats {
    pub fn prefill_tok_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_seconds.max(1e-9)
    }
    /// Decode throughput counts tokens produced after the first (the first comes from
    /// the prefill's logits).
    pub fn decode_tok_s(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / self.decode_seconds.max(1e-9)
    }
}

/// Generates up to `max_tokens` after `prompt`, calling `on_text` with each new piece.
/// The RNG stream is `sequence_rng(seed, sequence_id)`.
pub fn generate(
    model: &Model,
    prompt: &[u32],
    sampling: &Sampling,
    seed: u64,
    sequence_id: &str,
    max_tokens: usize,
    mut on_text: impl FnMut(&str),
) -> Result<GenerationStats> {
    let context = model.transformer.max_positions();
    if prompt.is_empty() {
        return Err(Error::Sampling("the prompt is empty".into()));
    }
    if prompt.len() + max_tokens > context {
        return Err(Error::ContextOverflow { tokens: prompt.len() + max_tokens, context });
    }
    let mut rng = sequence_rng(seed, sequence_id);
    let mut cache = KvCache::new(model.transformer.config.n_layer);
    let start = Instant::now();
    let logits = model.transformer.last_logits(prompt, &mut cache)?;
    let prefill_seconds = start.elapsed().as_secs_f64();
    let decode_start = Instant::now();
    let mut printed = String::new();
    let (tokens, _, stopped_by) = decode(model, cache, logits, sampling, &mut rng, max_tokens, |tokens| {
        // Decode the whole continuation and print what is new, so multi-token characters
        // (emoji, CJK) appear only once complete.
        let text = model.tokenizer.decode(tokens)?;
        if text.len() > printed.len() && !text.ends_with('\u{FFFD}') && text.starts_with(&printed) {
            on_text(&text[printed.len()..]);
            printed = text;
        }
        Ok(true)
    })?;
    let text = model.tokenizer.decode(&tokens)?;
    if text.len() > printed.len() && text.starts_with(&printed) {
        on_text(&text[printed.len()..]);
    }
    Ok(GenerationStats {
        prompt_tokens: prompt.len(),
        generated_tokens: tokens.len(),
        prefill_seconds,
        decode_seconds: decode_start.elapsed().as_secs_f64(),
        tokens,
        text,
        stopped_by,
    })
}

/// Continues a sequence from `cache`, whose last-position logits are `logits`: samples up
/// to `max_tokens`, stopping at a stop token or when `keep_going(tokens so far)` returns
/// false. Returns the sampled tokens, the cache (holding every sampled token but the
/// last, or all of them when a stop token ended the turn) and why it stopped.
pub fn decode(
    model: &Model,
    mut cache: KvCache,
    mut logits: Vec<f32>,
    sampling: &Sampling,
    rng: &mut rand_chacha::ChaCha20Rng,
    max_tokens: usize,
    mut keep_going: impl FnMut(&[u32]) -> Result<bool>,
) -> Result<(Vec<u32>, KvCache, StopReason)> {
    let mut tokens = Vec::new();
    while tokens.len() < max_tokens {
        let next = sample(&logits, sampling, rng);
        if model.tokenizer.stop_ids.contains(&next) {
            return Ok((tokens, cache, StopReason::StopToken));
        }
        tokens.push(next);
        if !keep_going(&tokens)? {
            return Ok((tokens, cache, StopReason::Caller));
        }
        if tokens.len() < max_tokens {
            logits = model.transformer.last_logits(&[next], &mut cache)?;
        }
    }
    Ok((tokens, cache, StopReason::MaxTokens))
}
