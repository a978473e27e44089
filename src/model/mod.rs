//! Loading a model (weights, tokenizer, chat template) from a registry name, a `.gguf`
//! file or a Hugging Face safetensors directory, onto a device.
//!
//! The forward pass (`transformer`) is the project's own; `reference` wraps
//! candle-transformers' implementation so tests can compare the two.

pub use crate::arch;
pub mod config;
pub mod inspect;
pub mod kv_cache;
pub mod linear;
mod load_gguf;
mod load_safetensors;
pub mod reference;
pub mod residual;
pub mod transformer;
pub mod unit_forward;

pub use config::{Activation, Arch, ModelConfig};
pub use kv_cache::KvCache;
pub use residual::Keep;
pub use transformer::{LogitsAt, OpPath, Transformer};
pub use unit_forward::UnitKv;

use crate::cache;
use crate::chat::{ChatTemplate, Message};
use crate::error::{Error, Result};
use crate::kernels::int8_matmul::{best_path, KernelPath};
use crate::registry::{ModelRef, Registry};
use crate::tokenizer::ModelTokenizer;
use candle_core::Device;
use std::path::PathBuf;

/// How to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    /// Which matmul kernels run the linear layers.
    pub kernels: Kernels,
    /// The packed int8 micro-kernel (with `Kernels::Packed` on CPU).
    pub int8_kernel: KernelPath,
    /// Attention and gated activation: fused CPU kernels where they apply, or the
    /// candle-op reference.
    pub ops: OpPath,
    /// Force the MLP activation (tests use this to match a reference with a known
    /// deviation; never needed in normal use).
    pub activation_override: Option<Activation>,
    /// How 4-bit weights are held (None: by model size, see `FourBit::for_model_bytes`);
    /// the results are the same bits either way.
    pub four_bit: Option<crate::kernels::packed::FourBit>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            kernels: Kernels::Packed,
            int8_kernel: best_path(),
            ops: OpPath::Fused,
            activation_override: None,
            four_bit: None,
        }
    }
}

/// The kernels behind the linear layers of a GGUF model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// affectbench's packed int8 kernels on CPU (the fast path; candle's elsewhere).
    Packed,
    /// candle's quantized matmul (`QMatMul`).
    Candle,
    /// Weights dequantised to f32 and multiplied without quantising activations: slow,
    /// but the closest to the file's exact arithmetic; the accuracy reference.
    DenseF32,
    /// Weights dequantised to f16 at load, multiplied by the device's GEMM (cuBLAS on
    /// CUDA): the GPU default.
    DenseF16,
}

impl Kernels {
    pub fn name(self) -> &'static str {
        match self {
            Kernels::Packed => "packed-int8",
            Kernels::Candle => "candle-qmatmul",
            Kernels::DenseF32 => "dense-f32",
            Kernels::DenseF16 => "dense-f16",
        }
    }
}

/// Where the model came from and what identifies it (recorded with results).
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub label: String,
    pub path: PathBuf,
    pub arch: Arch,
}

/// A ready-to-run model (cloning shares the weights).
#[derive(Clone)]
pub struct Model {
    pub transformer: Transformer,
    pub tokenizer: ModelTokenizer,
    pub chat_template: Option<ChatTemplate>,
    pub info: ModelInfo,
}

impl Model {
    /// Resolves `--model` (registry name, .gguf path or safetensors dir) and loads it.
    /// Registry models must have been fetched (`affectbench models fetch NAME`).
    pub fn load(registry: &Registry, model_arg: &str, opts: &LoadOptions) -> Result<Self> {
        let model_ref = ModelRef::resolve(registry, model_arg)?;
        Self::load_ref(&model_ref, opts)
    }

    pub fn load_ref(model_ref: &ModelRef, opts: &LoadOptions) -> Result<Self> {
        match model_ref {
            ModelRef::Registry(entry) => {
                let path = cache::verified_file(entry)?;
                load_gguf::load(
                    &path,
                    entry.name.clone(),
                    entry.chat_template.as_deref(),
                    opts,
                )
            }
            ModelRef::GgufFile(path) => load_gguf::load(path, model_ref.label(), None, opts),
            ModelRef::SafetensorsDir(dir) => load_safetensors::load(dir, model_ref.label(), opts),
            ModelRef::Server(e, _) => Err(Error::Server(format!(
                "{} is a server: this command needs the weights loaded here (a .gguf file, a \
                 Hugging Face directory or a registry name); `affectbench run` is the command \
                 that runs studies on a server",
                e.describe()
            ))),
        }
    }

    /// The prompt text for a conversation, through the model's chat template.
    pub fn render_chat(&self, messages: &[Message]) -> Result<String> {
        let t = self.chat_template.as_ref().ok_or_else(|| {
            Error::ChatTemplate(format!(
                "{} has no chat template (a base model?): use --raw, or give it its template \
                 (a GGUF's tokenizer.chat_template, a directory's tokenizer_config.json or \
                 chat_template.jinja, a registry entry's chat_template)",
                self.info.label
            ))
        })?;
        t.render(messages, true)
    }

    /// Token ids for a prompt: chat-rendered text is tokenized as-is (the template
    /// writes any BOS); a raw prompt gets BOS if the model wants one.
    pub fn prompt_tokens(&self, text: &str, raw: bool) -> Result<Vec<u32>> {
        self.tokenizer.encode(text, raw)
    }
}

/// A model's text side: what renders conversations and counts tokens.
pub struct TextSide {
    pub tokenizer: ModelTokenizer,
    pub chat_template: Option<ChatTemplate>,
    /// The file or directory it came from.
    pub path: PathBuf,
}

/// The tokenizer and chat template of a local model, without loading its weights (a
/// registry entry's file must be fetched).
pub fn load_text_side(model_ref: &ModelRef) -> Result<TextSide> {
    let (path, (tokenizer, chat_template)) = match model_ref {
        ModelRef::Registry(entry) => {
            let path = cache::verified_file(entry)?;
            let side = load_gguf::text_side(&path, entry.chat_template.as_deref())?;
            (path, side)
        }
        ModelRef::GgufFile(p) => (p.clone(), load_gguf::text_side(p, None)?),
        ModelRef::SafetensorsDir(d) => (d.clone(), load_safetensors::text_side(d)?),
        ModelRef::Server(e, _) => {
            return Err(Error::Server(format!(
                "{}: a server's tokenizer must come from a local model, not another server",
                e.describe()
            )))
        }
    };
    Ok(TextSide {
        tokenizer,
        chat_template,
        path,
    })
}

/// Parses `--device cpu | cuda:N | metal`.
pub fn parse_device(spec: &str) -> Result<Device> {
    let fail = |m: String| Error::Device(spec.to_string(), m);
    match spec {
        "cpu" => Ok(Device::Cpu),
        "metal" => {
            Device::new_metal(0).map_err(|e| fail(format!("{e} (build with --features metal)")))
        }
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = s
                .strip_prefix("cuda:")
                .unwrap_or("0")
                .parse::<usize>()
                .map_err(|_| fail("expected cuda:N".into()))?;
            Device::new_cuda(ordinal).map_err(|e| fail(format!("{e} (build with --features cuda)")))
        }
        other => Err(fail(format!("'{other}' is not one of cpu, cuda:N, metal"))),
    }
}
