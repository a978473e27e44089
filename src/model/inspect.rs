//! `affectbench models inspect`: what a GGUF file holds and what affectbench will do
//! with each tensor (which kernel multiplies by it, or that it is unused), read from the
//! header alone so an 8B file answers in a moment. Nothing falls back silently: a
//! matrix that does not pack says why, a tensor we do not read says so, and a file
//! whose architecture, hyper-parameters or tokenizer we cannot run says that first.

use super::arch::{ArchSpec, TensorGroup};
use super::config::ModelConfig;
use crate::error::Result;
use crate::gguf::GgufFile;
use crate::kernels::packed::PackedMatrix;
use crate::quant::QuantType;
use crate::tokenizer::ModelTokenizer;
use candle_core::quantized::GgmlDType;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// One tensor and what becomes of it.
#[derive(Debug, Clone, Serialize)]
pub struct TensorUse {
    pub name: String,
    pub shape: Vec<usize>,
    pub ggml_type: String,
    pub bytes: u64,
    /// embeddings, matrix, norm/bias, rope factors, unused
    pub role: &'static str,
    /// What computes with it on CPU by default.
    pub kernel: String,
}

/// A GGUF file as affectbench sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub path: String,
    pub file_bytes: u64,
    pub architecture: String,
    /// The validated configuration, or why the file cannot run.
    pub config: std::result::Result<ConfigSummary, String>,
    pub tokenizer: std::result::Result<String, String>,
    pub chat_template: Option<String>,
    pub parameters: u64,
    pub tensors: Vec<TensorUse>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfigSummary {
    pub layers: usize,
    pub d_model: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub context: usize,
    pub vocab: usize,
    pub rope_base: f32,
    pub rope_scaling: String,
    pub sliding_window: Option<usize>,
    pub softcaps: Option<(Option<f32>, Option<f32>)>,
}

impl Inspection {
    /// (ggml type, kernel) -> (tensors, bytes), for the summary table.
    pub fn by_type_and_kernel(&self) -> BTreeMap<(String, String), (usize, u64)> {
        let mut out: BTreeMap<(String, String), (usize, u64)> = BTreeMap::new();
        for t in &self.tensors {
            let e = out
                .entry((t.ggml_type.clone(), t.kernel.clone()))
                .or_default();
            e.0 += 1;
            e.1 += t.bytes;
        }
        out
    }

    /// Matrices that do not run on the packed int8 kernel, and tensors nothing reads.
    pub fn exceptions(&self) -> Vec<&TensorUse> {
        self.tensors
            .iter()
            .filter(|t| {
                t.role == "unused" || (t.role == "matrix" && !t.kernel.starts_with("packed"))
            })
            .collect()
    }
}

/// Reads `path`'s header and classifies every tensor.
pub fn inspect_gguf(path: &Path) -> Result<Inspection> {
    let g = GgufFile::open(path)?;
    let file_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let architecture = g
        .architecture()
        .unwrap_or_else(|e| format!("unreadable ({e})"));
    let config = ModelConfig::from_gguf(&g).map(|c| summarise(&c, &g));
    let tokenizer = ModelTokenizer::from_gguf(&g)
        .map(|t| {
            format!(
                "{} ({}), {} tokens, bos {}, eos {}",
                g.opt_string("tokenizer.ggml.model")
                    .ok()
                    .flatten()
                    .unwrap_or_default(),
                g.opt_string("tokenizer.ggml.pre")
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| "no pre".into()),
                t.tokenizer.get_vocab_size(true),
                t.bos.as_ref().map_or("none".into(), |b| b.1.clone()),
                t.eos.as_ref().map_or("none".into(), |e| e.1.clone()),
            )
        })
        .map_err(|e| e.to_string());
    let chat_template = g
        .opt_string("tokenizer.chat_template")
        .ok()
        .flatten()
        .map(|t| {
            format!(
                "{} characters, sha256 {}",
                t.len(),
                &crate::chat::sha256_hex(t.as_bytes())[..16]
            )
        });
    let tied = !g.has_tensor("output.weight");
    let spec = super::arch::find(&architecture);
    let mut tensors: Vec<TensorUse> = g
        .tensor_entries()
        .iter()
        .map(|(name, entry)| {
            let shape = entry.shape.clone();
            let dtype = entry.quant;
            let bytes = dtype.bytes_for(entry.elems()).unwrap_or(0) as u64;
            let (role, kernel) = classify(name, &shape, dtype, tied, spec);
            TensorUse {
                name: name.clone(),
                shape,
                ggml_type: dtype.to_string(),
                bytes,
                role,
                kernel,
            }
        })
        .collect();
    tensors.sort_by_key(|t| natural_key(&t.name));
    let parameters = tensors
        .iter()
        .map(|t| t.shape.iter().product::<usize>() as u64)
        .sum();
    Ok(Inspection {
        path: path.display().to_string(),
        file_bytes,
        architecture,
        config: config.map_err(|e| e.to_string()),
        tokenizer,
        chat_template,
        parameters,
        tensors,
    })
}

/// Sorts `blk.10` after `blk.9`.
fn natural_key(name: &str) -> (usize, String) {
    let layer = name
        .strip_prefix("blk.")
        .and_then(|r| r.split('.').next())
        .and_then(|n| n.parse().ok())
        .map_or(0, |n: usize| n + 1);
    (layer, name.to_string())
}

fn summarise(c: &ModelConfig, g: &GgufFile) -> ConfigSummary {
    let rope_scaling = if g.has_tensor("rope_freqs.weight") {
        "rope_freqs.weight (Llama 3.1 factors)".to_string()
    } else if g.has_tensor("rope_factors_short.weight") {
        format!(
            "LongRoPE short factors, attention factor {}, context capped at the original length",
            c.rope_attn_factor
        )
    } else if c.rope_freq_factors.is_some() {
        "linear".to_string()
    } else {
        "none".to_string()
    };
    ConfigSummary {
        layers: c.n_layer,
        d_model: c.d_model,
        heads: c.n_head,
        kv_heads: c.n_kv_head,
        head_dim: c.head_dim,
        context: c.context_length,
        vocab: c.vocab_size,
        rope_base: c.rope_base,
        rope_scaling,
        sliding_window: c.sliding_window,
        softcaps: (c.attn_softcap.is_some() || c.final_softcap.is_some())
            .then_some((c.attn_softcap, c.final_softcap)),
    }
}

/// The role of a tensor and the kernel that computes with it by default (CPU, packed
/// kernels), mirroring `load_gguf`.
fn classify(
    name: &str,
    shape: &[usize],
    dtype: QuantType,
    tied: bool,
    spec: Option<&ArchSpec>,
) -> (&'static str, String) {
    let uses = |group: TensorGroup| spec.is_some_and(|s| s.presence(group).is_some());
    let matrix_kernel = || -> String {
        let (n, k) = match shape {
            // candle reads GGUF dims row-major: (outputs, inputs).
            [n, k] => (*n, *k),
            _ => return "not a matrix: cannot be used".into(),
        };
        match dtype {
            QuantType::Candle(GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16) => {
                "dense (candle matmul; not batch-invariant)".into()
            }
            _ => match PackedMatrix::packable(dtype, n, k) {
                Ok(block) if dtype.candle().is_none() => {
                    format!("packed-int8 (blocks of {block}; IQ4 code book)")
                }
                Ok(block) => format!("packed-int8 (blocks of {block})"),
                Err(why) => format!(
                    "candle-qmatmul ({}; not batch-invariant, so rows run one at a time)",
                    why.0
                ),
            },
        }
    };
    let tail = name
        .strip_prefix("blk.")
        .and_then(|r| r.split_once('.'))
        .map_or(name, |(_, t)| t);
    match tail {
        "token_embd.weight" => {
            let k = matrix_kernel();
            let rows = if k.starts_with("packed") {
                "rows dequantised on demand"
            } else {
                "dequantised to f32"
            };
            let kernel = if tied {
                format!("{rows}; also the output layer: {k}")
            } else {
                rows.to_string()
            };
            ("embeddings", kernel)
        }
        "output.weight" | "attn_q.weight" | "attn_k.weight" | "attn_v.weight"
        | "attn_qkv.weight" | "attn_output.weight" | "ffn_gate.weight" | "ffn_up.weight"
        | "ffn_down.weight" => ("matrix", matrix_kernel()),
        "rope_freqs.weight" | "rope_factors_short.weight" => {
            ("rope factors", "divides rope frequencies".into())
        }
        "rope_factors_long.weight" => (
            "unused",
            "LongRoPE long factors: contexts stay within the original length".into(),
        ),
        "attn_norm.weight" | "ffn_norm.weight" | "output_norm.weight" => {
            ("norm/bias", "f32 elementwise".into())
        }
        "attn_q.bias" | "attn_k.bias" | "attn_v.bias" if uses(TensorGroup::QkvBias) => {
            ("norm/bias", "f32 elementwise".into())
        }
        "attn_q_norm.weight" | "attn_k_norm.weight" if uses(TensorGroup::QkNorm) => {
            ("norm/bias", "f32 elementwise".into())
        }
        "post_attention_norm.weight" | "post_ffw_norm.weight" if uses(TensorGroup::PostNorms) => {
            ("norm/bias", "f32 elementwise".into())
        }
        _ => ("unused", "not read by affectbench".into()),
    }
}
