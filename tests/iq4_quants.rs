//! IQ4_NL and IQ4_XS, the two types candle's GGUF reader refuses (a whole file fails
//! over one such tensor): our decoder against llama.cpp's Python package (gguf-py) on
//! random blocks, the packed int8 form against that decoder, tiny IQ4 models loaded
//! and run on the packed kernel against their dense reference, and a type we do not
//! read named in the error.

use crate::common;

use affectbench::gguf::GgufFile;
use affectbench::kernels::int8_matmul::{matmul, KernelPath};
use affectbench::kernels::packed::{FourBit, PackedMatrix};
use affectbench::model::inspect::inspect_gguf;
use affectbench::model::{Kernels, KvCache, LoadOptions, Model};
use affectbench::quant::QuantType;
use affectbench::registry::ModelRef;
use candle_core::quantized::gguf_file::Value;
use common::{argmax, max_abs_diff, quantize_iq4, write_gguf_raw, write_tiny_gguf_iq4, Tiny};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Deserialize)]
struct Reference {
    types: BTreeMap<String, Blocks>,
}

#[derive(Deserialize)]
struct Blocks {
    rows: usize,
    k: usize,
    hex: String,
    values: Vec<f32>,
}

fn reference() -> Vec<(QuantType, Blocks)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/iq4_reference.json");
    let r: Reference = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    r.types
        .into_iter()
        .map(|(name, b)| {
            let t = match name.as_str() {
                "IQ4_NL" => QuantType::Iq4Nl,
                "IQ4_XS" => QuantType::Iq4Xs,
                other => panic!("unexpected type {other} in the fixture"),
            };
            (t, b)
        })
        .collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn iq4_blocks_decode_as_llama_cpps_gguf_py_decodes_them() {
    let types = reference();
    assert_eq!(types.len(), 2);
    for (t, b) in types {
        let data = unhex(&b.hex);
        assert_eq!(data.len(), t.bytes_for(b.rows * b.k).unwrap(), "{t}");
        let ours = t.dequantize_iq4(&data).unwrap();
        assert_eq!(ours.len(), b.values.len(), "{t}");
        for (i, (a, e)) in ours.iter().zip(&b.values).enumerate() {
            assert_eq!(
                a.to_bits(),
                e.to_bits(),
                "{t} value {i}: {a} vs gguf-py {e}"
            );
        }
    }
}

#[test]
fn packed_iq4_holds_the_decoded_weights_in_both_layouts() {
    for (t, b) in reference() {
        let data = unhex(&b.hex);
        let nibbles = PackedMatrix::from_ggml(t, &data, b.rows, b.k).unwrap();
        let bytes = PackedMatrix::from_ggml_bytes(t, &data, b.rows, b.k).unwrap();
        assert!(nibbles.nibbles && nibbles.codebook.is_some(), "{t}");
        assert!(!bytes.nibbles && bytes.codebook.is_none(), "{t}");
        for p in [&nibbles, &bytes] {
            for r in 0..b.rows {
                let row = p.dequantize_row(r);
                for (j, (a, e)) in row.iter().zip(&b.values[r * b.k..]).enumerate() {
                    assert!(
                        (a - e).abs() <= 1e-6 * e.abs().max(1.0),
                        "{t} row {r} col {j}: {a} vs {e}"
                    );
                }
            }
        }
        // Close to the float product (activations are quantised to 8 bits).
        let x: Vec<f32> = (0..2 * b.k).map(|i| ((i as f32) * 0.37).sin()).collect();
        let y = matmul(&bytes, &x, 2, KernelPath::Scalar);
        for m in 0..2 {
            for r in 0..b.rows {
                let w = &b.values[r * b.k..(r + 1) * b.k];
                let exact: f32 = w.iter().zip(&x[m * b.k..]).map(|(w, x)| w * x).sum();
                let norm: f32 = w.iter().map(|w| w.abs()).sum();
                let got = y[m * b.rows + r];
                assert!(
                    (got - exact).abs() < 0.01 * norm,
                    "{t} row {r}: {got} vs {exact}"
                );
            }
        }
    }
}

#[test]
fn the_code_book_nibble_kernel_gives_the_byte_layouts_results_bit_for_bit() {
    // 53 rows: three full tiles (the SIMD kernel's 3-tile path) and a partial one.
    let (n, k) = (53, 512);
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i as f32) * 0.613).sin() * 0.3)
        .collect();
    for (t, xs) in [(QuantType::Iq4Xs, true), (QuantType::Iq4Nl, false)] {
        let data = quantize_iq4(&w, xs);
        let nibbles = PackedMatrix::from_ggml(t, &data, n, k).unwrap();
        let bytes = PackedMatrix::from_ggml_bytes(t, &data, n, k).unwrap();
        // The nibble layout holds half a byte a weight less; scales and offsets are equal.
        assert_eq!(
            bytes.storage_bytes() - nibbles.storage_bytes(),
            nibbles.n_tiles() * 16 * k / 2
        );
        for m in [1, 5, 9] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i as f32) * 0.37).cos()).collect();
            let reference = matmul(&bytes, &x, m, KernelPath::Scalar);
            for path in KernelPath::ALL.into_iter().filter(|p| p.supported()) {
                assert_eq!(
                    matmul(&nibbles, &x, m, path),
                    reference,
                    "{t} {path:?} m={m}"
                );
                assert_eq!(matmul(&bytes, &x, m, path), reference, "{t} {path:?} m={m}");
            }
        }
    }
}

/// A llama-shaped tiny model whose inner dimensions are multiples of IQ4_XS's 256.
fn tiny_256() -> Tiny {
    Tiny {
        d: 256,
        ffn: 256,
        ..Tiny::llama()
    }
}

fn load(path: &Path, kernels: Kernels) -> Model {
    Model::load_ref(
        &ModelRef::GgufFile(path.to_path_buf()),
        &LoadOptions {
            kernels,
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn an_iq4_model_loads_packs_every_matrix_and_matches_its_dense_reference() {
    let dir = tempfile::tempdir().unwrap();
    for (xs, name) in [(true, "IQ4_XS"), (false, "IQ4_NL")] {
        let path = dir.path().join(format!("{name}.gguf"));
        write_tiny_gguf_iq4(&path, &tiny_256(), 3, xs);
        let inspection = inspect_gguf(&path).unwrap();
        let matrices: Vec<_> = inspection
            .tensors
            .iter()
            .filter(|t| t.shape.len() == 2)
            .collect();
        assert_eq!(matrices.len(), 2 + 7 * 2, "{name}");
        for t in &matrices {
            assert_eq!(t.ggml_type, name, "{}", t.name);
            if t.role == "matrix" {
                assert!(
                    t.kernel.starts_with("packed-int8"),
                    "{}: {}",
                    t.name,
                    t.kernel
                );
            }
        }
        assert!(inspection.exceptions().is_empty(), "{name}");

        let tokens: Vec<u32> = vec![5, 72, 101, 108, 108, 111, 256, 258, 44, 99];
        let logits = |kernels| {
            load(&path, kernels)
                .transformer
                .last_logits(&tokens, &mut KvCache::new(2))
                .unwrap()
        };
        let (packed, dense) = (logits(Kernels::Packed), logits(Kernels::DenseF32));
        // The nibble layout (the default above 1 GiB) gives the byte layout's logits.
        let nibbles = Model::load_ref(
            &ModelRef::GgufFile(path.clone()),
            &LoadOptions {
                four_bit: Some(FourBit::Nibbles),
                ..Default::default()
            },
        )
        .unwrap()
        .transformer
        .last_logits(&tokens, &mut KvCache::new(2))
        .unwrap();
        assert_eq!(nibbles, packed, "{name}");
        let range = dense.iter().cloned().fold(f32::MIN, f32::max)
            - dense.iter().cloned().fold(f32::MAX, f32::min);
        let diff = max_abs_diff(&packed, &dense);
        eprintln!("{name}: max |packed - dense| = {diff:.4} (logit range {range:.2})");
        assert!(range > 1.0, "{name}: logits nearly flat ({range})");
        assert!(diff < 0.03 * range, "{name}: {diff} vs range {range}");
        let (a, b) = (argmax(&packed), argmax(&dense));
        assert!(
            a == b || (dense[a] - dense[b]).abs() < 0.05,
            "{name}: top token {a} vs dense {b}"
        );
    }
}

#[test]
fn a_tensor_type_we_do_not_read_is_named_with_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("iq2.gguf");
    let meta = vec![(
        "general.architecture".to_string(),
        Value::String("llama".into()),
    )];
    // IQ2_XXS: 66 bytes per 256 values.
    let tensors = vec![(
        "blk.0.ffn_down.weight".to_string(),
        vec![4, 256],
        16,
        vec![0u8; 4 * 66],
    )];
    write_gguf_raw(&path, &meta, &tensors);
    let err = GgufFile::open(&path)
        .err()
        .expect("IQ2_XXS must be refused");
    let message = err.to_string();
    assert!(
        message.contains("blk.0.ffn_down.weight") && message.contains("IQ2_XXS (type 16)"),
        "{message}"
    );
    assert!(!message.contains("truncated"), "{message}");
}
