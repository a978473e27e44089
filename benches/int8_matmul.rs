//! The packed int8 matmul kernel alone, at SmolLM2-135M's projection shapes (fused
//! q/k/v, gate+up, down) and at the row counts the engine feeds it: 1 (decode), 24 (one
//! questionnaire item) and 256 (a prefill). Throughput is in multiply-accumulates, so
//! the figures compare directly with the CPU's int8 peak.
//!
//! Weights are random, quantised to Q4_1 (SmolLM2's file type) and packed, outside the
//! timed loop. The projection groups run every path this CPU has (`avx512-vnni/rows`,
//! `avx2/rows`, ...; the scalar reference at 1 row only), so paths compare in one run.
//!
//! A second group compares the layouts at an 8B model's attention shape (4096 x 4096):
//! Q4_K, Q5_K and Q6_K (a Q4_K_M or Q5_K_M file's types) in nibbles (Q5_K and Q6_K with
//! their bits above 4 in a plane beside them; what files above 1 GiB use) against one
//! byte per weight; IQ4_XS in nibbles (the kernel looks each index up in the code book)
//! and in bytes; and Q6_K with its offsets derived from the scales (the default)
//! against the same matrix storing them.

use affectbench::kernels::int8_matmul::{best_path, matmul, KernelPath};
use affectbench::kernels::packed::{FourBit, PackedMatrix};
use affectbench::quant::QuantType;
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

/// Random IQ4_XS blocks (any bytes are valid blocks once the f16 scale is finite).
fn random_iq4_xs(n: usize, k: usize) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut data: Vec<u8> = (0..n * k / 256 * 136).map(|_| rng.random()).collect();
    for blk in data.chunks_exact_mut(136) {
        let d = half::f16::from_f32(rng.random_range(0.001f32..0.01));
        blk[..2].copy_from_slice(&d.to_le_bytes());
    }
    data
}

fn layouts(c: &mut Criterion) {
    let (n, k) = (4096, 4096);
    let w = Tensor::from_vec(random(n * k, 1), (n, k), &Device::Cpu).unwrap();
    let q4k = QTensor::quantize(&w, GgmlDType::Q4K).unwrap();
    let q4k = q4k.data().unwrap();
    let q6k = QTensor::quantize(&w, GgmlDType::Q6K).unwrap();
    let q6k = q6k.data().unwrap();
    let q5k = QTensor::quantize(&w, GgmlDType::Q5K).unwrap();
    let q5k = q5k.data().unwrap();
    let iq4 = random_iq4_xs(n, k);
    let pack = |t: QuantType, data: &[u8], four_bit| {
        PackedMatrix::from_ggml_stacked(&[(t, data, n)], k, four_bit).unwrap()
    };
    let variants = [
        (
            "q4_k-nibbles",
            pack(GgmlDType::Q4K.into(), &q4k, FourBit::Nibbles),
        ),
        (
            "q4_k-bytes",
            pack(GgmlDType::Q4K.into(), &q4k, FourBit::Bytes),
        ),
        (
            "q5_k-nibbles",
            pack(GgmlDType::Q5K.into(), &q5k, FourBit::Nibbles),
        ),
        (
            "q5_k-bytes",
            pack(GgmlDType::Q5K.into(), &q5k, FourBit::Bytes),
        ),
        (
            "q6_k-nibbles",
            pack(GgmlDType::Q6K.into(), &q6k, FourBit::Nibbles),
        ),
        (
            "iq4_xs-nibbles",
            pack(QuantType::Iq4Xs, &iq4, FourBit::Nibbles),
        ),
        ("iq4_xs-bytes", pack(QuantType::Iq4Xs, &iq4, FourBit::Bytes)),
        ("q6_k", pack(GgmlDType::Q6K.into(), &q6k, FourBit::Bytes)),
        (
            "q6_k-stored-offsets",
            pack(GgmlDType::Q6K.into(), &q6k, FourBit::Bytes).with_stored_offsets(),
        ),
    ];
    let mut g = c.benchmark_group(format!("int8_matmul/layout-{n}x{k}"));
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for m in [1usize, 24] {
        let x = random(m * k, 2);
        g.throughput(Throughput::Elements((m * n * k) as u64));
        for (name, p) in &variants {
            g.bench_with_input(BenchmarkId::new(*name, m), &m, |b, &m| {
                b.iter(|| matmul(p, &x, m, layout_path()))
            });
        }
    }
    g.finish();
}

/// The path the layout group runs: AFFECTBENCH_KERNEL (a path's name) or the fastest.
fn layout_path() -> KernelPath {
    std::env::var("AFFECTBENCH_KERNEL")
        .ok()
        .and_then(|name| KernelPath::from_name(&name))
        .unwrap_or_else(best_path)
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
            for path in KernelPath::ALL.into_iter().filter(|p| p.supported()) {
                if path == KernelPath::Scalar && m > 1 {
                    continue;
                }
                g.bench_with_input(BenchmarkId::new(format!("{path}/rows"), m), &m, |b, &m| {
                    b.iter(|| matmul(&w, &x, m, path))
                });
            }
        }
        g.finish();
    }
}

criterion_group!(benches, bench, layouts);
criterion_main!(benches);
