//! The sampler on a full vocabulary row (49,152 logits, SmolLM2's size): greedy,
//! temperature only, and temperature with top-p. Throughput: tokens sampled per second.

use affectbench::rng::Stream;
use affectbench::sampling::{sample, SamplingParams};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};

fn bench(c: &mut Criterion) {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let logits: Vec<f32> = (0..49_152).map(|_| r.random_range(-8.0..8.0)).collect();
    let mut g = c.benchmark_group("sampler");
    g.throughput(Throughput::Elements(1));
    for (name, params) in [
        (
            "greedy",
            SamplingParams {
                temperature: 0.0,
                ..Default::default()
            },
        ),
        (
            "temperature-0.5",
            SamplingParams {
                temperature: 0.5,
                ..Default::default()
            },
        ),
        (
            "temperature-0.5-top-p-0.9",
            SamplingParams {
                temperature: 0.5,
                top_p: Some(0.9),
                ..Default::default()
            },
        ),
    ] {
        let s = params.resolve().unwrap();
        let mut rng = Stream::Named("bench").rng(0);
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| sample(&logits, &s, &mut rng))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
