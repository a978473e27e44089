//! Building a `Model` from a Hugging Face directory (`config.json`, `tokenizer.json`,
//! `tokenizer_config.json`, `*.safetensors` in f32/f16/bf16) for llama, qwen2, qwen3,
//! phi3 (fused qkv and gate/up, LongRoPE) and gemma2 (norms stored as w - 1, post-norms,
//! soft caps, alternating window): what cluster users run on GPUs. Weights stay dense
//! (no quantisation), computed in f32.

use super::arch::{Presence, TensorGroup};
use super::config::{Activation, Arch, ModelConfig};
use super::linear::Linear;
use super::transformer::{Embeddings, GateUp, Layer, QkvProj, Transformer};
use super::{LoadOptions, Model, ModelInfo};
use crate::chat::ChatTemplate;
use crate::error::{Error, IoContext, Result};
use crate::tokenizer::ModelTokenizer;
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;
use std::path::Path;

/// The fields of `config.json` we use (others are ignored: HF configs carry many).
#[derive(Debug, Deserialize)]
struct HfConfig {
    model_type: String,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    max_position_embeddings: usize,
    rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    rope_theta: f32,
    #[serde(default)]
    tie_word_embeddings: bool,
    hidden_act: Option<String>,
    /// Gemma's name for it (both are written).
    hidden_activation: Option<String>,
    rope_scaling: Option<serde_json::Value>,
    /// Phi 3.5's LongRoPE: the context its short factors cover.
    original_max_position_embeddings: Option<usize>,
    /// Gemma 2.
    attn_logit_softcapping: Option<f32>,
    final_logit_softcapping: Option<f32>,
    query_pre_attn_scalar: Option<f64>,
    /// Mistral's and Phi 3's window (null where unused; Qwen's configs give one with
    /// `use_sliding_window: false`).
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
}

/// Per-pair rope frequency divisors from `rope_scaling` (None: no scaling), as llama.cpp's
/// converter writes them into `rope_freqs.weight`: `llama3` keeps high frequencies,
/// divides low ones by `factor` and blends in between; `linear` divides all by `factor`.
fn rope_freq_factors(
    scaling: Option<&serde_json::Value>,
    theta: f32,
    head_dim: usize,
) -> std::result::Result<Option<Vec<f32>>, String> {
    let Some(s) = scaling.filter(|s| !s.is_null()) else {
        return Ok(None);
    };
    let kind = s
        .get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    let num = |k: &str| -> std::result::Result<f64, String> {
        s.get(k)
            .and_then(|v| v.as_f64())
            .ok_or_else(|| format!("has rope_type {kind} but no number '{k}'"))
    };
    match kind {
        "default" => Ok(None),
        "linear" => Ok(Some(vec![num("factor")? as f32; head_dim / 2])),
        "llama3" => {
            let factor = num("factor")?;
            let (low, high) = (num("low_freq_factor")?, num("high_freq_factor")?);
            let old = num("original_max_position_embeddings")?;
            let (low_wavelen, high_wavelen) = (old / low, old / high);
            Ok(Some(
                (0..head_dim)
                    .step_by(2)
                    .map(|i| {
                        let freq = 1.0 / (theta as f64).powf(i as f64 / head_dim as f64);
                        let wavelen = 2.0 * std::f64::consts::PI / freq;
                        let f = if wavelen < high_wavelen {
                            1.0
                        } else if wavelen > low_wavelen {
                            factor
                        } else {
                            let smooth = (old / wavelen - low) / (high - low);
                            1.0 / ((1.0 - smooth) / factor + smooth)
                        };
                        f as f32
                    })
                    .collect(),
            ))
        }
        other => Err(format!(
            "has rope_type '{other}'; supported: default, linear, llama3"
        )),
    }
}

/// Phi 3's LongRoPE from config.json: the short factors (used while the context stays
/// within the original length, where llama.cpp also uses them, so the context is capped
/// there) and the attention factor sqrt(1 + ln(s) / ln(original)), s the extension.
struct LongRope {
    short_factors: Vec<f32>,
    attn_factor: f32,
    original_context: usize,
}

fn longrope(
    scaling: Option<&serde_json::Value>,
    max_positions: usize,
    original: Option<usize>,
    head_dim: usize,
) -> std::result::Result<Option<LongRope>, String> {
    let Some(s) = scaling.filter(|s| !s.is_null()) else {
        return Ok(None);
    };
    let kind = s
        .get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(|v| v.as_str());
    if !matches!(kind, Some("longrope") | Some("su")) {
        return Ok(None);
    }
    let original = original
        .or_else(|| {
            s.get("original_max_position_embeddings")
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
        })
        .ok_or("is longrope but gives no original_max_position_embeddings")?;
    let short: Vec<f32> = s
        .get("short_factor")
        .and_then(|v| v.as_array())
        .ok_or("is longrope but has no short_factor list")?
        .iter()
        .map(|x| x.as_f64().map(|f| f as f32))
        .collect::<Option<_>>()
        .ok_or("short_factor holds a non-number")?;
    if short.len() != head_dim / 2 {
        return Err(format!(
            "short_factor has {} entries; head_dim {head_dim} needs {}",
            short.len(),
            head_dim / 2
        ));
    }
    let scale = max_positions as f64 / original as f64;
    let attn_factor = if scale <= 1.0 {
        1.0
    } else {
        (1.0 + scale.ln() / (original as f64).ln()).sqrt()
    };
    Ok(Some(LongRope {
        short_factors: short,
        attn_factor: attn_factor as f32,
        original_context: original.min(max_positions),
    }))
}

fn default_theta() -> f32 {
    10_000.0
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TokenSpec {
    Plain(String),
    Object { content: String },
}

impl TokenSpec {
    fn text(self) -> String {
        match self {
            TokenSpec::Plain(s) | TokenSpec::Object { content: s } => s,
        }
    }
}

/// Where a directory keeps its chat template when tokenizer_config.json has none.
pub const TEMPLATE_FILE: &str = "chat_template.jinja";

#[derive(Debug, Default, Deserialize)]
struct HfTokenizerConfig {
    chat_template: Option<String>,
    bos_token: Option<TokenSpec>,
    eos_token: Option<TokenSpec>,
    add_bos_token: Option<bool>,
}

pub(super) fn load(dir: &Path, label: String, opts: &LoadOptions) -> Result<Model> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).with_path(&cfg_path)?;
    let hf: HfConfig = serde_json::from_str(&text).map_err(|e| Error::DataFile {
        path: cfg_path.clone(),
        line: e.line(),
        message: e.to_string(),
    })?;
    let arch = Arch::parse(&hf.model_type, &cfg_path)?;
    let spec = arch.spec();
    if !spec.safetensors {
        return Err(Error::Metadata {
            path: cfg_path,
            key: "model_type".into(),
            problem: format!("{} is supported from GGUF files only, not from a safetensors directory; convert it or use its GGUF", spec.name),
        });
    }
    let expected = match spec.activation {
        Activation::Silu => "silu",
        Activation::GeluTanh => "gelu_pytorch_tanh",
    };
    for (key, act) in [
        ("hidden_act", &hf.hidden_act),
        ("hidden_activation", &hf.hidden_activation),
    ] {
        if let Some(act) = act.as_deref().filter(|a| *a != expected) {
            return Err(Error::Metadata {
                path: cfg_path,
                key: key.into(),
                problem: format!("is '{act}'; {} uses {expected}", arch.name()),
            });
        }
    }
    for (key, value) in [
        ("num_attention_heads", hf.num_attention_heads),
        ("hidden_size", hf.hidden_size),
        ("num_hidden_layers", hf.num_hidden_layers),
        ("vocab_size", hf.vocab_size),
    ] {
        if value == 0 {
            return Err(Error::Metadata {
                path: cfg_path,
                key: key.into(),
                problem: "is 0; a model needs at least one".into(),
            });
        }
    }
    let head_dim = hf
        .head_dim
        .unwrap_or(hf.hidden_size / hf.num_attention_heads);
    let rope_err = |problem: String| Error::Metadata {
        path: cfg_path.clone(),
        key: "rope_scaling".into(),
        problem,
    };
    let longrope = longrope(
        hf.rope_scaling.as_ref(),
        hf.max_position_embeddings,
        hf.original_max_position_embeddings,
        head_dim,
    )
    .map_err(rope_err)?;
    let rope_freq_factors = match &longrope {
        Some(l) => Some(l.short_factors.clone()),
        None => rope_freq_factors(hf.rope_scaling.as_ref(), hf.rope_theta, head_dim)
            .map_err(rope_err)?,
    };
    let gemma2 = arch == Arch::Gemma2;
    let config = ModelConfig {
        arch,
        n_layer: hf.num_hidden_layers,
        d_model: hf.hidden_size,
        n_head: hf.num_attention_heads,
        n_kv_head: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
        head_dim,
        vocab_size: hf.vocab_size,
        context_length: longrope
            .as_ref()
            .map_or(hf.max_position_embeddings, |l| l.original_context),
        rms_eps: hf.rms_norm_eps,
        rope_base: hf.rope_theta,
        rope_base_local: hf.rope_theta,
        rope_freq_factors,
        rope_attn_factor: longrope.as_ref().map_or(1.0, |l| l.attn_factor),
        // HF checkpoints rotate halves for both architectures (GGUF llama permutes q/k).
        rope_neox: true,
        // Gemma 2 slides on every other layer (layer 0 first), as `sliding_pattern` 2.
        sliding_window: if spec.sliding_window {
            hf.sliding_window
        } else {
            None
        },
        sliding_pattern: spec.sliding_pattern,
        activation: opts.activation_override.unwrap_or(spec.activation),
        scale_embeddings: spec.scale_embeddings,
        attn_softcap: hf.attn_logit_softcapping.filter(|_| spec.softcap),
        final_softcap: hf.final_logit_softcapping.filter(|_| spec.softcap),
        query_scale: hf
            .query_pre_attn_scalar
            .filter(|&q| q != head_dim as f64)
            .map(|q| (1.0 / q.sqrt()) as f32),
    };
    let mut config = config;
    if !spec.sliding_window {
        if let (Some(window), None | Some(true)) = (hf.sliding_window, hf.use_sliding_window) {
            config.cap_at_unapplied_window(window);
        }
    }
    config.validate(&cfg_path)?;

    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_path(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Tensor {
            path: dir.to_path_buf(),
            tensor: "*".into(),
            message: "no .safetensors files in the directory".into(),
        });
    }
    // SAFETY: the files are memory-mapped read-only; modifying them while a run uses
    // them is undefined, as with any mmap-based loader.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &opts.device)? };
    let tensor_err = |name: &str, e: candle_core::Error| Error::Tensor {
        path: dir.to_path_buf(),
        tensor: name.to_string(),
        message: e.to_string(),
    };
    let get = |name: &str, shape: &[usize]| -> Result<Tensor> {
        vb.get(shape, name).map_err(|e| tensor_err(name, e))
    };

    let (d, f, hd) = (config.d_model, hf.intermediate_size, config.head_dim);
    let (nh, nkv) = (config.n_head, config.n_kv_head);
    // Gemma stores its norms as w - 1 (it multiplies by 1 + w); llama.cpp's converter
    // adds the 1, and so do we.
    let norm = |name: &str| -> Result<Tensor> {
        let w = get(name, &[d])?;
        Ok(if gemma2 { (w + 1.0)? } else { w })
    };
    let embed = get("model.embed_tokens.weight", &[config.vocab_size, d])?;
    // Gemma's config.json may leave tie_word_embeddings out (its default is true).
    let output = if hf.tie_word_embeddings || !vb.contains_tensor("lm_head.weight") {
        embed.clone()
    } else {
        get("lm_head.weight", &[config.vocab_size, d])?
    };
    let mut layers = Vec::with_capacity(config.n_layer);
    for i in 0..config.n_layer {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        // Phi 3 writes q, k and v as one matrix, and gate and up as one (gate rows first).
        let qkv = if vb.contains_tensor(&p("self_attn.qkv_proj.weight")) {
            get(&p("self_attn.qkv_proj.weight"), &[(nh + 2 * nkv) * hd, d])?
        } else {
            let q = get(&p("self_attn.q_proj.weight"), &[nh * hd, d])?;
            let k = get(&p("self_attn.k_proj.weight"), &[nkv * hd, d])?;
            let v = get(&p("self_attn.v_proj.weight"), &[nkv * hd, d])?;
            Tensor::cat(&[&q, &k, &v], 0)?
        };
        let gate_up = if vb.contains_tensor(&p("mlp.gate_up_proj.weight")) {
            get(&p("mlp.gate_up_proj.weight"), &[2 * f, d])?
        } else {
            let gate = get(&p("mlp.gate_proj.weight"), &[f, d])?;
            let up = get(&p("mlp.up_proj.weight"), &[f, d])?;
            Tensor::cat(&[&gate, &up], 0)?
        };
        let bias = spec.presence(TensorGroup::QkvBias);
        let has_bias = bias == Some(Presence::Required)
            || (bias == Some(Presence::Optional)
                && vb.contains_tensor(&p("self_attn.q_proj.bias")));
        let qkv_bias = if has_bias {
            Some((
                get(&p("self_attn.q_proj.bias"), &[nh * hd])?,
                get(&p("self_attn.k_proj.bias"), &[nkv * hd])?,
                get(&p("self_attn.v_proj.bias"), &[nkv * hd])?,
            ))
        } else {
            None
        };
        let (q_norm, k_norm) = if spec.presence(TensorGroup::QkNorm).is_some() {
            (
                Some(get(&p("self_attn.q_norm.weight"), &[hd])?),
                Some(get(&p("self_attn.k_norm.weight"), &[hd])?),
            )
        } else {
            (None, None)
        };
        // Gemma 2: post_attention_layernorm follows attention, pre/post_feedforward
        // surround the MLP; elsewhere post_attention_layernorm is the MLP's input norm.
        let (post_attn_norm, ffn_norm, post_ffn_norm) =
            if spec.presence(TensorGroup::PostNorms).is_some() {
                (
                    Some(norm(&p("post_attention_layernorm.weight"))?),
                    norm(&p("pre_feedforward_layernorm.weight"))?,
                    Some(norm(&p("post_feedforward_layernorm.weight"))?),
                )
            } else {
                (None, norm(&p("post_attention_layernorm.weight"))?, None)
            };
        layers.push(Layer {
            attn_norm: norm(&p("input_layernorm.weight"))?,
            qkv: QkvProj::Fused(Linear::Dense(qkv)),
            qkv_bias,
            o_proj: Linear::Dense(get(&p("self_attn.o_proj.weight"), &[d, nh * hd])?),
            q_norm,
            k_norm,
            post_attn_norm,
            ffn_norm,
            gate_up: GateUp::Fused(Linear::Dense(gate_up)),
            down: Linear::Dense(get(&p("mlp.down_proj.weight"), &[d, f])?),
            post_ffn_norm,
        });
    }
    let final_norm = norm("model.norm.weight")?;
    let transformer = Transformer::new(
        config,
        Embeddings::Dense(embed),
        layers,
        final_norm,
        Linear::Dense(output),
        opts.device.clone(),
        opts.ops,
    )?;

    let (tokenizer, chat_template) = text_side(dir)?;
    Ok(Model {
        transformer,
        tokenizer,
        chat_template,
        info: ModelInfo {
            label,
            path: dir.to_path_buf(),
            arch,
        },
    })
}

/// The tokenizer (tokenizer.json, tokenizer_config.json) and chat template of a Hugging
/// Face directory, without its weights.
pub(super) fn text_side(dir: &Path) -> Result<(ModelTokenizer, Option<ChatTemplate>)> {
    let tc_path = dir.join("tokenizer_config.json");
    let tc: HfTokenizerConfig = if tc_path.is_file() {
        let text = std::fs::read_to_string(&tc_path).with_path(&tc_path)?;
        serde_json::from_str(&text).map_err(|e| Error::DataFile {
            path: tc_path.clone(),
            line: e.line(),
            message: e.to_string(),
        })?
    } else {
        HfTokenizerConfig::default()
    };
    let bos = tc.bos_token.map(TokenSpec::text);
    let eos = tc.eos_token.map(TokenSpec::text);
    let tokenizer = ModelTokenizer::from_tokenizer_json(
        &dir.join("tokenizer.json"),
        bos.clone(),
        eos.clone(),
        tc.add_bos_token.unwrap_or(false),
    )?;
    // Directories saved by newer transformers keep the template in its own file.
    let jinja = dir.join(TEMPLATE_FILE);
    let template_src = match tc.chat_template {
        Some(src) => Some(src),
        None if jinja.is_file() => Some(std::fs::read_to_string(&jinja).with_path(&jinja)?),
        None => None,
    };
    let chat_template = template_src
        .map(|src| {
            ChatTemplate::new(
                &src,
                bos.as_deref().unwrap_or(""),
                eos.as_deref().unwrap_or(""),
            )
        })
        .transpose()?;
    Ok((tokenizer, chat_template))
}

#[cfg(test)]
mod tests {
    use super::longrope;

    #[test]
    fn longrope_takes_the_short_factors_and_phi35s_attention_factor() {
        // Phi-3.5-mini: 131072 positions over an original 4096.
        let scaling = serde_json::json!({
            "type": "longrope", "short_factor": [1.0, 1.5], "long_factor": [4.0, 8.0]
        });
        let l = longrope(Some(&scaling), 131072, Some(4096), 4)
            .unwrap()
            .unwrap();
        assert_eq!(l.short_factors, vec![1.0, 1.5]);
        assert_eq!(l.original_context, 4096);
        let expected = (1.0 + (32f64).ln() / (4096f64).ln()).sqrt();
        assert!((l.attn_factor as f64 - expected).abs() < 1e-6 && (expected - 1.1902).abs() < 1e-4);
        // No extension: no attention factor.
        assert_eq!(
            longrope(Some(&scaling), 4096, Some(4096), 4)
                .unwrap()
                .unwrap()
                .attn_factor,
            1.0
        );
        // Other kinds are not longrope; bad lists are refused naming the key.
        let llama3 = serde_json::json!({"rope_type": "llama3", "factor": 8.0});
        assert!(longrope(Some(&llama3), 131072, None, 4).unwrap().is_none());
        let err = longrope(Some(&scaling), 131072, Some(4096), 8)
            .err()
            .unwrap();
        assert!(err.contains("short_factor has 2 entries"), "{err}");
        let err = longrope(
            Some(&serde_json::json!({"type": "longrope"})),
            8,
            Some(4),
            4,
        )
        .err()
        .unwrap();
        assert!(err.contains("short_factor"), "{err}");
    }
}
