//! Option scoring at the answer position: the four single-token labels "1".."4" (read
//! from the prompt's logits) and the eleven VAS bins "0".."100" (multi-token labels,
//! scored depth by depth in batched passes). Throughput: options per second.

#[path = "common/mod.rs"]
mod common;

use affectbench::bench::prompt_of_len;
use affectbench::model::KvCache;
use affectbench::option_scoring::option_logprobs;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let m = common::bench_model();
    let mut cache = KvCache::new(m.transformer.config.n_layer);
    let logits = m
        .transformer
        .last_logits(&prompt_of_len(&m, 128).unwrap(), &mut cache)
        .unwrap();
    let sets: [(&str, Vec<String>); 2] = [
        ("digits-1-4", (1..=4).map(|i| i.to_string()).collect()),
        (
            "vas-bins-0-100",
            (0..=10).map(|i| (i * 10).to_string()).collect(),
        ),
    ];
    let mut g = c.benchmark_group("option-scoring");
    for (name, labels) in sets {
        let options: Vec<Vec<u32>> = labels
            .iter()
            .map(|l| m.tokenizer.encode(l, false).unwrap())
            .collect();
        g.throughput(Throughput::Elements(options.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &options, |b, o| {
            b.iter(|| option_logprobs(&m, &cache, &logits, o).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
