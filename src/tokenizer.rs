//! Building a `tokenizers::Tokenizer` from GGUF metadata, so a GGUF file is all a run
//! needs. The construction mirrors Hugging Face transformers' GGUF converter, which is the
//! reference the test suite checks us against (ids must match exactly):
//!
//! - `tokenizer.ggml.model = gpt2`: byte-level BPE from tokens + merges. The pre-tokenizer
//!   depends on `tokenizer.ggml.pre`: `qwen2` splits with Qwen2's regex then byte-maps;
//!   `smollm`, `gpt2` and the like use GPT-2's byte-level regex.
//! - `tokenizer.ggml.model = llama` (SentencePiece vocabulary, Gemma 3): BPE with byte
//!   fallback whose merges are derived from the vocabulary, best-first in token order
//!   (Gemma's scores do not follow its merge order), spaces written as `▁`.
//! - Tokens marked control become special tokens; user-defined ones become added tokens.
//!
//! An unknown `pre` value is an error, never a guess.

/// `tokenizer.ggml.model` of SentencePiece vocabularies. llama.cpp names the tokenizer
/// model after the family that introduced it: this is a tokenizer type, not the `llama`
/// architecture (which lives in `model::arch`).
const SENTENCEPIECE_MODEL: &str = "llama";
/// `tokenizer.ggml.pre` of Qwen 2's pre-tokenizer (also used by other families).
const QWEN2_PRE: &str = "qwen2";

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use ahash::AHashMap;
use std::collections::HashMap;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::prepend::Prepend;
use tokenizers::normalizers::replace::Replace;
use tokenizers::normalizers::Sequence as NormalizerSequence;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer,
};

/// Qwen2's pre-tokenizer split (from its tokenizer.json).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `tokenizer.ggml.pre` of Llama 3's pre-tokenizer.
const LLAMA3_PRE: &str = "llama-bpe";
/// Llama 3's split (from its tokenizer.json): Qwen 2's, with digits in runs of up to 3.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `pre` values whose text splitting is GPT-2's byte-level regex.
const GPT2_REGEX_PRES: &[&str] = &["default", "gpt2", "gpt-2", "smollm"];

const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// A tokenizer together with the special-token facts generation needs.
#[derive(Clone)]
pub struct ModelTokenizer {
    pub tokenizer: Tokenizer,
    pub bos: Option<(u32, String)>,
    pub eos: Option<(u32, String)>,
    /// Token ids that end a generated turn (eos plus e.g. `<|im_end|>`, `<end_of_turn>`).
    pub stop_ids: Vec<u32>,
    /// Whether a raw prompt should start with BOS (metadata `add_bos_token`).
    pub add_bos: bool,
}

impl ModelTokenizer {
    /// Token ids of `text`; special-token strings in the text are matched, BOS is added
    /// only when `add_bos` is true and the model wants one.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode_fast(text, false)
            .map_err(|e| Error::Tokenizer {
                path: "<tokenizer>".into(),
                message: e.to_string(),
            })?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_bos && self.add_bos {
            if let Some((id, _)) = &self.bos {
                ids.push(*id);
            }
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| Error::Tokenizer {
                path: "<tokenizer>".into(),
                message: e.to_string(),
            })
    }

    /// Builds the tokenizer from a GGUF file's metadata.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let model = g.string("tokenizer.ggml.model")?;
        let tokens = g.strings("tokenizer.ggml.tokens")?;
        let types = if g.has("tokenizer.ggml.token_type") {
            g.i32s("tokenizer.ggml.token_type")?
        } else {
            vec![]
        };
        let err = |message: String| Error::Tokenizer {
            path: g.path.clone(),
            message,
        };
        let (mut tokenizer, byte_level) = match model.as_str() {
            "gpt2" => {
                let pre = g
                    .opt_string("tokenizer.ggml.pre")?
                    .unwrap_or_else(|| "default".into());
                let merges = g.strings("tokenizer.ggml.merges")?;
                (
                    byte_level_bpe(&tokens, &merges, &pre).map_err(|(key, m)| Error::Metadata {
                        path: g.path.clone(),
                        key: key.into(),
                        problem: m,
                    })?,
                    true,
                )
            }
            SENTENCEPIECE_MODEL => {
                // SentencePiece's dummy prefix: "▁" before the text, unless the file says
                // not (Gemma); llama.cpp's default is to add it.
                let prefix = g
                    .opt_bool("tokenizer.ggml.add_space_prefix")?
                    .unwrap_or(true);
                // Merges follow the pieces' scores (Llama 2, Mistral, Phi 3), as in
                // SentencePiece and transformers' converter; Gemma's scores do not
                // follow its merge order, so its merges follow the vocabulary order.
                let gemma = g.architecture().is_ok_and(|a| a.starts_with("gemma"));
                let scores = if !gemma && g.has("tokenizer.ggml.scores") {
                    Some(g.f32s("tokenizer.ggml.scores")?)
                } else {
                    None
                };
                (
                    sentencepiece_bpe(&tokens, scores.as_deref(), prefix).map_err(err)?,
                    false,
                )
            }
            other => {
                return Err(Error::Metadata {
                    path: g.path.clone(),
                    key: "tokenizer.ggml.model".into(),
                    problem: format!(
                        "is '{other}'; supported: gpt2 (byte-level BPE), llama (SentencePiece)"
                    ),
                })
            }
        };
        add_special_tokens(&mut tokenizer, &tokens, &types, byte_level).map_err(err)?;

        let id_tok = |key: &str| -> Result<Option<(u32, String)>> {
            Ok(g.opt_usize(key)?
                .and_then(|id| tokens.get(id).map(|t| (id as u32, t.clone()))))
        };
        let bos = id_tok("tokenizer.ggml.bos_token_id")?;
        let eos = id_tok("tokenizer.ggml.eos_token_id")?;
        let add_bos = g
            .opt_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(model == SENTENCEPIECE_MODEL);
        let stop_ids = stop_ids(&eos, |name| {
            tokens.iter().position(|t| t == name).map(|i| i as u32)
        });
        Ok(Self {
            tokenizer,
            bos,
            eos,
            stop_ids,
            add_bos,
        })
    }

    /// Wraps a tokenizer loaded from a `tokenizer.json` (safetensors directories).
    pub fn from_tokenizer_json(
        path: &std::path::Path,
        bos: Option<String>,
        eos: Option<String>,
        add_bos: bool,
    ) -> Result<Self> {
        let tokenizer = Tokenizer::from_file(path).map_err(|e| Error::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let lookup =
            |t: Option<String>| t.and_then(|t| tokenizer.token_to_id(&t).map(|id| (id, t)));
        let bos = lookup(bos);
        let eos = lookup(eos);
        let stop_ids = stop_ids(&eos, |name| tokenizer.token_to_id(name));
        Ok(Self {
            tokenizer,
            bos,
            eos,
            stop_ids,
            add_bos,
        })
    }
}

/// Tokens that end a generated turn: EOS plus the end-of-turn markers of the chat
/// formats we know, where the vocabulary has them.
fn stop_ids(eos: &Option<(u32, String)>, id_of: impl Fn(&str) -> Option<u32>) -> Vec<u32> {
    let mut ids: Vec<u32> = eos.iter().map(|(id, _)| *id).collect();
    for name in ["<|im_end|>", "<end_of_turn>", "<|endoftext|>", "<|eot_id|>"] {
        if let Some(id) = id_of(name) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids
}

/// GPT-2's reversible byte -> printable-character map.
fn bytes_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..256u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        map[b as usize] = if printable {
            char::from_u32(b).expect("latin-1")
        } else {
            extra += 1;
            char::from_u32(255 + extra).expect("valid code point")
        };
    }
    map
}

/// A byte-level BPE tokenizer; the error names the metadata key at fault and why.
fn byte_level_bpe(
    tokens: &[String],
    merges: &[String],
    pre: &str,
) -> std::result::Result<Tokenizer, (&'static str, String)> {
    const MERGES: &str = "tokenizer.ggml.merges";
    const PRE: &str = "tokenizer.ggml.pre";
    let spelling = bytes_to_unicode();
    let alphabet: std::collections::HashSet<char> = spelling.iter().copied().collect();
    // Tokens outside the byte alphabet are respelled byte by byte, as transformers does.
    let mut vocab = AHashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        let spelled = if t.chars().all(|c| alphabet.contains(&c)) {
            t.clone()
        } else {
            t.bytes().map(|b| spelling[b as usize]).collect()
        };
        vocab.insert(spelled, i as u32);
    }
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (a, b) = m
                .split_once(' ')
                .ok_or_else(|| (MERGES, format!("merge {i} ('{m}') has no space")))?;
            // Each side, and what they merge into, must be tokens: said here with the
            // merge named, rather than as the BPE builder's error.
            for piece in [a.to_string(), b.to_string(), format!("{a}{b}")] {
                if !vocab.contains_key(&piece) {
                    return Err((
                        MERGES,
                        format!(
                            "merge {i} ('{m}') needs the token '{}', which \
                             tokenizer.ggml.tokens does not hold",
                            piece.chars().take(80).collect::<String>()
                        ),
                    ));
                }
            }
            Ok((a.to_string(), b.to_string()))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // Llama 3 looks a whole pre-token up in the vocabulary before merging
    // (`ignore_merges` in its tokenizer.json; llama.cpp does the same).
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(pre == LLAMA3_PRE)
        .build()
        .map_err(|e| (MERGES, format!("BPE: {e}")))?;
    let mut tk = Tokenizer::new(bpe);
    let split_regex = match pre {
        QWEN2_PRE => Some(QWEN2_SPLIT),
        LLAMA3_PRE => Some(LLAMA3_SPLIT),
        _ => None,
    };
    let pre_tok: PreTokenizerWrapper = if let Some(regex) = split_regex {
        let split = Split::new(
            SplitPattern::Regex(regex.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| (PRE, format!("{pre} regex: {e}")))?;
        PreSequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, false).into(),
        ])
        .into()
    } else if GPT2_REGEX_PRES.contains(&pre) {
        ByteLevel::new(false, true, true).into()
    } else {
        return Err((PRE, format!(
            "is '{pre}', which affectbench does not know how to pre-tokenize (known: qwen2, llama-bpe, {}); \
             refusing to guess because a wrong split silently changes token ids",
            GPT2_REGEX_PRES.join(", ")
        )));
    };
    tk.with_pre_tokenizer(Some(pre_tok));
    tk.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    Ok(tk)
}

fn sentencepiece_bpe(
    tokens: &[String],
    scores: Option<&[f32]>,
    space_prefix: bool,
) -> std::result::Result<Tokenizer, String> {
    // Tokens made only of spaces are stored with real spaces; the normalizer turns spaces
    // into '▁', so respell them.
    let respelled: Vec<String> = tokens
        .iter()
        .map(|t| {
            if !t.is_empty() && t.chars().all(|c| c == ' ') {
                "\u{2581}".repeat(t.chars().count())
            } else {
                t.clone()
            }
        })
        .collect();
    // Python dict semantics: a repeated token keeps its first position in iteration order
    // but the id of its last occurrence.
    let mut vocab: HashMap<&str, u32> = HashMap::with_capacity(respelled.len());
    let mut order: Vec<&str> = Vec::with_capacity(respelled.len());
    for (i, t) in respelled.iter().enumerate() {
        if vocab.insert(t.as_str(), i as u32).is_none() {
            order.push(t.as_str());
        }
    }
    if let Some(s) = scores {
        if s.len() != tokens.len() {
            return Err(format!(
                "{} scores for {} tokens (tokenizer.ggml.scores)",
                s.len(),
                tokens.len()
            ));
        }
    }
    let merges = derive_merges(&vocab, &order, scores);
    let unk = if vocab.contains_key("<unk>") {
        Some("<unk>".to_string())
    } else {
        None
    };
    let mut builder = BPE::builder()
        .vocab_and_merges(
            vocab
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<AHashMap<_, _>>(),
            merges,
        )
        .fuse_unk(true)
        .byte_fallback(true);
    if let Some(u) = unk {
        builder = builder.unk_token(u);
    }
    let bpe = builder.build().map_err(|e| format!("BPE: {e}"))?;
    let mut tk = Tokenizer::new(bpe);
    let replace = Replace::new(" ", "\u{2581}").map_err(|e| e.to_string())?;
    if space_prefix {
        tk.with_normalizer(Some(NormalizerSequence::new(vec![
            Prepend::new("\u{2581}".into()).into(),
            replace.into(),
        ])))
        .map_err(|e| e.to_string())?;
    } else {
        tk.with_normalizer(Some(replace))
            .map_err(|e| e.to_string())?;
    }
    tk.with_pre_tokenizer(Some(
        Split::new(
            SplitPattern::String(" ".into()),
            SplitDelimiterBehavior::MergedWithPrevious,
            false,
        )
        .map_err(|e| e.to_string())?,
    ));
    let mut decoders = vec![
        DecoderWrapper::Replace(Replace::new("\u{2581}", " ").map_err(|e| e.to_string())?),
        DecoderWrapper::ByteFallback(ByteFallback::default()),
        DecoderWrapper::Fuse(Fuse::default()),
    ];
    if space_prefix {
        // The dummy prefix is not part of the text.
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    tk.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(
        decoders,
    ))));
    Ok(tk)
}

/// Merges implied by a vocabulary: every split of a token into two vocabulary pieces,
/// ranked by the token's score where given (higher is better) or else its position
/// (earlier is better), then longer left piece, then longer right piece; ties keep
/// discovery order (pieces ordered by their ids), as transformers' converter does.
fn derive_merges(
    vocab: &HashMap<&str, u32>,
    order: &[&str],
    scores: Option<&[f32]>,
) -> Vec<(String, String)> {
    let mut merges: Vec<(&str, &str, f64)> = Vec::new();
    // Both halves of a split are vocabulary pieces, so only byte lengths some piece has
    // can split a token: trying every character boundary hashed a prefix per boundary,
    // quadratic in the token's length (minutes for one 1 MB token). Ascending lengths
    // keep the order of the splits found.
    let lengths: std::collections::BTreeSet<usize> = vocab.keys().map(|t| t.len()).collect();
    for &token in order {
        let id = vocab[token];
        let score = scores.map_or(-(id as f64), |s| s[id as usize] as f64);
        let mut local: Vec<(&str, &str, f64)> = Vec::new();
        for &split in lengths.range(1..token.len()) {
            if !token.is_char_boundary(split) || !lengths.contains(&(token.len() - split)) {
                continue;
            }
            let (l, r) = token.split_at(split);
            if vocab.contains_key(l) && vocab.contains_key(r) {
                local.push((l, r, score));
            }
        }
        local.sort_by_key(|(l, r, _)| (vocab[l], vocab[r]));
        merges.extend(local);
    }
    // Stable sort, descending on (score, len(l), len(r)).
    merges.sort_by(|a, b| {
        let ka = (a.0.chars().count(), a.1.chars().count());
        let kb = (b.0.chars().count(), b.1.chars().count());
        b.2.total_cmp(&a.2).then(kb.cmp(&ka))
    });
    merges
        .into_iter()
        .map(|(l, r, _)| (l.to_string(), r.to_string()))
        .collect()
}

fn add_special_tokens(
    tk: &mut Tokenizer,
    tokens: &[String],
    types: &[i32],
    byte_level: bool,
) -> std::result::Result<(), String> {
    let alphabet: std::collections::HashSet<char> = bytes_to_unicode().iter().copied().collect();
    let control: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter(|(t, &ty)| {
            ty == TOKEN_TYPE_CONTROL && (!byte_level || t.chars().all(|c| alphabet.contains(&c)))
        })
        .map(|(t, _)| AddedToken::from(t.clone(), true).normalized(false))
        .collect();
    tk.add_special_tokens(control).map_err(|e| e.to_string())?;
    let user: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter(|(t, &ty)| ty == TOKEN_TYPE_USER_DEFINED && tk.token_to_id(t).is_some())
        .map(|(t, _)| AddedToken::from(t.clone(), false).normalized(false))
        .collect();
    tk.add_tokens(user).map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `derive_merges` as first written: every character boundary of every token tried.
    fn derive_merges_every_boundary(
        vocab: &HashMap<&str, u32>,
        order: &[&str],
        scores: Option<&[f32]>,
    ) -> Vec<(String, String)> {
        let mut merges: Vec<(&str, &str, f64)> = Vec::new();
        for &token in order {
            let id = vocab[token];
            let score = scores.map_or(-(id as f64), |s| s[id as usize] as f64);
            let mut local: Vec<(&str, &str, f64)> = Vec::new();
            for (split, _) in token.char_indices().skip(1) {
                let (l, r) = token.split_at(split);
                if vocab.contains_key(l) && vocab.contains_key(r) {
                    local.push((l, r, score));
                }
            }
            local.sort_by_key(|(l, r, _)| (vocab[l], vocab[r]));
            merges.extend(local);
        }
        merges.sort_by(|a, b| {
            let ka = (a.0.chars().count(), a.1.chars().count());
            let kb = (b.0.chars().count(), b.1.chars().count());
            b.2.total_cmp(&a.2).then(kb.cmp(&ka))
        });
        merges
            .into_iter()
            .map(|(l, r, _)| (l.to_string(), r.to_string()))
            .collect()
    }

    #[test]
    fn merges_derived_from_piece_lengths_equal_those_from_every_boundary() {
        let pieces = [
            "a", "b", "ab", "ba", "aba", "abab", "▁", "▁a", "▁ab", "é", "aé", "éa", "aéa", "bb",
            "abb", "▁aba", "ababab",
        ];
        let vocab: HashMap<&str, u32> = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| (*p, i as u32))
            .collect();
        let scores: Vec<f32> = (0..pieces.len()).map(|i| ((i * 7) % 5) as f32).collect();
        for scores in [None, Some(&scores[..])] {
            assert_eq!(
                derive_merges(&vocab, &pieces, scores),
                derive_merges_every_boundary(&vocab, &pieces, scores)
            );
        }
        // A megabyte token among them derives its merges without trying every boundary.
        let big = "ab".repeat(1 << 19);
        let mut with_big = vocab.clone();
        with_big.insert(&big, pieces.len() as u32);
        let mut order = pieces.to_vec();
        order.push(&big);
        let merges = derive_merges(&with_big, &order, None);
        assert_eq!(merges.len(), derive_merges(&vocab, &pieces, None).len());
    }
}
