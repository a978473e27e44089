//! Shared test helpers: fetching real models (failing loudly if impossible), and writing
//! tiny random-weight models (GGUF and safetensors) that tests build themselves.
#![allow(dead_code)]

use affectbench::fetch::{fetch, FetchOptions, Source};
use affectbench::registry::Registry;
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

/// The path of a real registry model, fetched through the project's own fetch path.
/// A test that needs a real model must run it: if the fetch fails, the test fails with
/// an explanation (in CI and elsewhere), never skips.
pub fn real_model(name: &str) -> PathBuf {
    let registry = Registry::builtin();
    let entry = registry
        .get(name)
        .unwrap_or_else(|| panic!("{name} is not in the registry"));
    match fetch(
        entry,
        &FetchOptions {
            source: Source::Auto,
            force: false,
            show_progress: false,
        },
    ) {
        Ok(p) => p,
        Err(e) => panic!(
            "this test needs the real model '{name}' and could not fetch it: {e}\n\
             It is fetched from PyPI with `python3 -m pip download`; check that python3 with pip \
             is installed and PyPI is reachable, or run `affectbench models fetch {name}` by hand. \
             (CI={:?})",
            std::env::var("CI").ok()
        ),
    }
}

/// The llama-cpp-python source release whose `vendor/llama.cpp/models/` holds llama.cpp's
/// vocabulary-only GGUF files and their tokenizer test cases (`ggml-vocab-NAME.gguf`,
/// `.gguf.inp`, `.gguf.out`, the expected ids made by Hugging Face tokenizers).
const LLAMACPP_SDIST: &str = "llama-cpp-python==0.3.36";
const LLAMACPP_SDIST_FILE: &str = "llama_cpp_python-0.3.36.tar.gz";
const LLAMACPP_SDIST_SHA256: &str =
    "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e";

/// The directory holding llama.cpp's vocabulary test files, fetched once (76 MB, with
/// `python3 -m pip download`, sha256-checked) into the model cache. Fails loudly if it
/// cannot be fetched.
pub fn llamacpp_vocab_dir() -> PathBuf {
    let dir = affectbench::cache::cache_root().join("vocab/llama-cpp-python-0.3.36");
    if dir.join("complete").exists() {
        return dir;
    }
    let parent = dir.parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&parent).unwrap();
    let staging = tempfile::tempdir_in(&parent).unwrap();
    let status = std::process::Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            "llama-cpp-python",
            "-q",
            "-d",
        ])
        .arg(staging.path())
        .arg(LLAMACPP_SDIST)
        .status()
        .expect("running python3 -m pip");
    assert!(
        status.success(),
        "this test needs llama.cpp's vocabulary files from the {LLAMACPP_SDIST} source release          on PyPI; `python3 -m pip download` failed ({status}): is PyPI reachable?"
    );
    let sdist = staging.path().join(LLAMACPP_SDIST_FILE);
    let sha = affectbench::cache::sha256_file(&sdist, |_| {}).unwrap();
    assert_eq!(
        sha, LLAMACPP_SDIST_SHA256,
        "{} changed on PyPI",
        LLAMACPP_SDIST_FILE
    );
    let out = staging.path().join("vocab");
    std::fs::create_dir_all(&out).unwrap();
    let status = std::process::Command::new("tar")
        .arg("xzf")
        .arg(&sdist)
        .arg("-C")
        .arg(&out)
        .args([
            "--strip-components=4",
            "--wildcards",
            "*/vendor/llama.cpp/models/ggml-vocab-*",
        ])
        .status()
        .expect("running tar");
    assert!(
        status.success(),
        "extracting the vocabulary files from {}",
        sdist.display()
    );
    std::fs::write(out.join("complete"), "").unwrap();
    // Another test may have got there first; either copy is the same.
    if std::fs::rename(&out, &dir).is_err() {
        assert!(dir.join("complete").exists());
    }
    dir
}

/// llama.cpp's tokenizer cases for `ggml-vocab-NAME.gguf`: (text, expected ids).
pub fn llamacpp_vocab_cases(dir: &Path, name: &str) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.inp"))).unwrap();
    let out = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.out"))).unwrap();
    let mut texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    if texts.last() == Some(&"") {
        texts.pop();
    }
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(texts.len(), ids.len(), "{name}: cases and expected ids");
    texts.into_iter().map(str::to_string).zip(ids).collect()
}

/// A byte-level vocabulary: the 256 byte symbols, then merged tokens, then specials.
pub fn tiny_vocab() -> (Vec<String>, Vec<String>, Vec<i32>) {
    let spelled = gpt2_bytes();
    let mut tokens: Vec<String> = spelled.iter().map(|c| c.to_string()).collect();
    let merges = vec![
        "Ġ t".to_string(),
        "h e".to_string(),
        "Ġt he".to_string(),
        "i n".to_string(),
    ];
    tokens.extend(["Ġt", "he", "Ġthe", "in"].iter().map(|s| s.to_string()));
    tokens.extend(
        ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
            .iter()
            .map(|s| s.to_string()),
    );
    let mut types = vec![1i32; tokens.len()];
    let n = types.len();
    types[n - 3..].iter_mut().for_each(|t| *t = 3);
    (tokens, merges, types)
}

fn gpt2_bytes() -> Vec<char> {
    let mut extra = 0u32;
    (0..256u32)
        .map(|b| {
            if (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b) {
                char::from_u32(b).unwrap()
            } else {
                extra += 1;
                char::from_u32(255 + extra).unwrap()
            }
        })
        .collect()
}

/// Shape of a tiny model.
#[derive(Clone, Copy)]
pub struct Tiny {
    pub arch: &'static str,
    pub d: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub layers: usize,
    pub context: usize,
    pub dtype: GgmlDType,
    pub rms_eps: f32,
    /// NaN in the final norm's weights (a corrupt file whose metadata is fine).
    pub poisoned: bool,
    /// A head dimension other than d / heads (written as `attention.key_length`).
    pub head_dim: Option<usize>,
    /// Llama 3.1's rope scaling as the converter writes it: a `rope_freqs.weight` tensor
    /// (`llama3_rope_factors`).
    pub rope_freqs: bool,
    /// Phi 3's LongRoPE: `rope_factors_short` / `_long` tensors and an attention factor
    /// (`PHI3_LONGROPE_ATTN_FACTOR`), the original context equal to `context`.
    pub longrope: bool,
}

/// The attention factor of tiny LongRoPE models (Phi-3.5-mini's is about 1.19).
pub const PHI3_LONGROPE_ATTN_FACTOR: f32 = 1.19;

/// Gemma 2's (attention, final) soft caps for tiny models: the real final one (30), and an
/// attention cap small enough to bite on tiny scores (the real one: 50).
pub const GEMMA2_SOFTCAPS: (f32, f32) = (1.0, 30.0);

/// Llama 3.1's rope scaling for tiny models: factor 8, low/high frequency factors 1 and
/// 4, an original context of 32 positions, so that a head dim of 16 has pairs kept,
/// blended and divided.
pub const LLAMA3_SCALING: (f64, f64, f64, f64) = (8.0, 1.0, 4.0, 32.0);

/// The per-pair factors llama.cpp's converter derives from `LLAMA3_SCALING` (written
/// here from its description, independently of the loader's version).
pub fn llama3_rope_factors(head_dim: usize, theta: f64) -> Vec<f32> {
    let (factor, low, high, old) = LLAMA3_SCALING;
    (0..head_dim / 2)
        .map(|pair| {
            let freq = theta.powf(-(2.0 * pair as f64) / head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            if wavelen < old / high {
                1.0
            } else if wavelen > old / low {
                factor as f32
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                (1.0 / ((1.0 - smooth) / factor + smooth)) as f32
            }
        })
        .collect()
}

impl Tiny {
    pub fn llama() -> Self {
        Tiny {
            arch: "llama",
            d: 64,
            heads: 4,
            kv_heads: 2,
            ffn: 128,
            layers: 2,
            context: 256,
            dtype: GgmlDType::Q8_0,
            rms_eps: 1e-5,
            poisoned: false,
            head_dim: None,
            rope_freqs: false,
            longrope: false,
        }
    }
    pub fn qwen2() -> Self {
        Tiny {
            arch: "qwen2",
            ..Self::llama()
        }
    }
    /// Qwen 3: q/k norms, no biases, and a head dim wider than d / heads (as Qwen3-0.6B).
    pub fn qwen3() -> Self {
        Tiny {
            arch: "qwen3",
            head_dim: Some(32),
            ..Self::llama()
        }
    }
    /// Gemma 2: Gemma 3's layout without q/k norms, every other layer sliding, and soft
    /// caps on attention scores and final logits (`GEMMA2_SOFTCAPS`, small enough to bite).
    pub fn gemma2() -> Self {
        Tiny {
            arch: "gemma2",
            ..Self::llama()
        }
    }
    /// Phi 3: q, k, v in one `attn_qkv` matrix, gate and up stacked in `ffn_up`.
    pub fn phi3() -> Self {
        Tiny {
            arch: "phi3",
            ..Self::llama()
        }
    }
    /// The head dimension: `head_dim` or d / heads.
    pub fn hd(&self) -> usize {
        self.head_dim.unwrap_or(self.d / self.heads.max(1))
    }
    /// Gemma 3's extras: q/k norms, post-attention and post-MLP norms, embeddings scaled
    /// by sqrt(d), sliding-window layers (window 8, shorter than the test prompts).
    pub fn gemma3() -> Self {
        Tiny {
            arch: "gemma3",
            ..Self::llama()
        }
    }
}

/// Random f32 weights for every tensor of a tiny model, keyed by GGUF name.
pub fn tiny_weights(t: &Tiny, vocab: usize, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut w = |name: String, shape: Vec<usize>, scale: f32, base: f32| {
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|_| base + scale * rng.random_range(-1.0f32..1.0))
            .collect();
        (name, shape, data)
    };
    let hd = t.hd();
    let mut out = vec![
        w("token_embd.weight".into(), vec![vocab, t.d], 1.0, 0.0),
        w(
            "output_norm.weight".into(),
            vec![t.d],
            0.1,
            if t.poisoned { f32::NAN } else { 1.0 },
        ),
        w("output.weight".into(), vec![vocab, t.d], 0.2, 0.0),
    ];
    if t.arch == "gemma2" {
        // Gemma 2 files tie the output to the embeddings (llama.cpp refuses an extra).
        out.retain(|(name, _, _)| name != "output.weight");
    }
    if t.rope_freqs {
        out.push((
            "rope_freqs.weight".into(),
            vec![hd / 2],
            llama3_rope_factors(hd, 10_000.0),
        ));
    }
    if t.longrope {
        let n = hd / 2;
        let short: Vec<f32> = (0..n).map(|i| 1.0 + 3.0 * i as f32 / n as f32).collect();
        let long: Vec<f32> = short.iter().map(|f| f * 4.0).collect();
        out.push(("rope_factors_short.weight".into(), vec![n], short));
        out.push(("rope_factors_long.weight".into(), vec![n], long));
    }
    for i in 0..t.layers {
        let p = |s: &str| format!("blk.{i}.{s}");
        out.push(w(p("attn_norm.weight"), vec![t.d], 0.1, 1.0));
        if t.arch == "phi3" {
            let rows = (t.heads + 2 * t.kv_heads) * hd;
            out.push(w(p("attn_qkv.weight"), vec![rows, t.d], 0.2, 0.0));
        } else {
            out.push(w(p("attn_q.weight"), vec![t.heads * hd, t.d], 0.2, 0.0));
            out.push(w(p("attn_k.weight"), vec![t.kv_heads * hd, t.d], 0.2, 0.0));
            out.push(w(p("attn_v.weight"), vec![t.kv_heads * hd, t.d], 0.2, 0.0));
        }
        if t.arch == "qwen2" {
            out.push(w(p("attn_q.bias"), vec![t.heads * hd], 0.1, 0.0));
            out.push(w(p("attn_k.bias"), vec![t.kv_heads * hd], 0.1, 0.0));
            out.push(w(p("attn_v.bias"), vec![t.kv_heads * hd], 0.1, 0.0));
        }
        out.push(w(
            p("attn_output.weight"),
            vec![t.d, t.heads * hd],
            0.2,
            0.0,
        ));
        out.push(w(p("ffn_norm.weight"), vec![t.d], 0.1, 1.0));
        if t.arch == "phi3" {
            out.push(w(p("ffn_up.weight"), vec![2 * t.ffn, t.d], 0.2, 0.0));
        } else {
            out.push(w(p("ffn_gate.weight"), vec![t.ffn, t.d], 0.2, 0.0));
            out.push(w(p("ffn_up.weight"), vec![t.ffn, t.d], 0.2, 0.0));
        }
        out.push(w(p("ffn_down.weight"), vec![t.d, t.ffn], 0.2, 0.0));
        if t.arch == "gemma3" || t.arch == "qwen3" {
            out.push(w(p("attn_q_norm.weight"), vec![hd], 0.1, 1.0));
            out.push(w(p("attn_k_norm.weight"), vec![hd], 0.1, 1.0));
        }
        if t.arch == "gemma3" || t.arch == "gemma2" {
            out.push(w(p("post_attention_norm.weight"), vec![t.d], 0.1, 1.0));
            out.push(w(p("post_ffw_norm.weight"), vec![t.d], 0.1, 1.0));
        }
    }
    out
}

/// Writes a tiny GGUF model; matrices are quantised to `t.dtype`, vectors stay F32.
pub fn write_tiny_gguf(path: &Path, t: &Tiny, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    write_tiny_gguf_without(path, t, seed, &[])
}

/// As `write_tiny_gguf`, leaving out the tensors named in `missing`.
pub fn write_tiny_gguf_without(
    path: &Path,
    t: &Tiny,
    seed: u64,
    missing: &[&str],
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    write_tiny_gguf_full(path, t, seed, missing, |_| {})
}

/// As `write_tiny_gguf`, with the metadata edited by `edit` before writing.
pub fn write_tiny_gguf_with_meta(
    path: &Path,
    t: &Tiny,
    seed: u64,
    edit: impl FnOnce(&mut Vec<(String, Value)>),
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    write_tiny_gguf_full(path, t, seed, &[], edit)
}

fn write_tiny_gguf_full(
    path: &Path,
    t: &Tiny,
    seed: u64,
    missing: &[&str],
    edit: impl FnOnce(&mut Vec<(String, Value)>),
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut weights = tiny_weights(t, tiny_vocab().0.len(), seed);
    weights.retain(|(name, _, _)| !missing.contains(&name.as_str()));
    let mut meta = tiny_meta(t);
    edit(&mut meta);
    let qtensors: Vec<(String, QTensor)> = weights
        .iter()
        .map(|(name, shape, data)| {
            let tensor = Tensor::from_vec(data.clone(), shape.clone(), &Device::Cpu).unwrap();
            let dtype = if shape.len() == 2 {
                t.dtype
            } else {
                GgmlDType::F32
            };
            (name.clone(), QTensor::quantize(&tensor, dtype).unwrap())
        })
        .collect();
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> =
        qtensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &meta_refs, &tensor_refs).unwrap();
    weights
}

/// Writes a tiny GGUF model whose matrices are IQ4_XS (`xs`) or IQ4_NL, which candle
/// cannot write: quantised by `quantize_iq4`, written by `write_gguf_raw`. IQ4_XS needs
/// every matrix's inner dimension to be a multiple of 256.
pub fn write_tiny_gguf_iq4(path: &Path, t: &Tiny, seed: u64, xs: bool) {
    let weights = tiny_weights(t, tiny_vocab().0.len(), seed);
    let tensors: Vec<RawTensor> = weights
        .into_iter()
        .map(|(name, shape, data)| {
            if shape.len() == 2 {
                let bytes = quantize_iq4(&data, xs);
                (name, shape, if xs { 23 } else { 20 }, bytes)
            } else {
                let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name, shape, 0, bytes)
            }
        })
        .collect();
    write_gguf_raw(path, &tiny_meta(t), &tensors);
}

/// A tensor for `write_gguf_raw`: name, row-major shape, GGUF type id, raw blocks.
pub type RawTensor = (String, Vec<usize>, u32, Vec<u8>);

/// Writes a GGUF v3 file (alignment 32) from metadata and raw tensors: for types that
/// candle's writer does not know. Independent of affectbench's reader.
pub fn write_gguf_raw(path: &Path, meta: &[(String, Value)], tensors: &[RawTensor]) {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    fn type_id(v: &Value) -> u32 {
        match v {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }
    fn value(out: &mut Vec<u8>, v: &Value) {
        match v {
            Value::U8(x) => out.push(*x),
            Value::I8(x) => out.push(*x as u8),
            Value::U16(x) => out.extend(x.to_le_bytes()),
            Value::I16(x) => out.extend(x.to_le_bytes()),
            Value::U32(x) => out.extend(x.to_le_bytes()),
            Value::I32(x) => out.extend(x.to_le_bytes()),
            Value::F32(x) => out.extend(x.to_le_bytes()),
            Value::Bool(x) => out.push(*x as u8),
            Value::String(x) => string(out, x),
            Value::U64(x) => out.extend(x.to_le_bytes()),
            Value::I64(x) => out.extend(x.to_le_bytes()),
            Value::F64(x) => out.extend(x.to_le_bytes()),
            Value::Array(items) => {
                out.extend(items.first().map_or(4, type_id).to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                items.iter().for_each(|i| value(out, i));
            }
        }
    }
    let pad = |n: usize| n.div_ceil(32) * 32;
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((meta.len() as u64).to_le_bytes());
    for (key, v) in meta {
        string(&mut out, key);
        out.extend(type_id(v).to_le_bytes());
        value(&mut out, v);
    }
    let mut offset = 0;
    for (name, shape, ty, data) in tensors {
        string(&mut out, name);
        out.extend((shape.len() as u32).to_le_bytes());
        for d in shape.iter().rev() {
            out.extend((*d as u64).to_le_bytes());
        }
        out.extend(ty.to_le_bytes());
        out.extend((offset as u64).to_le_bytes());
        offset += pad(data.len());
    }
    out.resize(pad(out.len()), 0);
    for (_, _, _, data) in tensors {
        out.extend(data);
        out.resize(pad(out.len()), 0);
    }
    std::fs::write(path, out).unwrap();
}

/// IQ4 code book (ggml's `kvalues_iq4nl`), written out here independently of the crate.
const IQ4_CODES: [f32; 16] = [
    -127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0, 1.0, 13.0, 25.0, 38.0, 53.0, 69.0,
    89.0, 113.0,
];

/// Quantises whole blocks to IQ4_XS (`xs`, 256 values a block) or IQ4_NL (32): each
/// value to the nearest code at its 32-value scale. llama.cpp searches scales more
/// carefully; the tests need valid blocks near the weights, not the best ones.
pub fn quantize_iq4(x: &[f32], xs: bool) -> Vec<u8> {
    let nearest = |v: f32| {
        (0..16)
            .min_by(|&a, &b| {
                (IQ4_CODES[a] - v)
                    .abs()
                    .total_cmp(&(IQ4_CODES[b] - v).abs())
            })
            .unwrap() as u8
    };
    let sub_block = |out: &mut Vec<u8>, vals: &[f32], scale: f32| {
        let idx: Vec<u8> = vals
            .iter()
            .map(|v| if scale == 0.0 { 8 } else { nearest(v / scale) })
            .collect();
        out.extend((0..16).map(|j| idx[j] | (idx[j + 16] << 4)));
    };
    let amax = |v: &[f32]| v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let mut out = Vec::new();
    if !xs {
        for blk in x.chunks_exact(32) {
            let d = half::f16::from_f32(amax(blk) / 113.0);
            out.extend(d.to_le_bytes());
            sub_block(&mut out, blk, d.to_f32());
        }
        return out;
    }
    for blk in x.chunks_exact(256) {
        let subs: Vec<f32> = blk.chunks_exact(32).map(|s| amax(s) / 113.0).collect();
        let d = half::f16::from_f32(subs.iter().cloned().fold(0f32, f32::max) / 31.0);
        let ls: Vec<u8> = subs
            .iter()
            .map(|s| {
                if d.to_f32() == 0.0 {
                    32
                } else {
                    ((s / d.to_f32()).round() as i32 + 32).clamp(0, 63) as u8
                }
            })
            .collect();
        out.extend(d.to_le_bytes());
        let high: u16 = (0..8).map(|i| ((ls[i] >> 4) as u16 & 3) << (2 * i)).sum();
        out.extend(high.to_le_bytes());
        out.extend((0..4).map(|i| (ls[2 * i] & 15) | ((ls[2 * i + 1] & 15) << 4)));
        for (i, s) in blk.chunks_exact(32).enumerate() {
            sub_block(&mut out, s, d.to_f32() * (ls[i] as f32 - 32.0));
        }
    }
    out
}

/// The metadata of a tiny model: hyper-parameters, the byte-level vocabulary, a chat
/// template.
fn tiny_meta(t: &Tiny) -> Vec<(String, Value)> {
    let (tokens, merges, types) = tiny_vocab();
    let a = t.arch;
    let strs = |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(a.into())),
        (format!("{a}.block_count"), Value::U32(t.layers as u32)),
        (format!("{a}.embedding_length"), Value::U32(t.d as u32)),
        (format!("{a}.feed_forward_length"), Value::U32(t.ffn as u32)),
        (format!("{a}.attention.head_count"), Value::U32(t.heads as u32)),
        (format!("{a}.attention.head_count_kv"), Value::U32(t.kv_heads as u32)),
        (format!("{a}.attention.layer_norm_rms_epsilon"), Value::F32(t.rms_eps)),
        (format!("{a}.rope.freq_base"), Value::F32(10000.0)),
        (format!("{a}.rope.dimension_count"), Value::U32(t.hd() as u32)),
        (format!("{a}.context_length"), Value::U32(t.context as u32)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("default".into())),
        ("tokenizer.ggml.tokens".into(), strs(&tokens)),
        ("tokenizer.ggml.merges".into(), strs(&merges)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types.iter().map(|&x| Value::I32(x)).collect())),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32((tokens.len() - 2) as u32)),
        ("tokenizer.chat_template".into(), Value::String(
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}".into())),
    ];
    if a == "gemma3" || a == "qwen3" || t.head_dim.is_some() {
        let hd = t.hd() as u32;
        meta.push((format!("{a}.attention.key_length"), Value::U32(hd)));
        meta.push((format!("{a}.attention.value_length"), Value::U32(hd)));
    }
    if a == "gemma3" || a == "gemma2" {
        meta.push((format!("{a}.attention.sliding_window"), Value::U32(8)));
    }
    if t.longrope {
        meta.push((
            format!("{a}.rope.scaling.attn_factor"),
            Value::F32(PHI3_LONGROPE_ATTN_FACTOR),
        ));
        meta.push((
            format!("{a}.rope.scaling.original_context_length"),
            Value::U32(t.context as u32),
        ));
    }
    if a == "gemma2" {
        let (attn, last) = GEMMA2_SOFTCAPS;
        meta.push((format!("{a}.attn_logit_softcapping"), Value::F32(attn)));
        meta.push((format!("{a}.final_logit_softcapping"), Value::F32(last)));
    }
    meta
}

/// Writes the same tiny qwen2 weights as a Hugging Face directory (config.json,
/// tokenizer.json, model.safetensors), with weights dequantised exactly as the GGUF holds them.
pub fn write_tiny_safetensors_dir(dir: &Path, t: &Tiny, gguf: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut g = affectbench::gguf::GgufFile::open(gguf).unwrap();
    let (tokens, _, _) = tiny_vocab();
    let rename = |name: &str| -> String {
        let map = [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output_norm.weight", "model.norm.weight"),
            ("output.weight", "lm_head.weight"),
        ];
        if let Some((_, hf)) = map.iter().find(|(g, _)| *g == name) {
            return hf.to_string();
        }
        let rest = name.strip_prefix("blk.").unwrap();
        let (i, tail) = rest.split_once('.').unwrap();
        let gemma2 = t.arch == "gemma2";
        let hf = match tail {
            // Gemma 2's norms around attention and the MLP, and Phi 3's fused matrices.
            "post_attention_norm.weight" => "post_attention_layernorm.weight",
            "ffn_norm.weight" if gemma2 => "pre_feedforward_layernorm.weight",
            "post_ffw_norm.weight" => "post_feedforward_layernorm.weight",
            "attn_qkv.weight" => "self_attn.qkv_proj.weight",
            "ffn_up.weight" if t.arch == "phi3" => "mlp.gate_up_proj.weight",
            "attn_norm.weight" => "input_layernorm.weight",
            "attn_q.weight" => "self_attn.q_proj.weight",
            "attn_k.weight" => "self_attn.k_proj.weight",
            "attn_v.weight" => "self_attn.v_proj.weight",
            "attn_q.bias" => "self_attn.q_proj.bias",
            "attn_k.bias" => "self_attn.k_proj.bias",
            "attn_v.bias" => "self_attn.v_proj.bias",
            "attn_output.weight" => "self_attn.o_proj.weight",
            "attn_q_norm.weight" => "self_attn.q_norm.weight",
            "attn_k_norm.weight" => "self_attn.k_norm.weight",
            "ffn_norm.weight" => "post_attention_layernorm.weight",
            "ffn_gate.weight" => "mlp.gate_proj.weight",
            "ffn_up.weight" => "mlp.up_proj.weight",
            "ffn_down.weight" => "mlp.down_proj.weight",
            other => panic!("unmapped {other}"),
        };
        format!("model.layers.{i}.{hf}")
    };
    let names: Vec<String> = g
        .content
        .tensor_infos
        .keys()
        .filter(|n| *n != "rope_freqs.weight")
        .cloned()
        .collect();
    let mut tensors = std::collections::HashMap::new();
    for n in names {
        let q = g.tensor(&n, &Device::Cpu).unwrap();
        let mut w = q.dequantize(&Device::Cpu).unwrap();
        // Gemma's checkpoints hold norms as w - 1 (llama.cpp's converter adds the 1).
        if t.arch == "gemma2" && n.ends_with("norm.weight") {
            w = (w - 1.0).unwrap();
        }
        tensors.insert(rename(&n), w);
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let config = serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "model_type": t.arch, "hidden_size": t.d,
        "intermediate_size": t.ffn, "num_hidden_layers": t.layers, "num_attention_heads": t.heads,
        "num_key_value_heads": t.kv_heads, "head_dim": t.hd(), "vocab_size": tokens.len(), "max_position_embeddings": t.context,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false, "hidden_act": "silu",
        "torch_dtype": "float32"
    });
    let mut config = config;
    if t.arch == "gemma2" {
        let (attn, last) = GEMMA2_SOFTCAPS;
        config["architectures"] = serde_json::json!(["Gemma2ForCausalLM"]);
        config["hidden_act"] = serde_json::json!("gelu_pytorch_tanh");
        config["hidden_activation"] = serde_json::json!("gelu_pytorch_tanh");
        config["attn_logit_softcapping"] = serde_json::json!(attn);
        config["final_logit_softcapping"] = serde_json::json!(last);
        config["query_pre_attn_scalar"] = serde_json::json!(t.hd());
        config["sliding_window"] = serde_json::json!(8);
    }
    if t.arch == "phi3" {
        config["architectures"] = serde_json::json!(["Phi3ForCausalLM"]);
    }
    if t.rope_freqs {
        let (factor, low, high, old) = LLAMA3_SCALING;
        config["rope_scaling"] = serde_json::json!({
            "rope_type": "llama3", "factor": factor, "low_freq_factor": low,
            "high_freq_factor": high, "original_max_position_embeddings": old
        });
    }
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
    // The GGUF-built tokenizer, saved in tokenizer.json form.
    let mt = affectbench::tokenizer::ModelTokenizer::from_gguf(&g).unwrap();
    mt.tokenizer
        .save(dir.join("tokenizer.json"), false)
        .unwrap();
    let tc = serde_json::json!({
        "eos_token": "<|im_end|>",
        "chat_template": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    });
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
}

/// Max |a - b| over two logit vectors.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn argmax(v: &[f32]) -> usize {
    affectbench::sampling::argmax(v) as usize
}

/// Copies a directory tree (a scenarios folder the test then edits).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The tiny qwen2 model study tests run on: byte-level vocabulary (about one token per
/// character), so a long context.
pub fn tiny_study_model(dir: &Path) -> std::path::PathBuf {
    tiny_study_model_with_meta(dir, "tiny.gguf", |_| {})
}

/// `tiny_study_model` written as `name`, its metadata edited by `edit` first.
pub fn tiny_study_model_with_meta(
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut Vec<(String, Value)>),
) -> std::path::PathBuf {
    let path = dir.join(name);
    write_tiny_gguf_with_meta(
        &path,
        &Tiny {
            context: 8192,
            ..Tiny::qwen2()
        },
        11,
        edit,
    );
    path
}

/// The affectbench binary these tests were built with, as a command to add arguments to.
pub fn affectbench_command() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_affectbench"))
}

/// Runs affectbench with `args` and returns what it printed and its status.
pub fn affectbench(args: &[&str]) -> std::process::Output {
    affectbench_command()
        .args(args)
        .output()
        .expect("running affectbench")
}
