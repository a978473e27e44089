//! Forward-pass throughput on the real models: prefill of a 256-token prompt and
//! single-sequence decode, in tokens per second (criterion's `Throughput::Elements`).
//!
//! `cargo bench --bench forward` runs SmolLM2-135M (the default model; it is fetched if
//! needed); `AFFECTBENCH_BENCH_MODELS=all` adds Qwen2.5-Coder-0.5B and Gemma-3-270M.
//! Each model is measured with our packed int8 kernels and with candle's quantized
//! matmul in the same process, so the ratio between them is what to compare.

use affectbench::fetch::{fetch, FetchOptions, Source};
use affectbench::model::{Kernels, KvCache, LoadOptions, LogitsAt, Model};
use affectbench::registry::{ModelRef, Registry};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use std::time::Duration;

const PREFILL_TOKENS: usize = 256;
const DECODE_TOKENS: usize = 64;

fn models() -> Vec<&'static str> {
    match std::env::var("AFFECTBENCH_BENCH_MODELS").as_deref() {
        Ok("all") => vec![
            "smollm2-135m-instruct",
            "qwen2.5-coder-0.5b-instruct",
            "gemma3-270m",
        ],
        _ => vec!["smollm2-135m-instruct"],
    }
}

fn load(name: &str, kernels: Kernels) -> Model {
    let reg = Registry::builtin();
    fetch(
        reg.get(name).expect("registry model"),
        &FetchOptions {
            source: Source::Auto,
            force: false,
            show_progress: false,
        },
    )
    .expect("fetching the benchmark model");
    Model::load_ref(
        &ModelRef::resolve(&reg, name).unwrap(),
        &LoadOptions {
            kernels,
            ..Default::default()
        },
    )
    .unwrap()
}

/// A 256-token prompt of ordinary prose (token ids of repeated text).
fn prompt(m: &Model) -> Vec<u32> {
    let text = "You sit in a quiet room and notice your breathing, slow and even. ".repeat(40);
    let ids = m.tokenizer.encode(&text, true).unwrap();
    ids[..PREFILL_TOKENS].to_vec()
}

fn bench(c: &mut Criterion) {
    affectbench::set_threads(affectbench::default_threads(), true).unwrap();
    for name in models() {
        for (label, kernels) in [
            ("packed-int8", Kernels::Packed),
            ("candle-qmatmul", Kernels::Candle),
        ] {
            let m = load(name, kernels);
            let p = prompt(&m);
            let n_layer = m.transformer.config.n_layer;

            let mut g = c.benchmark_group(format!("prefill/{name}"));
            g.sampling_mode(SamplingMode::Flat)
                .sample_size(10)
                .measurement_time(Duration::from_secs(8));
            g.throughput(Throughput::Elements(PREFILL_TOKENS as u64));
            g.bench_function(BenchmarkId::from_parameter(label), |b| {
                b.iter(|| {
                    m.transformer
                        .forward(
                            std::slice::from_ref(&p),
                            &mut KvCache::new(n_layer),
                            &LogitsAt::Last,
                        )
                        .unwrap()
                })
            });
            g.finish();

            let mut g = c.benchmark_group(format!("decode/{name}"));
            g.sampling_mode(SamplingMode::Flat)
                .sample_size(10)
                .measurement_time(Duration::from_secs(8));
            g.throughput(Throughput::Elements(DECODE_TOKENS as u64));
            let mut base = KvCache::new(n_layer);
            m.transformer
                .forward(&[p[..32].to_vec()], &mut base, &LogitsAt::Last)
                .unwrap();
            g.bench_function(BenchmarkId::from_parameter(label), |b| {
                b.iter(|| {
                    let mut cache = base.clone();
                    let mut next = 42u32;
                    for _ in 0..DECODE_TOKENS {
                        let logits = m.transformer.last_logits(&[next], &mut cache).unwrap();
                        next = affectbench::sampling::argmax(&logits);
                    }
                    next
                })
            });
            g.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
