//! A unit's work on the fixed-plan path (`model::unit_forward`): prefill every row's
//! suffix after the shared prefix in one padded pass, score every row's options, and
//! decode every row in lockstep. Each row samples from its own ChaCha stream with the
//! CPU sampler, so given the same logits the draws are exactly the packed path's; only
//! one logit row per unit row comes back from the device per step.

use crate::error::{Error, Result};
use crate::generate::{sample_rows, StopReason};
use crate::model::{KvCache, Model, UnitKv};
use crate::option_scoring::log_softmax;
use crate::sampling::Sampling;
use rand_chacha::ChaCha20Rng;

/// A prefilled unit: its key/value grid and each row's logits at its last prompt token.
pub struct PrefilledUnit {
    pub kv: UnitKv,
    pub logits: Vec<Vec<f32>>,
}

/// Prefills `suffixes` (one per row, each non-empty) after `prefix` in one padded
/// pass, leaving room for `then` more tokens per row.
pub fn prefill(
    model: &Model,
    prefix: &KvCache,
    suffixes: &[Vec<u32>],
    then: usize,
) -> Result<PrefilledUnit> {
    if suffixes.is_empty() {
        return Err(Error::Run("internal: an empty unit".into()));
    }
    let longest = suffixes.iter().map(Vec::len).max().unwrap_or(0);
    let mut kv = UnitKv::new(&model.transformer, prefix, suffixes.len(), longest + then)?;
    let logits = model.transformer.unit_step(&mut kv, suffixes)?.to_vec2()?;
    Ok(PrefilledUnit { kv, logits })
}

/// log P(option tokens | prompt) for every option of every row (None: a row without
/// options). The first token comes from the prompt's logits; deeper tokens of multi-
/// token labels from one pass per depth over forks of the rows that need them.
pub fn option_logprobs(
    model: &Model,
    unit: &PrefilledUnit,
    options: &[Option<&[Vec<u32>]>],
) -> Result<Vec<Option<Vec<f64>>>> {
    if options
        .iter()
        .flatten()
        .any(|o| o.iter().any(Vec::is_empty))
    {
        return Err(Error::Run(
            "an option label tokenises to no tokens; give every option a non-empty label".into(),
        ));
    }
    let mut out: Vec<Option<Vec<f64>>> = options
        .iter()
        .zip(&unit.logits)
        .map(|(o, logits)| {
            o.map(|o| {
                let first = log_softmax(logits);
                o.iter().map(|t| first[t[0] as usize]).collect()
            })
        })
        .collect();
    let longest = options
        .iter()
        .flatten()
        .flat_map(|o| o.iter().map(Vec::len))
        .max()
        .unwrap_or(0);
    for depth in 1..longest {
        // Distinct (row, label prefix) pairs, in row order: a fixed function of the unit.
        let mut jobs: Vec<(usize, Vec<u32>)> = Vec::new();
        for (r, o) in options.iter().enumerate() {
            for t in o.iter().flat_map(|o| o.iter()).filter(|t| t.len() > depth) {
                if !jobs.iter().any(|(jr, p)| *jr == r && p[..] == t[..depth]) {
                    jobs.push((r, t[..depth].to_vec()));
                }
            }
        }
        let rows: Vec<usize> = jobs.iter().map(|(r, _)| *r).collect();
        let mut fork = unit.kv.select_rows(&rows, depth)?;
        let prefixes: Vec<Vec<u32>> = jobs.iter().map(|(_, p)| p.clone()).collect();
        let lps: Vec<Vec<f64>> = model
            .transformer
            .unit_step(&mut fork, &prefixes)?
            .to_vec2::<f32>()?
            .iter()
            .map(|l| log_softmax(l))
            .collect();
        for (r, o) in options.iter().enumerate() {
            let Some(o) = o else { continue };
            for (i, t) in o.iter().enumerate().filter(|(_, t)| t.len() > depth) {
                let j = jobs
                    .iter()
                    .position(|(jr, p)| *jr == r && p[..] == t[..depth])
                    .expect("collected above");
                out[r].as_mut().expect("a row with options")[i] += lps[j][t[depth] as usize];
            }
        }
    }
    Ok(out)
}

/// Decodes every row of `kv` in lockstep from `logits` (each row's logits at its last
/// token): row r samples from `rngs[r]` up to `max_tokens` tokens and stops at a stop
/// token or when `keep_going(r, tokens so far)` says so. A stopped row rides along, its
/// outputs ignored, until every row has stopped.
pub fn decode_lockstep(
    model: &Model,
    mut kv: UnitKv,
    mut logits: Vec<Vec<f32>>,
    sampling: &Sampling,
    rngs: &mut [ChaCha20Rng],
    max_tokens: usize,
    mut keep_going: impl FnMut(usize, &[u32]) -> Result<bool>,
) -> Result<Vec<(Vec<u32>, StopReason)>> {
    let n = kv.rows();
    if rngs.len() != n || logits.len() != n {
        return Err(Error::Run(
            "internal: one stream and logit row per unit row".into(),
        ));
    }
    if max_tokens == 0 {
        return Ok(vec![(Vec::new(), StopReason::MaxTokens); n]);
    }
    let mut rows: Vec<(Vec<u32>, Option<StopReason>)> = vec![(Vec::new(), None); n];
    loop {
        let running: Vec<bool> = rows.iter().map(|r| r.1.is_none()).collect();
        let drawn = sample_rows(&logits, &running, sampling, rngs)?;
        let mut feed = Vec::with_capacity(n);
        for (r, next) in drawn.into_iter().enumerate() {
            if let Some(next) = next {
                let (tokens, stopped) = &mut rows[r];
                if model.tokenizer.stop_ids.contains(&next) {
                    *stopped = Some(StopReason::StopToken);
                } else {
                    tokens.push(next);
                    // In `generate::decode`'s order: the caller first, then the limit.
                    if !keep_going(r, tokens)? {
                        *stopped = Some(StopReason::Caller);
                    } else if tokens.len() >= max_tokens {
                        *stopped = Some(StopReason::MaxTokens);
                    }
                }
            }
            feed.push(vec![rows[r].0.last().copied().unwrap_or(0)]);
        }
        if rows.iter().all(|r| r.1.is_some()) {
            break;
        }
        if kv.room() == 0 {
            return Err(Error::Run(
                "internal: a unit's grid is full before its rows stopped".into(),
            ));
        }
        let next = model.transformer.unit_step(&mut kv, &feed)?.to_vec2()?;
        for (r, l) in next.into_iter().enumerate() {
            if rows[r].1.is_none() {
                logits[r] = l;
            }
        }
    }
    Ok(rows
        .into_iter()
        .map(|(t, s)| (t, s.expect("every row stopped")))
        .collect())
}
