//! The reference forward pass: candle-transformers' quantized llama / qwen2 / qwen3 /
//! gemma3 / phi3 on the same GGUF file. Tests feed both implementations the same tokens and compare.
//!
//! Known deviation: candle-transformers 0.11.1's quantized_gemma3 uses SiLU in the MLP,
//! while Gemma 3 (and llama.cpp, and our model) use GELU-tanh. Parity tests therefore
//! load our gemma3 with `activation_override = Silu` to compare everything else.

use super::config::Arch;
use crate::error::Result;
use crate::gguf::GgufFile;
use candle_core::{Device, IndexOp, Tensor};
use candle_transformers::models::{
    quantized_gemma3, quantized_llama, quantized_phi3, quantized_qwen2, quantized_qwen3,
};
use std::path::Path;

pub enum ReferenceModel {
    Llama(quantized_llama::ModelWeights),
    Qwen2(quantized_qwen2::ModelWeights),
    Qwen3(quantized_qwen3::ModelWeights),
    Gemma3(quantized_gemma3::ModelWeights),
    Phi3(quantized_phi3::ModelWeights),
}

impl ReferenceModel {
    pub fn load(path: &Path) -> Result<Self> {
        let g = GgufFile::open(path)?;
        let arch = Arch::parse(&g.architecture()?, path)?;
        let mut file = std::fs::File::open(path).map_err(|source| crate::error::Error::Io {
            path: path.into(),
            source,
        })?;
        let dev = Device::Cpu;
        let content = g.content;
        Ok(match arch {
            Arch::Llama => Self::Llama(quantized_llama::ModelWeights::from_gguf(
                content, &mut file, &dev,
            )?),
            Arch::Qwen2 => Self::Qwen2(quantized_qwen2::ModelWeights::from_gguf(
                content, &mut file, &dev,
            )?),
            Arch::Qwen3 => Self::Qwen3(quantized_qwen3::ModelWeights::from_gguf(
                content, &mut file, &dev,
            )?),
            Arch::Gemma2 => {
                return Err(crate::error::Error::Gguf {
                    path: path.into(),
                    message: "candle-transformers has no quantized gemma2 to compare with; tests/llamacpp_parity.rs compares it with llama.cpp".into(),
                })
            }
            Arch::Gemma3 => Self::Gemma3(quantized_gemma3::ModelWeights::from_gguf(
                content, &mut file, &dev,
            )?),
            // No flash attention: the reference is the plain one.
            Arch::Phi3 => Self::Phi3(quantized_phi3::ModelWeights::from_gguf(
                false, content, &mut file, &dev,
            )?),
        })
    }

    /// Last-position logits after feeding `tokens` at `index_pos` (the model keeps its
    /// own cache, so calls must be sequential).
    pub fn forward(&mut self, tokens: &[u32], index_pos: usize) -> Result<Vec<f32>> {
        let x = Tensor::new(tokens, &Device::Cpu)?.unsqueeze(0)?;
        let logits = match self {
            Self::Llama(m) => m.forward(&x, index_pos)?,
            Self::Qwen2(m) => m.forward(&x, index_pos)?,
            Self::Qwen3(m) => m.forward(&x, index_pos)?,
            Self::Gemma3(m) => m.forward(&x, index_pos)?,
            Self::Phi3(m) => m.forward(&x, index_pos)?,
        };
        let logits = if logits.rank() == 2 {
            logits.i(0)?
        } else {
            logits.flatten_all()?
        };
        Ok(logits.to_vec1()?)
    }
}
