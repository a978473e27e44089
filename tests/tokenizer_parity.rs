//! The tokenizer built from GGUF metadata must reproduce, id for id, what Hugging Face
//! transformers builds from the same file (reference ids committed in
//! tests/data/tokenizer_reference.json by scripts/tokenizer_reference.py).

use crate::common;

use affectbench::gguf::GgufFile;
use affectbench::tokenizer::ModelTokenizer;
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    models: std::collections::BTreeMap<String, Vec<Case>>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    ids_with_special: Vec<u32>,
}

fn check(model: &str) {
    let reference: Reference = serde_json::from_str(include_str!("data/tokenizer_reference.json"))
        .expect("reference file parses");
    let cases = reference
        .models
        .get(model)
        .unwrap_or_else(|| panic!("no reference ids for {model}"));
    assert!(cases.len() >= 30, "the corpus should be varied");
    let g = GgufFile::open(&common::real_model(model)).unwrap();
    let tok = ModelTokenizer::from_gguf(&g).unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let ids = tok.encode(&case.text, false).unwrap();
        if ids != case.ids {
            failures.push(format!(
                "{:?}\n  ours:      {:?}\n  reference: {:?}",
                case.text, ids, case.ids
            ));
        }
        let with_special = tok.encode(&case.text, true).unwrap();
        if with_special != case.ids_with_special {
            failures.push(format!(
                "{:?} (special)\n  ours:      {:?}\n  reference: {:?}",
                case.text, with_special, case.ids_with_special
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{model}: {} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_tokenizer_matches_transformers() {
    check("smollm2-135m-instruct");
}

#[test]
fn qwen2_tokenizer_matches_transformers() {
    check("qwen2.5-coder-0.5b-instruct");
}

#[test]
fn gemma3_tokenizer_matches_transformers() {
    check("gemma3-270m");
}

#[test]
fn decoding_round_trips_plain_text() {
    let g = GgufFile::open(&common::real_model("smollm2-135m-instruct")).unwrap();
    let tok = ModelTokenizer::from_gguf(&g).unwrap();
    for text in ["Hello, world!", "Ünïcödé and emoji 😀", "  spaced\n\nlines"] {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }
}
