//! Property tests over hostile input: mutated GGUF headers, mutated scenario files and
//! mutated trials.jsonl lines must give an error (or load), never a panic or an abort.
//! Each runs a bounded number of cases (`CASES`), seeded by proptest, so the suite's
//! time is fixed; a failure prints the minimal input that broke it.

use crate::common;

use affectbench::model::{LoadOptions, Model};
use affectbench::registry::ModelRef;
use affectbench::results::read::parse_trial;
use affectbench::scenario::{Library, Study};
use common::{write_tiny_gguf, Tiny};
use proptest::prelude::*;
use std::path::Path;

const CASES: u32 = 200;

fn tiny_gguf_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_tiny_gguf(&path, &Tiny::qwen2(), 1);
    std::fs::read(path).unwrap()
}

/// Where the tensor data starts (past the header): mutations aim at the header.
fn header_len(bytes: &[u8]) -> usize {
    let name = b"blk.1.ffn_down.weight";
    bytes
        .windows(name.len())
        .rposition(|w| w == name)
        .map(|p| p + name.len() + 64)
        .unwrap_or(4096)
        .min(bytes.len())
}

proptest! {
    // A fixed seed: the suite runs the same cases every time (CI found a case a random
    // seed had not: a tensor with a zero dimension, since refused).
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, rng_seed: proptest::test_runner::RngSeed::Fixed(20261124), ..ProptestConfig::default() })]

    #[test]
    fn a_mutated_gguf_header_is_an_error_never_a_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        wide in prop::option::of((any::<prop::sample::Index>(), prop::sample::select(vec![u64::MAX, 1 << 62, 1 << 40, 1 << 31, 0]))),
    ) {
        let mut bytes = tiny_gguf_bytes();
        let header = header_len(&bytes);
        for (at, byte) in edits {
            let i = at.index(header);
            bytes[i] = byte;
        }
        // A whole length or count field overwritten with a huge value.
        if let Some((at, value)) = wide {
            let i = at.index(header.saturating_sub(8));
            bytes[i..i + 8].copy_from_slice(&value.to_le_bytes());
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, &bytes).unwrap();
        // Loading may succeed (the edit hit a value that still makes sense) or fail;
        // proptest fails the test on a panic.
        let _ = Model::load_ref(&ModelRef::GgufFile(path), &LoadOptions::default());
    }

    #[test]
    fn a_mutated_scenario_file_is_an_error_never_a_panic(
        file in prop::sample::select(vec!["instruments/sadness-state.toml", "instruments/vas.toml", "studies/smoke.toml", "inductions/sadness.toml", "regulations/breathing.toml", "tasks/sentence-stems.toml"]),
        edits in prop::collection::vec((any::<prop::sample::Index>(), prop::sample::select(vec!["", "0", "-1", "nan", "\"", "[", "]", "{", "=", "\n", "1e400", "\"\"", "[]", "99999999999999999999", "../", "é"])), 1..5),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["instruments", "studies", "inductions", "regulations", "tasks"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
            for entry in std::fs::read_dir(Path::new("scenarios").join(sub)).unwrap() {
                let entry = entry.unwrap();
                if entry.path().extension().is_some_and(|e| e == "toml") {
                    std::fs::copy(entry.path(), root.join(sub).join(entry.file_name())).unwrap();
                }
            }
        }
        let path = root.join(file);
        let mut text = std::fs::read_to_string(&path).unwrap();
        for (at, insert) in edits {
            let mut i = at.index(text.len());
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            // Replace the next token-sized run with the insertion.
            let end = text[i..].find([' ', '\n', ',']).map_or(text.len(), |e| i + e);
            text.replace_range(i..end, insert);
        }
        std::fs::write(&path, &text).unwrap();
        if let Ok(lib) = Library::load(root) {
            let _ = Study::load(&root.join("studies/smoke.toml"), &lib);
        }
    }

    #[test]
    fn a_mutated_trial_record_is_an_error_never_a_panic(
        line in 0usize..24,
        edits in prop::collection::vec((any::<prop::sample::Index>(), prop::sample::select(vec!["", "null", "[]", "{}", "NaN", "-1", "1e999", "\"x\"", "\"item\"", "\"completion\"", ",", "}"])), 1..4),
    ) {
        let text = std::fs::read_to_string("tests/data/schema1-smoke/trials.jsonl").unwrap();
        let mut record = text.lines().nth(line).unwrap().to_string();
        for (at, insert) in edits {
            let mut i = at.index(record.len());
            while !record.is_char_boundary(i) {
                i -= 1;
            }
            let end = record[i..].find([',', ':', '}', ']']).map_or(record.len(), |e| i + e);
            record.replace_range(i..end, insert);
        }
        let _ = parse_trial(record.as_bytes(), 7);
        // The same line in a run directory read by the report's loader.
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy("tests/data/schema1-smoke/run.json", dir.path().join("run.json")).unwrap();
        std::fs::write(dir.path().join("trials.jsonl"), format!("{record}\n")).unwrap();
        let _ = affectbench::report::load::load_runs(&[dir.path().to_path_buf()]);
    }
}

#[test]
fn a_huge_gguf_length_field_is_refused_before_anything_is_allocated() {
    // candle allocates what a length field says before reading (`vec![0; len]`); on a
    // system without memory overcommit a length of 2^36 aborts the process. The header
    // check refuses it first, naming the byte and the field. Bytes 24..32 of a v3 file are the length of the first metadata key; 16..24 the
    // metadata count; 8..16 the tensor count.
    for at in [24usize, 16, 8] {
        let mut bytes = tiny_gguf_bytes();
        bytes[at..at + 8].copy_from_slice(&(1u64 << 36).to_le_bytes());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, &bytes).unwrap();
        let err = affectbench::gguf::GgufFile::open(&path)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("m.gguf") && err.contains("more than the"),
            "byte {at}: {err}"
        );
    }
}

#[test]
fn a_gguf_tensor_with_a_zero_dimension_is_refused_not_allocated_from_the_other() {
    // Found by the GGUF property test in CI: dims [n, 0] have zero bytes of data, so
    // they passed the size check, and packing allocated n x (tile) bytes (2^55): abort.
    let mut bytes = tiny_gguf_bytes();
    let name = b"blk.0.ffn_down.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    assert_eq!(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()), 2);
    bytes[at + 4..at + 12].copy_from_slice(&0u64.to_le_bytes());
    bytes[at + 12..at + 20].copy_from_slice(&(1u64 << 50).to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let err = affectbench::gguf::GgufFile::open(&path)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("blk.0.ffn_down.weight") && err.contains("impossible dimensions"),
        "{err}"
    );
}

/// The metadata sizes a model is built from, and values a hostile header might give.
const SIZE_KEYS: [&str; 7] = [
    "qwen2.block_count",
    "qwen2.attention.key_length",
    "qwen2.embedding_length",
    "qwen2.attention.head_count",
    "qwen2.attention.head_count_kv",
    "qwen2.context_length",
    "general.alignment",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 60, failure_persistence: None, rng_seed: proptest::test_runner::RngSeed::Fixed(20261207), ..ProptestConfig::default() })]

    #[test]
    fn a_hostile_size_in_the_gguf_metadata_is_an_error_never_a_panic_or_an_abort(
        key in prop::sample::select(SIZE_KEYS.to_vec()),
        value in prop::sample::select(vec![0u64, 1, 2, 3, 7, 1 << 31, (1 << 32) - 1, 1 << 40, u64::MAX]),
        wide in any::<bool>(),
    ) {
        use candle_core::quantized::gguf_file::Value;
        let dir = tempfile::tempdir().unwrap();
        let path = common::tiny_study_model_with_meta(dir.path(), "m.gguf", |meta| {
            let v = if wide || value > u32::MAX as u64 { Value::U64(value) } else { Value::U32(value as u32) };
            match meta.iter_mut().find(|(k, _)| k == key) {
                Some((_, old)) => *old = v,
                None => meta.push((key.to_string(), v)),
            }
        });
        // An abort (a terabyte allocation) would end the test binary; a panic fails it.
        let _ = Model::load_ref(&ModelRef::GgufFile(path), &LoadOptions::default());
    }
}
