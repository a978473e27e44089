//! Tests on tiny random-weight models the tests write themselves: parity with
//! candle-transformers, batching and cache forking, the safetensors path, and the errors
//! a user gets for bad inputs.

use crate::common;

use affectbench::cache::verify_file;
use affectbench::generate::generate;
use affectbench::model::reference::ReferenceModel;
use affectbench::model::{KvCache, LoadOptions, LogitsAt, Model};
use affectbench::registry::{ModelEntry, ModelRef, Registry};
use affectbench::rng::Stream;
use affectbench::sampling::{Sampling, SamplingParams};
use affectbench::Error;
use candle_core::IndexOp;
use common::{
    max_abs_diff, write_tiny_gguf, write_tiny_gguf_without, write_tiny_safetensors_dir, Tiny,
};
use std::path::Path;

fn load(path: &Path) -> Model {
    Model::load_ref(
        &ModelRef::resolve(&Registry::builtin(), path.to_str().unwrap()).unwrap(),
        &LoadOptions::default(),
    )
    .unwrap()
}

fn tokens() -> Vec<u32> {
    vec![5, 72, 101, 108, 108, 111, 256, 258, 44, 99, 3, 17, 200, 259]
}

#[test]
fn tiny_models_of_every_architecture_candle_runs_match_candle_transformers() {
    let dir = tempfile::tempdir().unwrap();
    for tiny in [
        Tiny::llama(),
        Tiny::qwen2(),
        Tiny::qwen3(),
        Tiny::gemma3(),
        Tiny::phi3(),
    ] {
        let path = dir.path().join(format!("{}.gguf", tiny.arch));
        write_tiny_gguf(&path, &tiny, 1);
        // candle-transformers' gemma3 uses SiLU in the MLP (see model::reference).
        let activation_override =
            (tiny.arch == "gemma3").then_some(affectbench::model::Activation::Silu);
        let ours = Model::load_ref(
            &ModelRef::GgufFile(path.clone()),
            &LoadOptions {
                activation_override,
                ..Default::default()
            },
        )
        .unwrap();
        let mut reference = ReferenceModel::load(&path).unwrap();
        let toks = tokens();
        let mut cache = KvCache::new(tiny.layers);
        let a = ours.transformer.last_logits(&toks, &mut cache).unwrap();
        let b = reference.forward(&toks, 0).unwrap();
        let range =
            b.iter().cloned().fold(f32::MIN, f32::max) - b.iter().cloned().fold(f32::MAX, f32::min);
        assert!(
            max_abs_diff(&a, &b) < 0.03 * range,
            "{}: {}",
            tiny.arch,
            max_abs_diff(&a, &b)
        );
        assert_eq!(common::argmax(&a), common::argmax(&b), "{}", tiny.arch);
    }
}

#[test]
fn a_sequence_gives_bit_identical_logits_alone_or_in_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_tiny_gguf(&path, &Tiny::llama(), 2);
    let m = load(&path);
    let seqs: Vec<Vec<u32>> = vec![
        tokens(),
        tokens().iter().rev().cloned().collect(),
        tokens().iter().map(|t| (t * 7) % 250).collect(),
    ];
    let batched = m
        .transformer
        .forward(&seqs, &mut KvCache::new(2), &LogitsAt::All)
        .unwrap();
    for (i, s) in seqs.iter().enumerate() {
        let alone = m
            .transformer
            .forward(
                std::slice::from_ref(s),
                &mut KvCache::new(2),
                &LogitsAt::All,
            )
            .unwrap();
        let (a, b) = (
            batched
                .i(i)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            alone.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(a, b, "sequence {i}");
    }
}

#[test]
fn a_forked_cache_continues_like_a_fresh_computation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_tiny_gguf(&path, &Tiny::qwen2(), 3);
    let m = load(&path);
    let prefix = tokens();
    let mut cache = KvCache::new(2);
    m.transformer
        .forward(std::slice::from_ref(&prefix), &mut cache, &LogitsAt::Last)
        .unwrap();
    for tail in [vec![10u32, 11, 12], vec![40, 41]] {
        let mut fork = cache.clone();
        let forked = m
            .transformer
            .forward(std::slice::from_ref(&tail), &mut fork, &LogitsAt::All)
            .unwrap();
        let mut whole = prefix.clone();
        whole.extend(&tail);
        let positions: Vec<usize> = (prefix.len()..whole.len()).collect();
        let fresh = m
            .transformer
            .forward(
                &[whole],
                &mut KvCache::new(2),
                &LogitsAt::Positions(positions),
            )
            .unwrap();
        let diff = max_abs_diff(
            &forked.flatten_all().unwrap().to_vec1().unwrap(),
            &fresh.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert!(diff < 1e-3, "fork vs fresh: {diff}");
    }
    assert_eq!(
        cache.len(),
        prefix.len(),
        "forks must not change the original cache"
    );
    // One prefix feeding a batch of continuations.
    let batch = cache.repeat_batch(2).unwrap();
    let out = m
        .transformer
        .forward(
            &[vec![10, 11], vec![40, 41]],
            &mut batch.clone(),
            &LogitsAt::Last,
        )
        .unwrap();
    assert_eq!(out.dims(), &[2, 1, m.transformer.config.vocab_size]);
    for (row, tail) in [vec![10u32, 11], vec![40, 41]].into_iter().enumerate() {
        let single = m
            .transformer
            .forward(&[tail], &mut cache.clone(), &LogitsAt::Last)
            .unwrap();
        let a: Vec<f32> = out
            .i(row)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = single.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(
            a, b,
            "row {row}: a shared prefix in a batch gives the same logits as its own fork"
        );
    }
}

#[test]
fn safetensors_directory_gives_the_same_logits_as_the_gguf() {
    // With Llama 3.1's rope scaling: rope_scaling in config.json against the factors
    // the converter writes into the GGUF.
    let scaled = Tiny {
        rope_freqs: true,
        ..Tiny::qwen2()
    };
    for tiny in [
        Tiny::qwen2(),
        Tiny::qwen3(),
        scaled,
        Tiny::gemma2(),
        Tiny::phi3(),
    ] {
        safetensors_matches_gguf(&tiny);
    }
}

fn safetensors_matches_gguf(tiny: &Tiny) {
    let dir = tempfile::tempdir().unwrap();
    let tiny = *tiny;
    let gguf = dir.path().join("m.gguf");
    write_tiny_gguf(&gguf, &tiny, 4);
    let hf = dir.path().join("hf");
    write_tiny_safetensors_dir(&hf, &tiny, &gguf);
    let from_st = load(&hf);
    let from_gguf = Model::load_ref(
        &ModelRef::GgufFile(gguf.clone()),
        &LoadOptions {
            kernels: affectbench::model::Kernels::DenseF32,
            ..Default::default()
        },
    )
    .unwrap();
    let toks = tokens();
    let a = from_st
        .transformer
        .last_logits(&toks, &mut KvCache::new(2))
        .unwrap();
    let b = from_gguf
        .transformer
        .last_logits(&toks, &mut KvCache::new(2))
        .unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-4, "{}", max_abs_diff(&a, &b));
    // Its tokenizer.json and chat template came along.
    assert_eq!(
        from_st.tokenizer.encode("the", false).unwrap(),
        from_gguf.tokenizer.encode("the", false).unwrap()
    );
    assert!(from_st
        .render_chat(&[affectbench::chat::Message::user("hi")])
        .unwrap()
        .contains("<|im_start|>user\nhi"));
}

#[test]
fn a_directory_keeping_its_template_in_chat_template_jinja_renders_it() {
    // Newer transformers save the template beside tokenizer_config.json, not in it; such
    // a directory was loaded with no template and refused by `run`.
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny::qwen2();
    let gguf = dir.path().join("m.gguf");
    write_tiny_gguf(&gguf, &tiny, 4);
    let hf = dir.path().join("hf");
    write_tiny_safetensors_dir(&hf, &tiny, &gguf);
    let messages = [affectbench::chat::Message::user("hi")];
    let in_config = load(&hf).render_chat(&messages).unwrap();

    let tc_path = hf.join("tokenizer_config.json");
    let mut tc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tc_path).unwrap()).unwrap();
    let template = tc.as_object_mut().unwrap().remove("chat_template").unwrap();
    std::fs::write(&tc_path, tc.to_string()).unwrap();
    let without = load(&hf);
    assert!(without.chat_template.is_none());
    let err = without.render_chat(&messages).unwrap_err().to_string();
    assert!(err.contains("chat_template.jinja"), "{err}");

    std::fs::write(hf.join("chat_template.jinja"), template.as_str().unwrap()).unwrap();
    assert_eq!(load(&hf).render_chat(&messages).unwrap(), in_config);
}

#[test]
fn same_seed_same_tokens_and_different_seeds_differ() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_tiny_gguf(&path, &Tiny::llama(), 5);
    let m = load(&path);
    let s = SamplingParams {
        temperature: 1.0,
        ..Default::default()
    }
    .resolve()
    .unwrap();
    let run = |seed| {
        generate(&m, &tokens(), &s, seed, Stream::Named("seq"), 24, |_| {})
            .unwrap()
            .tokens
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
    let greedy = |seed| {
        generate(
            &m,
            &tokens(),
            &Sampling::Greedy,
            seed,
            Stream::Named("seq"),
            12,
            |_| {},
        )
        .unwrap()
        .tokens
    };
    assert_eq!(greedy(1), greedy(99), "greedy ignores the seed");
}

#[test]
fn truncated_gguf_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_tiny_gguf(&path, &Tiny::llama(), 6);
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    let err = Model::load_ref(&ModelRef::GgufFile(cut.clone()), &LoadOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("truncated") && err.contains("cut.gguf"),
        "{err}"
    );
    let header_only = dir.path().join("header.gguf");
    std::fs::write(&header_only, &bytes[..100]).unwrap();
    let err = Model::load_ref(&ModelRef::GgufFile(header_only), &LoadOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("header.gguf"), "{err}");
}

#[test]
fn unknown_architecture_names_file_and_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_tiny_gguf(
        &path,
        &Tiny {
            arch: "mamba",
            ..Tiny::llama()
        },
        7,
    );
    let err = Model::load_ref(&ModelRef::GgufFile(path), &LoadOptions::default())
        .err()
        .unwrap();
    assert!(
        matches!(err, Error::UnsupportedArchitecture { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("'mamba'") && err.to_string().contains("m.gguf"),
        "{err}"
    );
}

#[test]
fn wrong_sha256_is_detected_and_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, b"not the model").unwrap();
    let entry = ModelEntry {
        name: "x".into(),
        description: String::new(),
        architecture: "llama".into(),
        file_name: "m.gguf".into(),
        sha256: "0".repeat(64),
        size: 13,
        licence: String::new(),
        hf: None,
        pypi: vec![],
        chat_template: None,
    };
    let err = verify_file(&entry, &path, |_| {}).unwrap_err().to_string();
    assert!(
        err.contains("sha256") && err.contains("fetch --force x"),
        "{err}"
    );
}

#[test]
fn a_prompt_longer_than_the_context_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_tiny_gguf(
        &path,
        &Tiny {
            context: 32,
            ..Tiny::llama()
        },
        8,
    );
    let m = load(&path);
    let long: Vec<u32> = (0..40).map(|i| i % 200).collect();
    let err = generate(
        &m,
        &long,
        &Sampling::Greedy,
        0,
        Stream::Named("s"),
        4,
        |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ContextOverflow {
                tokens: 44,
                context: 32
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("context is 32 tokens"), "{err}");
}

#[test]
fn registry_errors_carry_file_and_line() {
    let text = "default = \"a\"\n\n[[model]]\nname = \"a\"\nsurprise = 1\n";
    let err = Registry::parse(Path::new("reg.toml"), text)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("reg.toml:"), "{err}");
    assert!(err.contains("surprise"), "{err}");
    let builtin = Registry::builtin();
    for name in [
        "smollm2-135m-instruct",
        "qwen2.5-coder-0.5b-instruct",
        "gemma3-270m",
    ] {
        let e = builtin.get(name).unwrap();
        assert!(
            e.hf.is_some() && !e.pypi.is_empty(),
            "{name} lists both sources"
        );
    }
    assert!(
        builtin.get("gemma3-270m").unwrap().chat_template.is_some(),
        "gemma has no template in its file"
    );
}

#[test]
fn fused_attention_matches_the_candle_op_reference() {
    use affectbench::model::OpPath;
    let dir = tempfile::tempdir().unwrap();
    for tiny in [
        Tiny::llama(),
        Tiny::qwen2(),
        Tiny::qwen3(),
        Tiny::gemma2(),
        Tiny::gemma3(),
    ] {
        let path = dir.path().join(format!("{}.gguf", tiny.arch));
        write_tiny_gguf(&path, &tiny, 3);
        let mut m = load(&path);
        let mut run = |path: OpPath| {
            m.transformer.op_path = path;
            // A prefill longer than one query block, then a continuation of a fork:
            // covers the causal mask and attention across cache segments.
            let mut cache = KvCache::new(tiny.layers);
            let long: Vec<u32> = (0..3).flat_map(|_| tokens()).collect();
            let first = m
                .transformer
                .forward(&[long], &mut cache, &LogitsAt::All)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let mut fork = cache.clone();
            let next = m
                .transformer
                .forward(&[vec![7, 8, 9]], &mut fork, &LogitsAt::All)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (first, next)
        };
        let (fused, reference) = (run(OpPath::Fused), run(OpPath::Reference));
        for (a, b) in [(&fused.0, &reference.0), (&fused.1, &reference.1)] {
            let diff = max_abs_diff(a, b);
            // Both are f32; they differ only in summation order and the exp routine.
            assert!(
                diff < 1e-4,
                "{}: fused vs reference attention differ by {diff}",
                tiny.arch
            );
        }
    }
}

#[test]
fn a_gemma3_file_missing_a_required_norm_is_an_error_naming_the_tensor() {
    // Regression: the loader treated gemma3's q/k norms as optional and ran without them.
    let dir = tempfile::tempdir().unwrap();
    for missing in ["blk.1.attn_q_norm.weight", "blk.0.post_ffw_norm.weight"] {
        let path = dir.path().join("g.gguf");
        write_tiny_gguf_without(&path, &Tiny::gemma3(), 1, &[missing]);
        let err = Model::load_ref(&ModelRef::GgufFile(path.clone()), &LoadOptions::default())
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains(missing) && err.contains("gemma3 requires it"),
            "{err}"
        );
    }
    // A qwen2 file without its q/k/v biases likewise.
    let path = dir.path().join("q.gguf");
    write_tiny_gguf_without(&path, &Tiny::qwen2(), 1, &["blk.0.attn_k.bias"]);
    let err = Model::load_ref(&ModelRef::GgufFile(path), &LoadOptions::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("blk.0.attn_k.bias"), "{err}");
}

/// A registry file with one entry for a tiny model placed in `cache`.
fn tiny_registry(
    dir: &Path,
    cache: &Path,
    sha256: &str,
    size: u64,
    file_name: &str,
) -> std::path::PathBuf {
    let reg = dir.join("registry.toml");
    std::fs::write(
        &reg,
        format!(
            "default = \"tiny\"\n[[model]]\nname = \"tiny\"\ndescription = \"t\"\narchitecture = \"qwen2\"\nfile_name = \"{file_name}\"\nsha256 = \"{sha256}\"\nsize = {size}\nlicence = \"none\"\npypi = [{{ package = \"no-such-package-xyz\", version = \"0\", member = \"x\" }}]\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(cache.join("models/tiny")).unwrap();
    reg
}

fn generate_with(reg: &Path, cache: &Path) -> std::process::Output {
    common::affectbench_command()
        .env("AFFECTBENCH_CACHE", cache)
        .args(["--registry"])
        .arg(reg)
        .args([
            "generate",
            "--model",
            "tiny",
            "--prompt",
            "hi",
            "--max-tokens",
            "2",
        ])
        .output()
        .unwrap()
}

#[test]
fn a_cached_registry_file_with_the_right_size_but_wrong_sha256_is_refused() {
    // Regression: an entry whose sha256 was wrong but whose size was right was used
    // without a check, and the wrong hash recorded as the model's provenance.
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let model = dir.path().join("tiny.gguf");
    write_tiny_gguf(&model, &Tiny::qwen2(), 3);
    let size = std::fs::metadata(&model).unwrap().len();
    let sha = affectbench::cache::sha256_file(&model, |_| {}).unwrap();
    let cached = cache.join("models/tiny/tiny.gguf");

    let reg = tiny_registry(dir.path(), &cache, &"0".repeat(64), size, "tiny.gguf");
    std::fs::copy(&model, &cached).unwrap();
    let out = generate_with(&reg, &cache);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("sha256 is")
            && stderr.contains("fetch --force tiny"),
        "{stderr}"
    );

    // The right hash: used, and remembered so it is not hashed again.
    let reg = tiny_registry(dir.path(), &cache, &sha, size, "tiny.gguf");
    let out = generate_with(&reg, &cache);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let marker = std::fs::read_to_string(cache.join("models/tiny/tiny.gguf.verified")).unwrap();
    assert!(marker.starts_with(&sha), "{marker}");

    // Changed on disk after verification (same size): the marker no longer matches.
    let mut bytes = std::fs::read(&cached).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&cached, &bytes).unwrap();
    let out = generate_with(&reg, &cache);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("sha256 is"));
}

#[test]
fn a_cached_file_of_the_wrong_size_is_refused_with_the_fix_not_replaced() {
    // Regression: it was deleted and re-fetched under "not cached yet".
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let reg = tiny_registry(dir.path(), &cache, &"0".repeat(64), 1000, "tiny.gguf");
    let cached = cache.join("models/tiny/tiny.gguf");
    std::fs::write(&cached, b"short").unwrap();
    let out = generate_with(&reg, &cache);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("fetch --force tiny")
            && !stderr.contains("not cached yet"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&cached).unwrap(),
        b"short",
        "the file is left for the user to inspect"
    );
}

#[test]
fn a_registry_file_name_cannot_leave_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    for bad in ["../evil.gguf", "a/b.gguf", ".hidden"] {
        let reg = tiny_registry(dir.path(), &cache, &"0".repeat(64), 10, bad);
        let err = Registry::load(&reg).unwrap_err().to_string();
        assert!(
            err.contains("plain file name") && err.contains("registry.toml"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn impossible_hyper_parameters_are_errors_naming_the_key() {
    // Regression: head_count = 0 divided by zero (exit 101); a NaN rms epsilon ran and
    // produced NaN everywhere.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    for (tiny, key) in [
        (
            Tiny {
                heads: 0,
                kv_heads: 0,
                ..Tiny::llama()
            },
            "llama.attention.head_count",
        ),
        (
            Tiny {
                rms_eps: f32::NAN,
                ..Tiny::llama()
            },
            "attention.layer_norm_rms_epsilon",
        ),
        (
            Tiny {
                rms_eps: -1.0,
                ..Tiny::qwen2()
            },
            "attention.layer_norm_rms_epsilon",
        ),
    ] {
        write_tiny_gguf_heads_may_be_zero(&path, &tiny);
        let err = Model::load_ref(&ModelRef::GgufFile(path.clone()), &LoadOptions::default())
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
    // The same for a Hugging Face config.json.
    let tiny = Tiny::qwen2();
    let gguf = dir.path().join("q.gguf");
    write_tiny_gguf(&gguf, &tiny, 4);
    let hf = dir.path().join("hf");
    write_tiny_safetensors_dir(&hf, &tiny, &gguf);
    let config = std::fs::read_to_string(hf.join("config.json"))
        .unwrap()
        .replace("\"num_attention_heads\": 4", "\"num_attention_heads\": 0");
    std::fs::write(hf.join("config.json"), config).unwrap();
    let err = Model::load_ref(&ModelRef::SafetensorsDir(hf), &LoadOptions::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("num_attention_heads"), "{err}");
}

/// Writes a tiny GGUF whose head counts may be zero (the weights are shaped as if one).
fn write_tiny_gguf_heads_may_be_zero(path: &Path, tiny: &Tiny) {
    let shaped = Tiny {
        heads: tiny.heads.max(4),
        kv_heads: tiny.kv_heads.max(2),
        ..*tiny
    };
    common::write_tiny_gguf_with_meta(path, &shaped, 1, |meta| {
        for (k, v) in meta.iter_mut() {
            if k.ends_with("attention.head_count") {
                *v = candle_core::quantized::gguf_file::Value::U32(tiny.heads as u32);
            }
            if k.ends_with("attention.head_count_kv") {
                *v = candle_core::quantized::gguf_file::Value::U32(tiny.kv_heads as u32);
            }
        }
    });
}

#[test]
fn a_gguf_tensor_whose_dimensions_overflow_is_an_error_not_an_abort() {
    // Regression: dims whose element count overflows asked for 2^62 bytes (SIGABRT).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_tiny_gguf(&path, &Tiny::llama(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    // The first tensor info after the metadata: find "token_embd.weight", then its
    // two u64 dims follow (after the u32 dim count).
    let name = b"token_embd.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    assert_eq!(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()), 2);
    bytes[at + 4..at + 12].copy_from_slice(&(1u64 << 62).to_le_bytes());
    bytes[at + 12..at + 20].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = affectbench::gguf::GgufFile::open(&path)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("token_embd.weight") && err.contains("impossible dimensions"),
        "{err}"
    );
}

#[test]
fn offline_means_cache_only_with_the_command_to_run_elsewhere() {
    // Regression: HF_HUB_OFFLINE=1 still went to PyPI; there was no cache-only mode.
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let reg = tiny_registry(dir.path(), &cache, &"0".repeat(64), 1000, "tiny.gguf");
    for (flag, env) in [
        (true, None),
        (false, Some(("HF_HUB_OFFLINE", "1"))),
        (false, Some(("AFFECTBENCH_OFFLINE", "1"))),
    ] {
        let mut cmd = common::affectbench_command();
        cmd.env("AFFECTBENCH_CACHE", &cache)
            .env_remove("HF_HUB_OFFLINE")
            .env_remove("AFFECTBENCH_OFFLINE")
            .arg("--registry")
            .arg(&reg);
        if flag {
            cmd.arg("--offline");
        }
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = cmd
            .args(["generate", "--model", "tiny", "--prompt", "hi"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && stderr.contains("offline")
                && stderr.contains("affectbench models fetch tiny")
                && !stderr.contains("pip"),
            "{stderr}"
        );
    }
}

#[test]
fn a_rope_scaling_we_do_not_run_is_an_error_naming_the_key() {
    use candle_core::quantized::gguf_file::Value;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("yarn.gguf");
    common::write_tiny_gguf_with_meta(&path, &Tiny::qwen2(), 1, |meta| {
        meta.push((
            "qwen2.rope.scaling.type".into(),
            Value::String("yarn".into()),
        ));
    });
    let err = Model::load_ref(&ModelRef::GgufFile(path), &LoadOptions::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("qwen2.rope.scaling.type") && err.contains("yarn"),
        "{err}"
    );
    // Linear scaling divides every frequency by the factor.
    let linear = dir.path().join("linear.gguf");
    common::write_tiny_gguf_with_meta(&linear, &Tiny::qwen2(), 1, |meta| {
        meta.push((
            "qwen2.rope.scaling.type".into(),
            Value::String("linear".into()),
        ));
        meta.push(("qwen2.rope.scaling.factor".into(), Value::F32(2.0)));
    });
    let m = load(&linear);
    assert_eq!(
        m.transformer.config.rope_freq_factors,
        Some(vec![2.0; m.transformer.config.head_dim / 2])
    );
}

#[test]
fn gemma_27b_scales_queries_by_the_model_width_as_llama_cpp_does() {
    use affectbench::gguf::GgufFile;
    use affectbench::model::ModelConfig;
    let dir = tempfile::tempdir().unwrap();
    // A head dim (32) other than d / heads (16), so the two rules differ.
    for (arch, tiny, layers_27b) in [
        ("gemma2", Tiny::gemma2(), 46u32),
        ("gemma3", Tiny::gemma3(), 62),
    ] {
        let tiny = Tiny {
            head_dim: Some(32),
            ..tiny
        };
        let path = dir.path().join(format!("{arch}.gguf"));
        write_tiny_gguf(&path, &tiny, 1);
        let small = ModelConfig::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
        assert_eq!(small.attention_scale(), 1.0 / 32f32.sqrt(), "{arch}");
        // The layer count alone makes it a 27B's shape; the file holds that many tiny
        // blocks, since a block_count the tensors do not bear out is refused.
        write_tiny_gguf(
            &path,
            &Tiny {
                layers: layers_27b as usize,
                ..tiny
            },
            1,
        );
        let large = ModelConfig::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
        assert_eq!(large.attention_scale(), 1.0 / 16f32.sqrt(), "{arch}");
    }
}

#[test]
fn float_weight_files_run_on_the_dense_path_and_agree_with_f32_arithmetic() {
    use candle_core::quantized::GgmlDType;
    let dir = tempfile::tempdir().unwrap();
    for dtype in [GgmlDType::F32, GgmlDType::F16] {
        let tiny = Tiny {
            dtype,
            ..Tiny::llama()
        };
        let path = dir.path().join(format!("{dtype:?}.gguf"));
        write_tiny_gguf(&path, &tiny, 2);
        let default = load(&path);
        assert!(!default.transformer.uses_packed_weights(), "{dtype:?}");
        let dense = Model::load_ref(
            &ModelRef::GgufFile(path.clone()),
            &LoadOptions {
                kernels: affectbench::model::Kernels::DenseF32,
                ..Default::default()
            },
        )
        .unwrap();
        let toks = tokens();
        let a = default
            .transformer
            .last_logits(&toks, &mut KvCache::new(tiny.layers))
            .unwrap();
        let b = dense
            .transformer
            .last_logits(&toks, &mut KvCache::new(tiny.layers))
            .unwrap();
        assert!(
            max_abs_diff(&a, &b) < 1e-3,
            "{dtype:?}: {}",
            max_abs_diff(&a, &b)
        );
    }
}

#[test]
fn four_bit_weights_give_the_same_logits_as_nibbles_or_as_bytes() {
    use affectbench::kernels::packed::FourBit;
    use candle_core::quantized::GgmlDType;
    let dir = tempfile::tempdir().unwrap();
    for dtype in [GgmlDType::Q4_0, GgmlDType::Q4_1] {
        let tiny = Tiny {
            dtype,
            ..Tiny::llama()
        };
        let path = dir.path().join(format!("{dtype:?}.gguf"));
        write_tiny_gguf(&path, &tiny, 5);
        let logits = |four_bit| {
            let m = Model::load_ref(
                &ModelRef::GgufFile(path.clone()),
                &LoadOptions {
                    four_bit: Some(four_bit),
                    ..Default::default()
                },
            )
            .unwrap();
            assert!(m.transformer.uses_packed_weights());
            let mut cache = KvCache::new(tiny.layers);
            let prefill = m
                .transformer
                .forward(&[tokens()], &mut cache, &LogitsAt::All)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let next = m.transformer.last_logits(&[7], &mut cache).unwrap();
            (prefill, next)
        };
        assert_eq!(
            logits(FourBit::Nibbles),
            logits(FourBit::Bytes),
            "{dtype:?}"
        );
    }
}

#[test]
fn a_declared_sliding_window_that_is_not_applied_caps_the_context() {
    // Regression: Mistral's and Phi 3's declared window was ignored, so sequences longer
    // than it ran with full attention where transformers slides (llama.cpp ignores it
    // too); now the context stops at the window, where the two references agree.
    let dir = tempfile::tempdir().unwrap();
    for (tiny, key) in [
        (Tiny::phi3(), "phi3.attention.sliding_window"),
        (Tiny::llama(), "llama.attention.sliding_window"),
    ] {
        let path = dir.path().join(format!("{}.gguf", tiny.arch));
        common::write_tiny_gguf_with_meta(&path, &tiny, 2, |meta| {
            meta.push((
                key.into(),
                candle_core::quantized::gguf_file::Value::U32(12),
            ));
        });
        let m = load(&path);
        assert_eq!(m.transformer.max_positions(), 12, "{key}");
        let err = m
            .transformer
            .last_logits(&tokens()[..13], &mut KvCache::new(tiny.layers))
            .unwrap_err()
            .to_string();
        assert!(err.contains("exceeds the context of 12"), "{err}");
        assert!(m
            .transformer
            .last_logits(&tokens()[..12], &mut KvCache::new(tiny.layers))
            .is_ok());
    }
    // A Hugging Face config: capped where the window is used, not where Qwen's config
    // gives one with use_sliding_window false.
    let tiny = Tiny::qwen2();
    let gguf = dir.path().join("q.gguf");
    write_tiny_gguf(&gguf, &tiny, 4);
    for (extra, expected) in [
        ("\"sliding_window\": 12,", 12),
        (
            "\"sliding_window\": 12, \"use_sliding_window\": false,",
            tiny.context,
        ),
        ("\"sliding_window\": null,", tiny.context),
    ] {
        let hf = dir.path().join(format!("hf-{expected}-{}", extra.len()));
        write_tiny_safetensors_dir(&hf, &tiny, &gguf);
        let config = std::fs::read_to_string(hf.join("config.json"))
            .unwrap()
            .replacen('{', &format!("{{ {extra}"), 1);
        std::fs::write(hf.join("config.json"), config).unwrap();
        let m = Model::load_ref(&ModelRef::SafetensorsDir(hf), &LoadOptions::default()).unwrap();
        assert_eq!(m.transformer.max_positions(), expected, "{extra}");
    }
}
