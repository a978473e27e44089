//! One decode step for 1, 8 and 32 sequences continuing a shared 64-token prompt (the
//! prompt's KV cache is shared by every row, as in lockstep sampling). Throughput is in
//! tokens (rows) per second, so batch 32 vs batch 1 is the batching gain.

#[path = "common/mod.rs"]
mod common;

use affectbench::bench::prompt_of_len;
use affectbench::model::{KvCache, LogitsAt};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let m = common::bench_model();
    let mut base = KvCache::new(m.transformer.config.n_layer);
    m.transformer
        .forward(
            &[prompt_of_len(&m, 64).unwrap()],
            &mut base,
            &LogitsAt::Last,
        )
        .unwrap();
    let mut g = c.benchmark_group("decode-step");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .measurement_time(Duration::from_secs(6));
    for rows in [1usize, 8, 32] {
        let caches = if rows == 1 {
            base.clone()
        } else {
            base.repeat_batch(rows).unwrap()
        };
        let feed: Vec<Vec<u32>> = (0..rows).map(|i| vec![100 + i as u32]).collect();
        g.throughput(Throughput::Elements(rows as u64));
        g.bench_with_input(BenchmarkId::new("batch", rows), &rows, |b, _| {
            b.iter_batched(
                || caches.clone(),
                |mut cache| {
                    m.transformer
                        .forward(&feed, &mut cache, &LogitsAt::Last)
                        .unwrap()
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
