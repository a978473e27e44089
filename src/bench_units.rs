//! `affectbench bench` on the fixed-plan path (GPUs; `--batching fixed-plan` on the CPU):
//! the standard workloads as the study runner runs them there, padded units of rows in
//! lockstep, plus decode at 1, 32 and 256 rows. Every timed run ends with the device
//! synchronised, so a figure counts the device's work, not only its queueing.

use crate::bench::{prompt_of_len, BenchReport, Questionnaire, RowsFigure};
use crate::error::Result;
use crate::model::{KvCache, LogitsAt, Model, UnitKv};
use crate::sampling::argmax;
use crate::unit_work;
use std::time::Instant;

/// Rows of the decode workloads by default.
pub const DECODE_ROWS: [usize; 3] = [1, 32, 256];

/// Times `f` once to warm up (the first CUDA kernels also load their modules then),
/// then `repeats` times, synchronising the device after each; the median seconds.
fn timed(model: &Model, repeats: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let device = &model.transformer.device;
    f()?;
    device.synchronize()?;
    let mut secs = Vec::new();
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        f()?;
        device.synchronize()?;
        secs.push(t.elapsed().as_secs_f64());
    }
    secs.sort_by(f64::total_cmp);
    Ok(secs[secs.len() / 2])
}

/// `steps` greedy steps of `rows` rows continuing `prefix` in lockstep (every row
/// produces every step: the figure is the engine's, not the sampler's stop tokens').
fn decode_lockstep_greedy(
    model: &Model,
    prefix: &KvCache,
    first: u32,
    rows: usize,
    steps: usize,
) -> Result<()> {
    let mut kv = UnitKv::new(&model.transformer, prefix, rows, steps)?;
    let mut feed = vec![vec![first]; rows];
    for _ in 0..steps {
        // The argmax on the device: only the ids come back.
        let next = model
            .transformer
            .unit_step(&mut kv, &feed)?
            .argmax(candle_core::D::Minus1)?
            .to_vec1::<u32>()?;
        feed = next.into_iter().map(|t| vec![t]).collect();
    }
    Ok(())
}

/// The questionnaire as the runner does it on this path: the prefix once, then units
/// of `batch` items prefilled together and their options scored together.
fn questionnaire(
    model: &Model,
    prefix: &[u32],
    items: &[Vec<u32>],
    options: &[Vec<u32>],
    batch: usize,
) -> Result<()> {
    let mut shared = KvCache::new(model.transformer.config.n_layer);
    model
        .transformer
        .forward(&[prefix.to_vec()], &mut shared, &LogitsAt::Last)?;
    for unit in items.chunks(batch.max(1)) {
        let prefilled = unit_work::prefill(model, &shared, unit, 0)?;
        let opts: Vec<Option<&[Vec<u32>]>> = unit.iter().map(|_| Some(options)).collect();
        unit_work::option_logprobs(model, &prefilled, &opts)?;
    }
    Ok(())
}

/// Every workload on the fixed-plan path, units of `batch` items.
pub fn run_bench_units(
    model: &Model,
    q: &Questionnaire,
    threads: usize,
    repeats: usize,
    batch: usize,
    decode_rows: &[usize],
    mut progress: impl FnMut(&str),
) -> Result<BenchReport> {
    const PREFILL: usize = 256;
    const DECODE: usize = 64;
    let empty = KvCache::new(model.transformer.config.n_layer);
    progress("prefill, 256 tokens");
    let prompt = prompt_of_len(model, PREFILL)?;
    let prefill_s = timed(model, repeats, || {
        unit_work::prefill(model, &empty, std::slice::from_ref(&prompt), 0).map(|_| ())
    })?;

    let short = prompt_of_len(model, 32)?;
    let mut base = KvCache::new(model.transformer.config.n_layer);
    let first = argmax(&model.transformer.last_logits(&short, &mut base)?);
    let mut decode = Vec::new();
    for &rows in decode_rows {
        progress(&format!("decode, 64 tokens, {rows} rows in lockstep"));
        let s = timed(model, repeats, || {
            decode_lockstep_greedy(model, &base, first, rows, DECODE)
        })?;
        decode.push(RowsFigure {
            rows,
            tok_s: (rows * DECODE) as f64 / s,
        });
    }

    progress("questionnaire");
    let (prefix, items, options) = q.encode(model)?;
    let pass_s = timed(model, repeats, || {
        questionnaire(model, &prefix, &items, &options, batch)
    })?;
    let figure = |rows: usize| decode.iter().find(|f| f.rows == rows).map(|f| f.tok_s);
    Ok(BenchReport {
        model: model.info.label.clone(),
        cpu: crate::kernels::int8_matmul::cpu_description(),
        int8_kernel: None,
        threads,
        repeats,
        prefill_tokens: PREFILL,
        prefill_tok_s: PREFILL as f64 / prefill_s,
        decode_tokens: DECODE,
        decode_tok_s: figure(1).unwrap_or(0.0),
        batch32_decode_tok_s: figure(32),
        questionnaire_items: items.len(),
        questionnaire_prefix_tokens: prefix.len(),
        questionnaire_items_s: items.len() as f64 / pass_s,
        questionnaire_items_s_unbatched: None,
        questionnaire_items_s_capture: None,
        load_seconds: None,
        peak_rss_bytes: crate::bench::peak_rss_bytes(),
        decode_rows: decode,
        device: None,
        batch_size: Some(batch),
    })
}
