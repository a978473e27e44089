//! Our forward pass against llama.cpp on tiny random-weight models of every
//! architecture and of the IQ4 types, in the GGUF files the tests write themselves.
//!
//! llama.cpp is not built in CI (it compiles for ~17 min), so its answers are a fixture:
//! `tests/data/llamacpp_reference.json` holds, per architecture, the sha256 of the tiny
//! GGUF it was computed on, the logits llama.cpp gives after a fixed token sequence and
//! its greedy continuation. This test writes the same files (deterministically: seeded
//! weights, candle's quantiser or the tests' IQ4 one), refuses a fixture made from other
//! bytes, and compares.
//! Regenerate with `scripts/llamacpp_reference.sh` (the test writes the files into
//! `target/tiny-gguf/`, then llama-cpp-python reads them).

use crate::common;

use affectbench::model::{KvCache, LoadOptions, Model};
use affectbench::registry::ModelRef;
use common::{max_abs_diff, write_tiny_gguf, write_tiny_gguf_iq4, Tiny};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The token sequence every model is fed (ids in the tiny byte-level vocabulary).
const TOKENS: [u32; 14] = [5, 72, 101, 108, 108, 111, 256, 258, 44, 99, 3, 17, 200, 259];
/// Max |ours - llama.cpp| over the logits, as a share of llama.cpp's logit range: both
/// quantise activations to 8 bits, in different block layouts.
const TOLERANCE: f32 = 0.03;
/// Greedy steps compared.
const GREEDY_STEPS: usize = 8;
/// A greedy step whose top two logits are closer than this (in llama.cpp's arithmetic)
/// is a tie that rounding decides: reported, not compared.
const NEAR_TIE: f32 = 0.05;

#[derive(Deserialize)]
struct Reference {
    llama_cpp_python: String,
    models: BTreeMap<String, ModelReference>,
}

#[derive(Deserialize)]
struct ModelReference {
    sha256: String,
    tokens: Vec<u32>,
    last_logits: Vec<f32>,
    greedy: Vec<u32>,
    /// llama.cpp's top-1 minus top-2 logit at each greedy step.
    greedy_margins: Vec<f32>,
}

/// How a tiny model's matrices are stored.
#[derive(Clone, Copy)]
enum Matrices {
    /// `Tiny::dtype`, written by candle.
    AsTiny,
    /// IQ4_XS or IQ4_NL (`xs`), which candle cannot write.
    Iq4 { xs: bool },
}

/// Writes the tiny model `name` of `models()` into `dir`.
fn write(dir: &Path, name: &str, tiny: &Tiny, matrices: Matrices) -> PathBuf {
    let path = dir.join(format!("{name}.gguf"));
    match matrices {
        Matrices::AsTiny => {
            write_tiny_gguf(&path, tiny, 1);
        }
        Matrices::Iq4 { xs } => write_tiny_gguf_iq4(&path, tiny, 1, xs),
    }
    path
}

/// The tiny models compared, by fixture key: every architecture, and the IQ4 types
/// (llama-shaped, IQ4_XS with inner dimensions a multiple of its 256-value blocks).
fn models() -> Vec<(&'static str, Tiny, Matrices)> {
    let mut out: Vec<_> = architectures()
        .into_iter()
        .map(|(name, tiny)| (name, tiny, Matrices::AsTiny))
        .collect();
    let wide = Tiny {
        d: 256,
        ffn: 256,
        ..Tiny::llama()
    };
    out.push(("llama-iq4_xs", wide, Matrices::Iq4 { xs: true }));
    out.push(("llama-iq4_nl", Tiny::llama(), Matrices::Iq4 { xs: false }));
    out
}

/// The tiny model of each architecture compared, by fixture key.
fn architectures() -> Vec<(&'static str, Tiny)> {
    vec![
        ("llama", Tiny::llama()),
        ("qwen2", Tiny::qwen2()),
        ("qwen3", Tiny::qwen3()),
        (
            "llama-rope-freqs",
            Tiny {
                rope_freqs: true,
                ..Tiny::llama()
            },
        ),
        ("gemma2", Tiny::gemma2()),
        ("gemma3", Tiny::gemma3()),
        ("phi3", Tiny::phi3()),
        (
            "phi3-longrope",
            Tiny {
                longrope: true,
                ..Tiny::phi3()
            },
        ),
    ]
}

fn tiny_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tiny-gguf");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Our top token at each of llama.cpp's greedy steps, fed llama.cpp's tokens, so one
/// near-tie does not derail the steps after it.
fn teacher_forced_argmax(model: &Model, tokens: &[u32], theirs: &[u32]) -> Vec<u32> {
    let mut cache = KvCache::new(model.transformer.config.n_layer);
    let mut logits = model.transformer.last_logits(tokens, &mut cache).unwrap();
    let mut out = Vec::new();
    for &next in theirs {
        out.push(common::argmax(&logits) as u32);
        logits = model.transformer.last_logits(&[next], &mut cache).unwrap();
    }
    out
}

#[test]
fn every_architecture_matches_llama_cpp_on_a_tiny_model() {
    let dir = tiny_dir();
    // Every file first: scripts/llamacpp_reference.sh reads them after a failing run.
    for (name, tiny, matrices) in models() {
        write(&dir, name, &tiny, matrices);
    }
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/llamacpp_reference.json"),
    )
    .unwrap();
    let reference: Reference = serde_json::from_str(&text).unwrap();
    let mut residual = BTreeMap::new();
    for (name, tiny, _) in models() {
        let path = dir.join(format!("{name}.gguf"));
        let sha = affectbench::cache::sha256_file(&path, |_| {}).unwrap();
        let r = reference.models.get(name).unwrap_or_else(|| {
            panic!("{name}: not in tests/data/llamacpp_reference.json; run scripts/llamacpp_reference.sh")
        });
        assert_eq!(
            r.sha256, sha,
            "{name}: the fixture was computed on other bytes; run scripts/llamacpp_reference.sh"
        );
        assert_eq!(r.tokens, TOKENS);
        let model =
            Model::load_ref(&ModelRef::GgufFile(path.clone()), &LoadOptions::default()).unwrap();
        let mut cache = KvCache::new(tiny.layers);
        let ours = model.transformer.last_logits(&TOKENS, &mut cache).unwrap();
        let theirs = &r.last_logits;
        let range = theirs.iter().cloned().fold(f32::MIN, f32::max)
            - theirs.iter().cloned().fold(f32::MAX, f32::min);
        let diff = max_abs_diff(&ours, theirs);
        eprintln!(
            "{name}: max |ours - llama.cpp {}| = {diff:.4} (logit range {range:.2})",
            reference.llama_cpp_python
        );
        assert!(diff < TOLERANCE * range, "{name}: {diff} vs range {range}");
        residual.insert(name, diff);
        assert_eq!(common::argmax(&ours), common::argmax(theirs), "{name}");
        assert_eq!(r.greedy.len(), GREEDY_STEPS);
        let ours = teacher_forced_argmax(&model, &TOKENS, &r.greedy);
        for (step, ((a, b), margin)) in ours
            .iter()
            .zip(&r.greedy)
            .zip(&r.greedy_margins)
            .enumerate()
        {
            if *margin < NEAR_TIE {
                eprintln!("{name}: greedy step {step} is a near-tie in llama.cpp (margin {margin:.4}); ours {a}, theirs {b}");
            } else {
                assert_eq!(
                    a, b,
                    "{name}: greedy step {step} (llama.cpp margin {margin})"
                );
            }
        }
    }
    // The rope factors matter at these positions: the same weights without them are
    // more than 5 times our residual further from llama.cpp's answer with them (so the
    // comparison above can tell).
    let plain = Model::load_ref(
        &ModelRef::GgufFile(dir.join("llama.gguf")),
        &LoadOptions::default(),
    )
    .unwrap();
    let ours = plain
        .transformer
        .last_logits(&TOKENS, &mut KvCache::new(plain.transformer.config.n_layer))
        .unwrap();
    let scaled = &reference.models["llama-rope-freqs"].last_logits;
    let gap = max_abs_diff(&ours, scaled);
    eprintln!("without the rope factors: max diff {gap:.4} from llama.cpp with them");
    assert!(gap > 5.0 * residual["llama-rope-freqs"], "{gap}");
    // And Phi 3's LongRoPE: without its factors, and without its attention factor.
    let longrope = &reference.models["phi3-longrope"].last_logits;
    let no_attn_factor = dir.join("phi3-longrope-no-attn-factor.gguf");
    common::write_tiny_gguf_with_meta(
        &no_attn_factor,
        &Tiny {
            longrope: true,
            ..Tiny::phi3()
        },
        1,
        |meta| meta.retain(|(k, _)| !k.ends_with("rope.scaling.attn_factor")),
    );
    for (which, file) in [
        ("rope factors", dir.join("phi3.gguf")),
        ("attention factor", no_attn_factor),
    ] {
        let m = Model::load_ref(&ModelRef::GgufFile(file), &LoadOptions::default()).unwrap();
        let ours = m
            .transformer
            .last_logits(&TOKENS, &mut KvCache::new(m.transformer.config.n_layer))
            .unwrap();
        let gap = max_abs_diff(&ours, longrope);
        eprintln!("phi3 LongRoPE without its {which}: max diff {gap:.4}");
        assert!(gap > 5.0 * residual["phi3-longrope"], "{which}: {gap}");
    }
    // So do Gemma 2's soft caps, each on its own.
    let capped = &reference.models["gemma2"].last_logits;
    for (which, drop) in [("attention", (true, false)), ("final", (false, true))] {
        let mut m = Model::load_ref(
            &ModelRef::GgufFile(dir.join("gemma2.gguf")),
            &LoadOptions::default(),
        )
        .unwrap();
        if drop.0 {
            m.transformer.config.attn_softcap = None;
        }
        if drop.1 {
            m.transformer.config.final_softcap = None;
        }
        let ours = m
            .transformer
            .last_logits(&TOKENS, &mut KvCache::new(m.transformer.config.n_layer))
            .unwrap();
        let gap = max_abs_diff(&ours, capped);
        eprintln!("gemma2 without its {which} soft cap: max diff {gap:.4}");
        assert!(gap > 5.0 * residual["gemma2"], "{which}: {gap}");
    }
}
