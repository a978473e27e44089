//! Malformed model files and scenario names: each refused at load with the field at
//! fault, where it used to panic, abort on a terabyte allocation, load and panic later,
//! take minutes, blame the wrong field, or fail only at report time.

use crate::common::{self, tiny_study_model_with_meta};
use candle_core::quantized::gguf_file::Value;
use std::path::Path;

/// `affectbench models inspect FILE`: (exit code, what it printed). A panic exits 101
/// and an abort has no code; a file it cannot open exits 1, and a file it opens but
/// that cannot run is listed with `CANNOT RUN` (or `TOKENIZER cannot be built`) and the
/// reason, exiting 0.
fn inspect(path: &Path) -> (Option<i32>, String) {
    let o = common::affectbench_command()
        .args(["models", "inspect"])
        .arg(path)
        .output()
        .unwrap();
    (
        o.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Sets metadata `key` to `value` (added where absent).
fn set(meta: &mut Vec<(String, Value)>, key: &str, value: Value) {
    match meta.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = value,
        None => meta.push((key.to_string(), value)),
    }
}

#[test]
fn an_alignment_of_zero_is_refused_not_a_division_by_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_study_model_with_meta(dir.path(), "a.gguf", |m| {
        set(m, "general.alignment", Value::U32(0))
    });
    let (code, err) = inspect(&path);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("general.alignment is 0") && err.contains("power of two"),
        "{err}"
    );
}

#[test]
fn header_sizes_beyond_what_the_file_holds_are_refused_before_allocating() {
    // Regression: these aborted the process allocating 1-2 TB.
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Value, &str); 2] = [
        (
            "qwen2.block_count",
            Value::U32(u32::MAX),
            "no tensors for block 2",
        ),
        (
            "qwen2.attention.key_length",
            Value::U64(1 << 40),
            "query projection",
        ),
    ];
    for (i, (key, value, said)) in cases.into_iter().enumerate() {
        let path =
            tiny_study_model_with_meta(dir.path(), &format!("{i}.gguf"), |m| set(m, key, value));
        let (code, err) = inspect(&path);
        assert_eq!(code, Some(0), "{key}: {err}");
        assert!(
            err.contains("CANNOT RUN") && err.contains(key) && err.contains(said),
            "{key}: {err}"
        );
    }
}

#[test]
fn an_embedding_table_with_fewer_rows_than_the_vocabulary_is_refused_at_load() {
    // Regression: it loaded, passed `models inspect`, and panicked at the first token
    // beyond it.
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_study_model_with_meta(dir.path(), "short.gguf", |m| {
        for (k, v) in m.iter_mut() {
            if let Value::Array(a) = v {
                match k.as_str() {
                    "tokenizer.ggml.tokens" => {
                        a.extend((0..8).map(|i| Value::String(format!("extra{i}"))))
                    }
                    "tokenizer.ggml.token_type" => a.extend((0..8).map(|_| Value::I32(1))),
                    _ => {}
                }
            }
        }
    });
    let (code, err) = inspect(&path);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("CANNOT RUN")
            && err.contains("token_embd.weight")
            && err.contains("every token needs a row"),
        "{err}"
    );
}

#[test]
fn merges_naming_unknown_tokens_are_blamed_on_the_merges() {
    // Regression: reported against tokenizer.ggml.pre, which was fine.
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_study_model_with_meta(dir.path(), "merges.gguf", |m| {
        for (k, v) in m.iter_mut() {
            if let (true, Value::Array(a)) = (k == "tokenizer.ggml.merges", v) {
                a.push(Value::String("zq xw".into()));
            }
        }
    });
    let (code, err) = inspect(&path);
    assert_eq!(code, Some(0), "{err}");
    let said = err
        .lines()
        .find(|l| l.contains("cannot be built"))
        .unwrap_or_default();
    assert!(
        said.contains("tokenizer.ggml.merges")
            && said.contains("'zq xw'")
            && !said.contains("ggml.pre"),
        "{err}"
    );
}

#[test]
fn an_impossible_tensor_offset_is_blamed_on_the_offset() {
    // Regression: reported as impossible dimensions.
    let dir = tempfile::tempdir().unwrap();
    let path = common::tiny_study_model(dir.path());
    let layout = affectbench::gguf_check::check_header(&path).unwrap();
    let t = &layout.tensors[0];
    let mut bytes = std::fs::read(&path).unwrap();
    let at = t.type_at as usize + 4;
    bytes[at..at + 8].copy_from_slice(&(u64::MAX - 7).to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    let (code, err) = inspect(&path);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("impossible offset") && !err.contains("dimensions"),
        "{err}"
    );
}

#[test]
fn a_tokenizer_with_a_megabyte_token_loads() {
    // Regression: a 1 MB token took minutes to load: a SentencePiece vocabulary's merges
    // were derived by hashing the prefix at every character boundary of every token
    // (quadratic in its length; the code before the fix does not finish this test in
    // minutes). The tiny model's vocabulary is read as SentencePiece's here, one token
    // replaced by the long one, so the count of tokens still matches the weights.
    let dir = tempfile::tempdir().unwrap();
    let big = "a".repeat(1 << 20);
    let path = tiny_study_model_with_meta(dir.path(), "big.gguf", |m| {
        set(m, "tokenizer.ggml.model", Value::String("llama".into()));
        for (k, v) in m.iter_mut() {
            if let (true, Value::Array(a)) = (k == "tokenizer.ggml.tokens", v) {
                let at = a
                    .iter()
                    .position(|t| matches!(t, Value::String(s) if s == "in"))
                    .unwrap();
                a[at] = Value::String(big.clone());
            }
        }
    });
    let (code, err) = inspect(&path);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        !err.contains("cannot be built") && !err.contains("CANNOT RUN"),
        "{err}"
    );
    assert!(err.contains("tokenizer     llama"), "{err}");
}

#[test]
fn a_name_that_would_become_a_path_is_refused_when_the_scenarios_load() {
    // Regression: an induction's emotion 'sad/ness' passed validation, every trial ran,
    // then the report failed writing figures/emotion-sad/ness.svg.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("scenarios");
    common::copy_tree(Path::new("scenarios"), &root);
    let file = root.join("inductions/sadness.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("emotion = \"sadness\""));
    std::fs::write(
        &file,
        text.replace("emotion = \"sadness\"", "emotion = \"sad/ness\""),
    )
    .unwrap();
    let err = affectbench::scenario::Library::load(&root)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sadness.toml")
            && err.contains("emotion 'sad/ness'")
            && err.contains("no '/'"),
        "{err}"
    );
    let line = text.lines().position(|l| l.contains("emotion =")).unwrap() + 1;
    assert!(
        err.contains(&format!(":{line}")),
        "names line {line}: {err}"
    );
}
