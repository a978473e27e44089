//! Token-by-token generation: one sequence (prefill, then sample until a stop token or
//! the token limit, streaming each piece of text as it is decoded), several
//! continuations of one prompt in lockstep, and several independent sequences in
//! lockstep (a unit's answers), each row bit-identical to its lone decode.

use crate::error::{Error, Result};
use crate::kernels::DisjointMut;
use crate::model::{Keep, KvCache, LogitsAt, Model};
use crate::rng::Stream;
use crate::sampling::{sample, Sampling};
use candle_core::{DType, IndexOp, Tensor};
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
/// Randomness comes from `stream` under `seed`.
pub fn generate(
    model: &Model,
    prompt: &[u32],
    sampling: &Sampling,
    seed: u64,
    stream: Stream<'_>,
    max_tokens: usize,
    mut on_text: impl FnMut(&str),
) -> Result<GenerationStats> {
    let context = model.transformer.max_positions();
    if prompt.is_empty() {
        return Err(Error::Sampling("the prompt is empty".into()));
    }
    if prompt.len() + max_tokens > context {
        return Err(Error::ContextOverflow {
            tokens: prompt.len() + max_tokens,
            context,
        });
    }
    let mut rng = stream.rng(seed);
    let mut cache = KvCache::new(model.transformer.config.n_layer);
    let start = Instant::now();
    let logits = model.transformer.last_logits(prompt, &mut cache)?;
    let prefill_seconds = start.elapsed().as_secs_f64();
    let decode_start = Instant::now();
    let mut printed = String::new();
    let (tokens, _, stopped_by) = decode(
        model,
        cache,
        logits,
        sampling,
        &mut rng,
        max_tokens,
        |tokens| {
            // Decode the whole continuation and print what is new, so multi-token characters
            // (emoji, CJK) appear only once complete.
            let text = model.tokenizer.decode(tokens)?;
            if text.len() > printed.len()
                && !text.ends_with('\u{FFFD}')
                && text.starts_with(&printed)
            {
                on_text(&text[printed.len()..]);
                printed = text;
            }
            Ok(true)
        },
    )?;
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

/// An error unless every logit is finite: NaN or infinite logits (a broken model file:
/// a NaN rms epsilon, corrupt tensor data) would otherwise be sampled as if they meant
/// something.
pub fn check_finite(logits: &[f32]) -> Result<()> {
    match logits.iter().position(|l| !l.is_finite()) {
        None => Ok(()),
        Some(at) => Err(Error::NonFinite(format!(
            "logit {at} of {} is {}",
            logits.len(),
            logits[at]
        ))),
    }
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
    cache.expect_growth(max_tokens);
    while tokens.len() < max_tokens {
        check_finite(&logits)?;
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

/// Samples several continuations of one prompt in lockstep, as one batch per step:
/// `cache` holds the prompt (batch 1, shared by every row without copying) and `logits`
/// its last-position logits; row i draws from `rngs[i]` only. Rows run in batches of at
/// most `batch_size`. A row that reached a stop token or `max_tokens` keeps riding along
/// (its outputs ignored) until its batch is done, because the forward pass takes
/// equal-length rows.
///
/// Each row's tokens are bit-identical to `decode` of that row alone: with packed
/// kernels every row's arithmetic is independent of the other rows (tested in
/// tests/determinism.rs), other kernels run rows one by one, and each row has its own
/// random stream.
pub fn decode_lockstep(
    model: &Model,
    cache: &KvCache,
    logits: &[f32],
    sampling: &Sampling,
    rngs: &mut [rand_chacha::ChaCha20Rng],
    max_tokens: usize,
    batch_size: usize,
) -> Result<Vec<(Vec<u32>, StopReason)>> {
    // Kernels that are not batch-invariant (dense or candle-quantized weights) decode row
    // by row, so results never depend on which rows happen to share a batch.
    let batch_size = if model.transformer.batch_invariant() {
        batch_size.max(1)
    } else {
        1
    };
    let mut results = Vec::with_capacity(rngs.len());
    for chunk in rngs.chunks_mut(batch_size) {
        let n = chunk.len();
        let mut rows: Vec<(Vec<u32>, Option<StopReason>)> = vec![(Vec::new(), None); n];
        let mut row_logits: Vec<Vec<f32>> = vec![logits.to_vec(); n];
        let mut batch_cache = if n == 1 {
            cache.clone()
        } else {
            cache.repeat_batch(n)?
        };
        batch_cache.expect_growth(max_tokens);
        loop {
            let running: Vec<bool> = rows.iter().map(|r| r.1.is_none()).collect();
            let drawn = sample_rows(&row_logits, &running, sampling, chunk)?;
            let mut feed = Vec::with_capacity(n);
            for (i, next) in drawn.into_iter().enumerate() {
                let (tokens, stopped) = &mut rows[i];
                if let Some(next) = next {
                    if model.tokenizer.stop_ids.contains(&next) {
                        *stopped = Some(StopReason::StopToken);
                    } else {
                        tokens.push(next);
                        if tokens.len() >= max_tokens {
                            *stopped = Some(StopReason::MaxTokens);
                        }
                    }
                }
                feed.push(vec![tokens.last().copied().unwrap_or(0)]);
            }
            if rows.iter().all(|r| r.1.is_some()) {
                break;
            }
            for (i, l) in model
                .transformer
                .last_logits_rows(&feed, &mut batch_cache)?
                .into_iter()
                .enumerate()
            {
                if rows[i].1.is_none() {
                    row_logits[i] = l;
                }
            }
        }
        results.extend(
            rows.into_iter()
                .map(|(t, s)| (t, s.expect("every row stopped"))),
        );
    }
    Ok(results)
}

/// One row of `decode_each`: its sampled tokens, its cache and why it stopped.
pub type DecodedRow = (Vec<u32>, KvCache, StopReason);

/// `decode` of several independent sequences at once (row i continues `caches[i]`, whose
/// last-position logits are `logits[i]`, drawing from `rngs[i]` only), one forward pass
/// per step over the rows still running. Rows stop exactly where `decode` of that row
/// stops (a stop token, `keep_going(i, tokens)` false, `max_tokens`), drop out of the
/// pass, and keep what `decode` would have fed into their cache, so a re-ask continues
/// from the same cache. With batch-invariant kernels each row's arithmetic is that of
/// its lone `decode` (`last_logits_ragged`); other kernels decode row by row. A row's
/// own failure (non-finite logits, an error of `keep_going`) is that row's result; a
/// failed forward pass fails every row still running.
pub fn decode_each(
    model: &Model,
    caches: Vec<KvCache>,
    logits: Vec<Vec<f32>>,
    sampling: &Sampling,
    rngs: &mut [rand_chacha::ChaCha20Rng],
    max_tokens: usize,
    mut keep_going: impl FnMut(usize, &[u32]) -> Result<bool>,
) -> Result<Vec<Result<DecodedRow>>> {
    let n = caches.len();
    if logits.len() != n || rngs.len() != n {
        return Err(Error::Run(format!(
            "internal: decode_each got {n} caches, {} logit rows and {} streams",
            logits.len(),
            rngs.len()
        )));
    }
    if n == 1 || !model.transformer.batch_invariant() {
        return Ok(caches
            .into_iter()
            .zip(logits)
            .zip(rngs.iter_mut())
            .enumerate()
            .map(|(i, ((cache, logits), rng))| {
                decode(model, cache, logits, sampling, rng, max_tokens, |t| {
                    keep_going(i, t)
                })
            })
            .collect());
    }
    let mut caches = caches;
    for cache in &mut caches {
        cache.expect_growth(max_tokens);
    }
    let mut logits = logits;
    let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut ended: Vec<Option<Result<StopReason>>> = (0..n)
        .map(|_| (max_tokens == 0).then_some(Ok(StopReason::MaxTokens)))
        .collect();
    while ended.iter().any(Option::is_none) {
        // A row with non-finite logits fails alone, as its lone decode would.
        for (i, end) in ended.iter_mut().enumerate() {
            if end.is_none() {
                if let Err(e) = check_finite(&logits[i]) {
                    *end = Some(Err(e));
                }
            }
        }
        let running: Vec<bool> = ended.iter().map(Option::is_none).collect();
        let drawn = sample_rows(&logits, &running, sampling, rngs)?;
        let mut feed: Vec<usize> = Vec::new();
        for (i, next) in drawn.into_iter().enumerate() {
            let Some(next) = next else { continue };
            if model.tokenizer.stop_ids.contains(&next) {
                ended[i] = Some(Ok(StopReason::StopToken));
                continue;
            }
            tokens[i].push(next);
            match keep_going(i, &tokens[i]) {
                Err(e) => ended[i] = Some(Err(e)),
                Ok(false) => ended[i] = Some(Ok(StopReason::Caller)),
                Ok(true) if tokens[i].len() >= max_tokens => {
                    ended[i] = Some(Ok(StopReason::MaxTokens))
                }
                Ok(true) => feed.push(i),
            }
        }
        if feed.is_empty() {
            continue;
        }
        let rows: Vec<Vec<u32>> = feed
            .iter()
            .map(|&i| vec![tokens[i][tokens[i].len() - 1]])
            .collect();
        let mut fed: Vec<KvCache> = feed
            .iter()
            .map(|&i| std::mem::take(&mut caches[i]))
            .collect();
        let stepped = model.transformer.last_logits_ragged(&rows, &mut fed);
        for (&i, cache) in feed.iter().zip(fed) {
            caches[i] = cache;
        }
        match stepped {
            Ok(rows) => {
                for (&i, l) in feed.iter().zip(rows) {
                    logits[i] = l;
                }
            }
            Err(e) => {
                let why = e.to_string();
                for &i in &feed {
                    ended[i] = Some(Err(Error::Run(format!(
                        "a lockstep decode step failed: {why}"
                    ))));
                }
            }
        }
    }
    Ok(caches
        .into_iter()
        .zip(tokens)
        .zip(ended)
        .map(|((cache, tokens), end)| {
            end.expect("every row ended")
                .map(|reason| (tokens, cache, reason))
        })
        .collect())
}

/// One draw per running row (`running[i]`), row i from `rngs[i]` and `logits[i]`, each
/// row's logits checked finite first; stopped rows draw nothing. Sampling is CPU work
/// independent per row, so the rows sample in parallel on the kernels' pool (a second
/// pool would spin against it); the result does not depend on the scheduling.
pub fn sample_rows(
    logits: &[Vec<f32>],
    running: &[bool],
    sampling: &Sampling,
    rngs: &mut [rand_chacha::ChaCha20Rng],
) -> Result<Vec<Option<u32>>> {
    let n = running.len();
    let mut drawn: Vec<Option<u32>> = vec![None; n];
    let mut finite: Vec<Result<()>> = (0..n).map(|_| Ok(())).collect();
    {
        let (rng_at, drawn_at, finite_at) = (
            DisjointMut::new(rngs),
            DisjointMut::new(&mut drawn),
            DisjointMut::new(&mut finite),
        );
        crate::kernels::pool::pool().execute_chunked(n, move |range| {
            for i in range {
                if running[i] {
                    // SAFETY: row i's stream, slot and check are touched by this task only.
                    let (rng, slot, ok) = unsafe {
                        (
                            &mut rng_at.part(i, 1)[0],
                            &mut drawn_at.part(i, 1)[0],
                            &mut finite_at.part(i, 1)[0],
                        )
                    };
                    *ok = check_finite(&logits[i]);
                    *slot = Some(sample(&logits[i], sampling, rng));
                }
            }
        });
    }
    finite.into_iter().collect::<Result<()>>()?;
    Ok(drawn)
}

/// Continues one shared cache with several suffixes (of any lengths) in one forward
/// pass, and returns each row's own cache and last-position logits, equal bit for bit
/// to extending the cache with that suffix alone (the projections compute each position
/// independently of the others, attention runs row by row on the row's own fork).
pub fn extend_rows(
    model: &Model,
    shared: &KvCache,
    suffixes: &[Vec<u32>],
) -> Result<Vec<(KvCache, Vec<f32>)>> {
    extend_each(model, vec![shared.clone(); suffixes.len()], suffixes)
}

/// Extends cache i with suffix i (one pair per row; rows may differ in length and cached
/// prefix) and returns each extended cache with its last-position logits: one ragged
/// forward pass where the kernels are batch-invariant, each row alone otherwise. Either
/// way each row is bit-identical to extending it alone.
pub fn extend_each(
    model: &Model,
    caches: Vec<KvCache>,
    suffixes: &[Vec<u32>],
) -> Result<Vec<(KvCache, Vec<f32>)>> {
    Ok(extend_each_capturing(model, caches, suffixes, &[])?
        .into_iter()
        .map(|e| (e.cache, e.logits))
        .collect())
}

/// One row extended by `extend_each_capturing`.
pub struct Extended {
    pub cache: KvCache,
    pub logits: Vec<f32>,
    /// The residual stream at the row's last position after each captured block.
    pub states: Vec<Vec<f32>>,
}

/// `extend_each`, also capturing each row's residual stream at its last position after
/// the blocks in `capture` (see `model::residual`); the logits do not change.
pub fn extend_each_capturing(
    model: &Model,
    mut caches: Vec<KvCache>,
    suffixes: &[Vec<u32>],
    capture: &[usize],
) -> Result<Vec<Extended>> {
    if suffixes.len() == 1 || !model.transformer.batch_invariant() {
        // One row, or kernels whose rows change with the batch: each row alone.
        return caches
            .into_iter()
            .zip(suffixes)
            .map(|(mut cache, s)| {
                let last = Tensor::new(&[s.len() as u32 - 1], &model.transformer.device)?;
                let (logits, taps) = model.transformer.forward_keeping(
                    std::slice::from_ref(s),
                    &mut cache,
                    &LogitsAt::Last,
                    capture,
                    Keep::Positions(&last),
                )?;
                let logits = logits.i((0, 0))?.to_dtype(DType::F32)?.to_vec1()?;
                let states = taps
                    .iter()
                    .map(|t| t.i((0, 0))?.to_vec1::<f32>())
                    .collect::<candle_core::Result<_>>()?;
                Ok(Extended {
                    cache,
                    logits,
                    states,
                })
            })
            .collect();
    }
    let (logits, states) =
        model
            .transformer
            .last_logits_ragged_capturing(suffixes, &mut caches, capture)?;
    Ok(caches
        .into_iter()
        .zip(logits)
        .zip(states)
        .map(|((cache, logits), states)| Extended {
            cache,
            logits,
            states,
        })
        .collect())
}
