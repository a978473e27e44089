//! Tokenizer encode throughput on the questionnaire workload's text (prefix and items),
//! in bytes per second.

#[path = "common/mod.rs"]
mod common;

use affectbench::bench::{Questionnaire, DEFAULT_QUESTIONNAIRE};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let m = common::bench_model();
    let q = Questionnaire::parse(DEFAULT_QUESTIONNAIRE, "questionnaire.json").unwrap();
    let text = format!("{}{}", q.prefix, q.items.join("\n"));
    let mut g = c.benchmark_group("tokenizer");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("encode-questionnaire", |b| {
        b.iter(|| m.tokenizer.encode(&text, false).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
