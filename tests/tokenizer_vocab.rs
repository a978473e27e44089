//! Our GGUF tokenizers against llama.cpp's tokenizer test cases, on the real vocabularies
//! of the model families researchers bring (Llama 3, Qwen 2/3, Phi 3, Llama 2 / Mistral
//! SentencePiece, GPT-2): llama.cpp ships each vocabulary as a vocabulary-only GGUF with
//! texts and the ids Hugging Face tokenizers gives them (`common::llamacpp_vocab_dir`).

use crate::common;

use affectbench::gguf::GgufFile;
use affectbench::tokenizer::ModelTokenizer;

fn check(name: &str) {
    let dir = common::llamacpp_vocab_dir();
    let g = GgufFile::open(&dir.join(format!("ggml-vocab-{name}.gguf"))).unwrap();
    let tok = ModelTokenizer::from_gguf(&g).unwrap_or_else(|e| panic!("{name}: {e}"));
    let cases = common::llamacpp_vocab_cases(&dir, name);
    let mut wrong = Vec::new();
    for (text, expected) in &cases {
        let ours = tok.encode(text, false).unwrap();
        if &ours != expected {
            wrong.push(format!("{text:?}: ours {ours:?}, expected {expected:?}"));
        }
        // What a model writes decodes back to the text (the dummy prefix removed).
        let back = tok.decode(&ours).unwrap();
        if &back != text {
            wrong.push(format!("{text:?}: decodes as {back:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{name}: {} of {} cases differ:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    eprintln!("{name}: {} cases, all equal", cases.len());
}

#[test]
fn llama3_bpe_matches_llama_cpp() {
    check("llama-bpe");
}

#[test]
fn qwen2_matches_llama_cpp() {
    check("qwen2");
}

#[test]
fn gpt2_matches_llama_cpp() {
    check("gpt-2");
}

#[test]
fn phi3_sentencepiece_matches_llama_cpp() {
    check("phi-3");
}

#[test]
fn llama_sentencepiece_matches_llama_cpp() {
    check("llama-spm");
}
