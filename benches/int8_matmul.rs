//! The packed int8 matmul kernel alone, at SmolLM2-135M's projection shapes (fused
//! q/k/v, gate+up, down) and at the row counts the engine feeds it: 1 (decode), 24 (one
//! questionnaire item) and 256 (a prefill). Throughput is in multiply-accumulates, so
//! the figures compare directly with the CPU's int8 peak.
//!
//! Weights are random, quantised to Q4_1 (SmolLM2's file type) and packed, outside the
//! timed loop.

use affectbench::kernels::int8_matmul::{best_path, matmul};
use affectbench::kernels::packed::PackedMatrix;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use std::time::Duration;

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn packed_q4_1(n: usize, k: usize) -> PackedMatrix {
    let w = Tensor::from_vec(random(n * k, 1), (n, k), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
    PackedMatrix::from_ggml(GgmlDType::Q4_1, &q.data().unwrap(), n, k).unwrap()
}

fn bench(c: &mut Criterion) {
    affectbench::set_threads(affectbench::default_threads(), true).unwrap();
    for (name, n, k) in [
        ("qkv", 960, 576),
        ("gate_up", 3072, 576),
        ("down", 576, 1536),
    ] {
        let w = packed_q4_1(n, k);
        let mut g = c.benchmark_group(format!("int8_matmul/{name}-{n}x{k}"));
        g.warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for m in [1usize, 24, 256] {
            let x = random(m * k, 2);
            g.throughput(Throughput::Elements((m * n * k) as u64));
            g.bench_with_input(BenchmarkId::new("rows", m), &m, |b, &m| {
                b.iter(|| matmul(&w, &x, m, best_path()))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
