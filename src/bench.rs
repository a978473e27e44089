//! `affectbench bench`: the standard throughput workloads, measured in-process on one
//! model: prefill of a 256-token prompt, single-sequence decode, 32 sampled sequences
//! decoded in lockstep, and the questionnaire workload (benches/workloads/). Each figure
//! is the median of `repeats` timed runs after one warm-up.

use crate::error::{Error, Result};
use crate::generate::{decode_lockstep, extend_each_capturing};
use crate::model::{Keep, KvCache, LogitsAt, Model};
use crate::option_scoring::option_logprobs_rows;
use crate::rng::Stream;
use crate::sampling::{argmax, SamplingParams};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// The questionnaire workload file: a shared prefix, items that end where the answer
/// token comes, and the options scored there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Questionnaire {
    pub description: Option<String>,
    pub prefix: String,
    pub items: Vec<String>,
    pub options: Vec<String>,
}

pub const DEFAULT_QUESTIONNAIRE: &str = include_str!("../benches/workloads/questionnaire.json");

/// A questionnaire's prefix, items and options as token ids.
pub type EncodedQuestionnaire = (Vec<u32>, Vec<Vec<u32>>, Vec<Vec<u32>>);

impl Questionnaire {
    /// The prefix, items and options as token ids: the prefix starts the text, so it
    /// gets the model's special tokens (BOS where used); options follow a space.
    pub fn encode(&self, model: &Model) -> Result<EncodedQuestionnaire> {
        let enc = |t: &str| model.tokenizer.encode(t, false);
        let prefix = model.tokenizer.encode(&self.prefix, true)?;
        let items = self
            .items
            .iter()
            .map(|i| enc(i))
            .collect::<Result<Vec<_>>>()?;
        let options = self
            .options
            .iter()
            .map(|o| enc(&format!(" {o}")))
            .collect::<Result<Vec<_>>>()?;
        Ok((prefix, items, options))
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::DataFile {
            path: origin.into(),
            line: e.line(),
            message: e.to_string(),
        })
    }
}

/// The figures `bench --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    /// The CPU's model name and the packed int8 paths it supports.
    pub cpu: String,
    /// The packed int8 kernel the model ran on (`none` without packed weights; set by
    /// the caller, which knows the engine).
    pub int8_kernel: Option<String>,
    pub threads: usize,
    pub repeats: usize,
    pub prefill_tokens: usize,
    pub prefill_tok_s: f64,
    pub decode_tokens: usize,
    pub decode_tok_s: f64,
    /// None where skipped (`--skip batch32`: slow on large models).
    pub batch32_decode_tok_s: Option<f64>,
    pub questionnaire_items: usize,
    pub questionnaire_prefix_tokens: usize,
    pub questionnaire_items_s: f64,
    /// The same pass with every item prefilled alone (the reference for the batching
    /// gain); None where skipped.
    pub questionnaire_items_s_unbatched: Option<f64>,
    /// The batched pass capturing every block's residual stream (answer position and
    /// prefix mean, as a [capture] study); None where skipped.
    #[serde(default)]
    pub questionnaire_items_s_capture: Option<f64>,
    /// Seconds to load the model (set by the caller, which loads it).
    pub load_seconds: Option<f64>,
    /// Peak resident memory of the whole process (VmHWM), which holds the model and every
    /// workload in turn.
    pub peak_rss_bytes: u64,
    /// Greedy lockstep decode at several row counts (the fixed-plan path only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decode_rows: Vec<RowsFigure>,
    /// The device when it is not the CPU: GPU name, driver, CUDA version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Rows per unit of the questionnaire (the fixed-plan path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
}

/// Aggregate decode throughput of `rows` sequences in lockstep.
#[derive(Debug, Clone, Serialize)]
pub struct RowsFigure {
    pub rows: usize,
    pub tok_s: f64,
}

/// A deterministic prompt of exactly `n` tokens (ordinary English, repeated).
pub fn prompt_of_len(model: &Model, n: usize) -> Result<Vec<u32>> {
    let text = "The quick brown fox jumps over the lazy dog while the committee reviews the annual report on regional water supplies. ";
    let mut ids = Vec::new();
    while ids.len() < n {
        ids.extend(model.tokenizer.encode(text, false)?);
    }
    ids.truncate(n);
    Ok(ids)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Times `f` once to warm up, then `repeats` times; the median seconds.
fn timed(repeats: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut secs = Vec::new();
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        f()?;
        secs.push(t.elapsed().as_secs_f64());
    }
    Ok(median(secs))
}

/// Prefill of `tokens` into a fresh cache, logits at the last position only.
pub fn prefill(model: &Model, tokens: &[u32]) -> Result<KvCache> {
    let mut cache = KvCache::new(model.transformer.config.n_layer);
    model
        .transformer
        .forward(&[tokens.to_vec()], &mut cache, &LogitsAt::Last)?;
    Ok(cache)
}

/// `steps` greedy single-sequence decode steps after `cache`.
pub fn decode_steps(model: &Model, cache: &KvCache, first: u32, steps: usize) -> Result<()> {
    let mut cache = cache.clone();
    let mut next = first;
    for _ in 0..steps {
        next = argmax(&model.transformer.last_logits(&[next], &mut cache)?);
    }
    Ok(())
}

/// One pass of the questionnaire as the study runner does it: the prefix once, then
/// the items forked from it and prefilled together, up to `batch_size` per forward pass
/// (`extend_rows`), options scored at each item's answer position, the batch's items
/// together (`option_logprobs_rows`).
pub fn questionnaire_pass(
    model: &Model,
    prefix: &[u32],
    items: &[Vec<u32>],
    options: &[Vec<u32>],
    batch_size: usize,
) -> Result<Vec<Vec<f64>>> {
    Ok(questionnaire_pass_capturing(model, prefix, items, options, batch_size, &[])?.0)
}

/// `questionnaire_pass` capturing the residual stream after the blocks in `capture` as
/// a [capture] study does: the prefix's mean and each item's answer position. Returns
/// the option log-probabilities and the number of captured vectors.
pub fn questionnaire_pass_capturing(
    model: &Model,
    prefix: &[u32],
    items: &[Vec<u32>],
    options: &[Vec<u32>],
    batch_size: usize,
    capture: &[usize],
) -> Result<(Vec<Vec<f64>>, usize)> {
    let mut shared = KvCache::new(model.transformer.config.n_layer);
    let (_, taps) = model.transformer.forward_keeping(
        &[prefix.to_vec()],
        &mut shared,
        &LogitsAt::Last,
        capture,
        Keep::Mean,
    )?;
    let prefix_means = taps
        .iter()
        .map(|t| t.squeeze(0)?.to_vec1::<f32>())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let mut vectors = prefix_means.len();
    let mut out = vec![Vec::new(); items.len()];
    let indices: Vec<usize> = (0..items.len()).collect();
    for batch in indices.chunks(batch_size.max(1)) {
        let suffixes: Vec<Vec<u32>> = batch.iter().map(|&i| items[i].clone()).collect();
        let prefilled = extend_each_capturing(
            model,
            vec![shared.clone(); suffixes.len()],
            &suffixes,
            capture,
        )?;
        vectors += prefilled.iter().map(|e| e.states.len()).sum::<usize>();
        let rows: Vec<_> = prefilled
            .iter()
            .map(|e| (&e.cache, &e.logits[..], options))
            .collect();
        for (&i, lps) in batch.iter().zip(option_logprobs_rows(model, &rows)?) {
            out[i] = lps;
        }
    }
    Ok((out, vectors))
}

pub(crate) fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Workloads `run_bench` may leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Optional {
    Batch32,
    Unbatched,
    /// The questionnaire with every block's residual stream captured.
    Capture,
}

/// Runs every workload but `skip`; `progress` is told what is being measured.
pub fn run_bench(
    model: &Model,
    q: &Questionnaire,
    threads: usize,
    repeats: usize,
    skip: &[Optional],
    mut progress: impl FnMut(&str),
) -> Result<BenchReport> {
    const PREFILL: usize = 256;
    const DECODE: usize = 64;
    const ROWS: usize = 32;
    progress("prefill, 256 tokens");
    let prompt = prompt_of_len(model, PREFILL)?;
    let prefill_s = timed(repeats, || prefill(model, &prompt).map(|_| ()))?;

    progress("decode, 64 tokens, one sequence");
    let short = prompt_of_len(model, 32)?;
    // One prefill of the short prompt serves both decode workloads (each forks it).
    let mut base = KvCache::new(model.transformer.config.n_layer);
    let logits = model.transformer.last_logits(&short, &mut base)?;
    let first = argmax(&logits);
    let decode_s = timed(repeats, || decode_steps(model, &base, first, DECODE))?;

    let mut batch32 = None;
    if !skip.contains(&Optional::Batch32) {
        progress("decode, 32 sampled sequences in lockstep");
        // Temperature 1; a row that samples a stop token ends early and only tokens actually
        // produced count.
        let sampling = SamplingParams {
            temperature: 1.0,
            ..Default::default()
        }
        .resolve()?;
        let mut produced = 0usize;
        let batch_s = timed(repeats, || {
            let mut rngs: Vec<_> = (0..ROWS)
                .map(|i| Stream::BenchRow { row: i }.rng(0))
                .collect();
            let rows = decode_lockstep(model, &base, &logits, &sampling, &mut rngs, DECODE, ROWS)?;
            produced = rows.iter().map(|r| r.0.len()).sum();
            Ok(())
        })?;
        batch32 = Some(produced as f64 / batch_s);
    }

    progress("questionnaire");
    let (prefix, items, options) = q.encode(model)?;
    let pass_s = timed(repeats, || {
        questionnaire_pass(model, &prefix, &items, &options, ROWS).map(|_| ())
    })?;
    let unbatched_s = if skip.contains(&Optional::Unbatched) {
        None
    } else {
        Some(timed(repeats, || {
            questionnaire_pass(model, &prefix, &items, &options, 1).map(|_| ())
        })?)
    };

    let capture_s = if skip.contains(&Optional::Capture) {
        None
    } else {
        progress("questionnaire, capturing every block");
        let all: Vec<usize> = (0..=model.transformer.config.n_layer).collect();
        Some(timed(repeats, || {
            questionnaire_pass_capturing(model, &prefix, &items, &options, ROWS, &all).map(|_| ())
        })?)
    };

    Ok(BenchReport {
        model: model.info.label.clone(),
        cpu: crate::kernels::int8_matmul::cpu_description(),
        int8_kernel: None,
        threads,
        repeats,
        prefill_tokens: PREFILL,
        prefill_tok_s: PREFILL as f64 / prefill_s,
        decode_tokens: DECODE,
        decode_tok_s: DECODE as f64 / decode_s,
        batch32_decode_tok_s: batch32,
        questionnaire_items: items.len(),
        questionnaire_prefix_tokens: prefix.len(),
        questionnaire_items_s: items.len() as f64 / pass_s,
        questionnaire_items_s_unbatched: unbatched_s.map(|s| items.len() as f64 / s),
        questionnaire_items_s_capture: capture_s.map(|s| items.len() as f64 / s),
        peak_rss_bytes: peak_rss_bytes(),
        load_seconds: None,
        decode_rows: Vec::new(),
        device: None,
        batch_size: None,
    })
}
