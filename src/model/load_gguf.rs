//! Building a `Model` from a GGUF file: tensors by llama.cpp's names, weights packed for
//! the int8 kernels on CPU, q/k/v and gate/up fused where their formats agree.

use super::arch::{Presence, TensorGroup};
use super::config::ModelConfig;
use super::linear::Linear;
use super::transformer::{Embeddings, GateUp, Layer, QkvProj, Transformer};
use super::{Kernels, LoadOptions, Model, ModelInfo};
use crate::chat::ChatTemplate;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::kernels::packed::{FourBit, PackedMatrix};
use crate::quant::QuantType;
use crate::tokenizer::ModelTokenizer;
use candle_core::{Device, Tensor};
use std::path::Path;
use std::sync::Arc;

/// Llama 3.1+'s per-pair rope frequency factors.
const ROPE_FREQS: &str = "rope_freqs.weight";
/// Phi 3 LongRoPE's factors for contexts within the original length.
const ROPE_FACTORS_SHORT: &str = "rope_factors_short.weight";

/// The tokenizer and chat template of a GGUF file, without its weights (what a server
/// model of the same weights renders and counts its prompts with).
pub(super) fn text_side(
    path: &Path,
    template_override: Option<&str>,
) -> Result<(ModelTokenizer, Option<ChatTemplate>)> {
    text_side_of(&GgufFile::open(path)?, template_override)
}

fn text_side_of(
    g: &GgufFile,
    template_override: Option<&str>,
) -> Result<(ModelTokenizer, Option<ChatTemplate>)> {
    let tokenizer = ModelTokenizer::from_gguf(g)?;
    let template_src = match template_override {
        Some(t) => Some(t.to_string()),
        None => g.opt_string("tokenizer.chat_template")?,
    };
    let chat_template = template_src
        .map(|src| {
            let bos = tokenizer.bos.as_ref().map(|b| b.1.as_str()).unwrap_or("");
            let eos = tokenizer.eos.as_ref().map(|e| e.1.as_str()).unwrap_or("");
            ChatTemplate::new(&src, bos, eos)
        })
        .transpose()?;
    Ok((tokenizer, chat_template))
}

pub(super) fn load(
    path: &Path,
    label: String,
    template_override: Option<&str>,
    opts: &LoadOptions,
) -> Result<Model> {
    let mut g = GgufFile::open(path)?;
    let mut config = ModelConfig::from_gguf(&g)?;
    // Llama 3.1+ writes its rope scaling as per-pair factors; Phi 3's LongRoPE writes a
    // short and a long set, and llama.cpp takes the short one while the context stays
    // within the original length, so we cap the context there and take it too.
    let factors_tensor = if g.has_tensor(ROPE_FREQS) {
        Some(ROPE_FREQS)
    } else if g.has_tensor(ROPE_FACTORS_SHORT) {
        let key = format!(
            "{}.rope.scaling.original_context_length",
            config.arch.name()
        );
        if let Some(original) = g.opt_usize(&key)? {
            config.context_length = config.context_length.min(original);
        }
        Some(ROPE_FACTORS_SHORT)
    } else {
        None
    };
    if let Some(name) = factors_tensor {
        let factors: Vec<f32> = g
            .tensor(name, &Device::Cpu)?
            .dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1()?;
        let scaled = match config.rope_freq_factors.take() {
            Some(linear) => factors.iter().zip(&linear).map(|(a, b)| a * b).collect(),
            None => factors,
        };
        config.rope_freq_factors = Some(scaled);
        config.validate(&g.path)?;
    }
    if let Some(a) = opts.activation_override {
        config.activation = a;
    }
    let (tokenizer, chat_template) = text_side_of(&g, template_override)?;
    let transformer = build(&mut g, config, opts)?;
    let arch = transformer.config.arch;
    Ok(Model {
        transformer,
        tokenizer,
        chat_template,
        info: ModelInfo {
            label,
            path: path.to_path_buf(),
            arch,
        },
    })
}

fn build(g: &mut GgufFile, config: ModelConfig, opts: &LoadOptions) -> Result<Transformer> {
    let dev = &opts.device;
    let kernels = opts.kernels;
    let four_bit = opts.four_bit.unwrap_or_else(|| {
        FourBit::for_model_bytes(std::fs::metadata(&g.path).map_or(0, |m| m.len()))
    });
    let dense = |g: &mut GgufFile, name: &str| -> Result<Tensor> {
        Ok(g.tensor(name, dev)?.dequantize(dev)?)
    };
    let packs_here = kernels == Kernels::Packed && dev.is_cpu();
    // Whether matrix `name` packs here, from the header alone, so a matrix that does
    // not is read once (by candle), not once for a try and again.
    let packable = |g: &GgufFile, name: &str| -> bool {
        packs_here
            && g.tensor_entries()
                .get(name)
                .is_some_and(|e| match e.shape[..] {
                    [n, k] => PackedMatrix::packable(e.quant, n, k).is_ok(),
                    _ => false,
                })
    };
    // Matrices as stored, packed into one stacked matrix (the rows of the first, then
    // the next ...) where they share k and pack alike; None where they do not.
    let pack = |raws: &[(QuantType, Vec<usize>, Vec<u8>)]| -> Option<Linear> {
        let k = raws[0].1[1];
        if raws.iter().any(|(_, shape, _)| shape[1] != k) {
            return None;
        }
        let parts: Vec<_> = raws
            .iter()
            .map(|(quant, shape, data)| (*quant, data.as_slice(), shape[0]))
            .collect();
        let p = PackedMatrix::from_ggml_stacked(&parts, k, four_bit).ok()?;
        Some(Linear::Packed(Arc::new(p), opts.int8_kernel))
    };
    let linear = |g: &mut GgufFile, name: &str| -> Result<Linear> {
        if packable(g, name) {
            if let Some(l) = pack(&[g.raw(name)?]) {
                return Ok(l);
            }
        }
        let q = g.tensor(name, dev)?;
        Ok(match kernels {
            Kernels::DenseF32 => Linear::Dense(q.dequantize(dev)?),
            Kernels::DenseF16 => Linear::Dense(q.dequantize_f16(dev)?),
            Kernels::Packed | Kernels::Candle => Linear::from_qtensor(q)?,
        })
    };

    // Layers that run side by side (q/k/v, gate/up) as one stacked matrix: packed
    // straight into one where they pack alike (no second copy while loading), else
    // packed apart from the bytes already read and fused if their formats allow.
    let stacked = |g: &mut GgufFile, names: &[String]| -> Result<Vec<Linear>> {
        let apart = if names.iter().all(|n| packable(g, n)) {
            let raws = names.iter().map(|n| g.raw(n)).collect::<Result<Vec<_>>>()?;
            if let Some(l) = pack(&raws) {
                return Ok(vec![l]);
            }
            raws.into_iter()
                .map(|raw| pack(std::slice::from_ref(&raw)))
                .collect::<Option<Vec<_>>>()
        } else {
            None
        };
        let apart = match apart {
            Some(apart) => apart,
            None => names
                .iter()
                .map(|n| linear(g, n))
                .collect::<Result<Vec<_>>>()?,
        };
        let refs: Vec<&Linear> = apart.iter().collect();
        Ok(Linear::fuse(&refs).map_or(apart, |f| vec![f]))
    };

    let spec = config.arch.spec();
    // An optional tensor group of layer i, dense: None where the architecture has no such
    // group or (if optional) the file lacks it; an error naming the first missing tensor
    // where the architecture requires it.
    let group = |g: &mut GgufFile, which: TensorGroup, i: usize| -> Result<Option<Vec<Tensor>>> {
        let names = which.gguf_names(i);
        match spec.presence(which) {
            None => Ok(None),
            Some(Presence::Optional) if !names.iter().all(|n| g.has_tensor(n)) => Ok(None),
            Some(presence) => {
                if let Some(missing) = names.iter().find(|n| !g.has_tensor(n)) {
                    debug_assert_eq!(presence, Presence::Required);
                    return Err(Error::Tensor {
                        path: g.path.clone(),
                        tensor: missing.clone(),
                        message: format!("missing; architecture {} requires it (is the file complete, and is general.architecture right?)", spec.name),
                    });
                }
                names
                    .iter()
                    .map(|n| Ok(g.tensor(n, dev)?.dequantize(dev)?))
                    .collect::<Result<Vec<_>>>()
                    .map(Some)
            }
        }
    };
    let tied = !g.has_tensor("output.weight");
    let embd_linear = linear(g, "token_embd.weight")?;
    let embeddings = match &embd_linear {
        Linear::Packed(p, _) => Embeddings::Packed(p.clone()),
        // One dense table serves both (rows are cast to f32 as they are looked up).
        Linear::Dense(t) if tied => Embeddings::Dense(t.clone()),
        _ => Embeddings::Dense(dense(g, "token_embd.weight")?),
    };
    let output = if tied {
        embd_linear
    } else {
        linear(g, "output.weight")?
    };
    let final_norm = dense(g, "output_norm.weight")?;

    let mut layers = Vec::with_capacity(config.n_layer);
    for i in 0..config.n_layer {
        let p = |s: &str| format!("blk.{i}.{s}");
        // Some converters write q, k and v as one matrix (Phi 3).
        let qkv = if g.has_tensor(&p("attn_qkv.weight")) {
            QkvProj::Fused(linear(g, &p("attn_qkv.weight"))?)
        } else {
            let names = [p("attn_q.weight"), p("attn_k.weight"), p("attn_v.weight")];
            let mut l = stacked(g, &names)?;
            match l.len() {
                1 => QkvProj::Fused(l.remove(0)),
                _ => {
                    let (v, k, q) = (l.remove(2), l.remove(1), l.remove(0));
                    QkvProj::Separate(q, k, v)
                }
            }
        };
        let qkv_bias = match group(g, TensorGroup::QkvBias, i)?.as_deref() {
            Some([q, k, v]) => Some((q.clone(), k.clone(), v.clone())),
            _ => None,
        };
        let gate_up = if spec.gguf_gate_in_up {
            // Gate rows first, then up: the layout `GateUp::Fused` splits.
            GateUp::Fused(linear(g, &p("ffn_up.weight"))?)
        } else {
            let mut l = stacked(g, &[p("ffn_gate.weight"), p("ffn_up.weight")])?;
            match l.len() {
                1 => GateUp::Fused(l.remove(0)),
                _ => {
                    let (u, g) = (l.remove(1), l.remove(0));
                    GateUp::Separate(g, u)
                }
            }
        };
        let (q_norm, k_norm) = match group(g, TensorGroup::QkNorm, i)?.as_deref() {
            Some([q, k]) => (Some(q.clone()), Some(k.clone())),
            _ => (None, None),
        };
        let (post_attn_norm, post_ffn_norm) = match group(g, TensorGroup::PostNorms, i)?.as_deref()
        {
            Some([a, f]) => (Some(a.clone()), Some(f.clone())),
            _ => (None, None),
        };
        layers.push(Layer {
            attn_norm: dense(g, &p("attn_norm.weight"))?,
            qkv,
            qkv_bias,
            o_proj: linear(g, &p("attn_output.weight"))?,
            q_norm,
            k_norm,
            post_attn_norm,
            ffn_norm: dense(g, &p("ffn_norm.weight"))?,
            gate_up,
            down: linear(g, &p("ffn_down.weight"))?,
            post_ffn_norm,
        });
    }
    let device: Device = dev.clone();
    Ok(Transformer::new(
        config, embeddings, layers, final_norm, output, device, opts.ops,
    )?)
}
