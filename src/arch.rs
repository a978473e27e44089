//! Architectures as a table. Everything that differs between the architectures we run
//! lives in one `ArchSpec` each: the name files use for it, which optional tensors it
//! requires, its activation, rope layout, embedding scaling and sliding window, and
//! whether the Hugging Face (safetensors) loader supports it. The GGUF and safetensors
//! loaders, the configuration reader, the registry check and the error messages all
//! derive from `ARCHITECTURES`; adding an architecture is one entry here (plus the
//! forward-pass feature it needs, if it is new) and its tests.
//!
//! Tensor names follow llama.cpp's GGUF convention (`blk.N.attn_q.weight`) and are
//! shared by every architecture; `TensorGroup` names the optional groups.

use crate::error::{Error, Result};
use crate::kernels::activation::Activation;
use std::path::Path;

/// The architectures whose forward pass we implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Gemma2,
    Gemma3,
    Phi3,
}

/// Whether an optional group of tensors must be in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Loading fails, naming the missing tensor.
    Required,
    /// Used when present.
    Optional,
}

/// Groups of per-layer tensors that not every architecture has (GGUF names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorGroup {
    /// `attn_{q,k,v}.bias`
    QkvBias,
    /// `attn_{q,k}_norm.weight`: RMS norm of q and k per head.
    QkNorm,
    /// `post_attention_norm.weight`, `post_ffw_norm.weight`: norms after attention and MLP.
    PostNorms,
}

impl TensorGroup {
    /// The GGUF tensor names of the group in layer `layer`.
    pub fn gguf_names(self, layer: usize) -> Vec<String> {
        let names: &[&str] = match self {
            TensorGroup::QkvBias => &["attn_q.bias", "attn_k.bias", "attn_v.bias"],
            TensorGroup::QkNorm => &["attn_q_norm.weight", "attn_k_norm.weight"],
            TensorGroup::PostNorms => &["post_attention_norm.weight", "post_ffw_norm.weight"],
        };
        names.iter().map(|n| format!("blk.{layer}.{n}")).collect()
    }
}

/// One architecture's facts.
#[derive(Debug)]
pub struct ArchSpec {
    pub arch: Arch,
    /// GGUF `general.architecture` and Hugging Face `model_type`.
    pub name: &'static str,
    /// Optional tensor groups this architecture uses; groups not listed are absent (and
    /// ignored if a file has them).
    pub tensors: &'static [(TensorGroup, Presence)],
    pub activation: Activation,
    /// GGUF rope layout: rotate halves (NeoX / HF) rather than interleaved pairs (GGUF
    /// llama, whose q/k rows llama.cpp permutes). HF checkpoints always rotate halves.
    pub gguf_rope_neox: bool,
    /// Multiply embeddings by sqrt(d_model).
    pub scale_embeddings: bool,
    /// Reads `attention.sliding_window` (every `sliding_window_pattern`-th layer global,
    /// `sliding_pattern` where the file does not say).
    pub sliding_window: bool,
    pub sliding_pattern: usize,
    /// Reads `attn_logit_softcapping` and `final_logit_softcapping` (Gemma 2).
    pub softcap: bool,
    /// The 27B size (by its layer count) scales queries by 1/sqrt(d_model / heads)
    /// rather than 1/sqrt(head_dim), as llama.cpp does for Gemma 2 and 3.
    pub wide_query_scale_at_layers: Option<usize>,
    /// GGUF `ffn_up` holds gate and up stacked (no `ffn_gate`), as Phi 3 writes it.
    pub gguf_gate_in_up: bool,
    /// Loadable from a Hugging Face safetensors directory.
    pub safetensors: bool,
}

/// Every architecture affectbench runs.
pub const ARCHITECTURES: &[ArchSpec] = &[
    ArchSpec {
        arch: Arch::Llama,
        name: "llama",
        tensors: &[(TensorGroup::QkvBias, Presence::Optional)],
        activation: Activation::Silu,
        gguf_rope_neox: false,
        scale_embeddings: false,
        sliding_window: false,
        sliding_pattern: 1,
        softcap: false,
        wide_query_scale_at_layers: None,
        gguf_gate_in_up: false,
        safetensors: true,
    },
    ArchSpec {
        arch: Arch::Qwen2,
        name: "qwen2",
        tensors: &[(TensorGroup::QkvBias, Presence::Required)],
        activation: Activation::Silu,
        gguf_rope_neox: true,
        scale_embeddings: false,
        sliding_window: false,
        sliding_pattern: 1,
        softcap: false,
        wide_query_scale_at_layers: None,
        gguf_gate_in_up: false,
        safetensors: true,
    },
    ArchSpec {
        arch: Arch::Qwen3,
        name: "qwen3",
        tensors: &[
            (TensorGroup::QkvBias, Presence::Optional),
            (TensorGroup::QkNorm, Presence::Required),
        ],
        activation: Activation::Silu,
        gguf_rope_neox: true,
        scale_embeddings: false,
        sliding_window: false,
        sliding_pattern: 1,
        softcap: false,
        wide_query_scale_at_layers: None,
        gguf_gate_in_up: false,
        safetensors: true,
    },
    ArchSpec {
        arch: Arch::Gemma3,
        name: "gemma3",
        tensors: &[
            (TensorGroup::QkvBias, Presence::Optional),
            (TensorGroup::QkNorm, Presence::Required),
            (TensorGroup::PostNorms, Presence::Required),
        ],
        activation: Activation::GeluTanh,
        gguf_rope_neox: true,
        scale_embeddings: true,
        sliding_window: true,
        sliding_pattern: 6,
        softcap: false,
        wide_query_scale_at_layers: Some(62),
        gguf_gate_in_up: false,
        safetensors: false,
    },
    ArchSpec {
        arch: Arch::Gemma2,
        name: "gemma2",
        tensors: &[
            (TensorGroup::QkvBias, Presence::Optional),
            (TensorGroup::PostNorms, Presence::Required),
        ],
        activation: Activation::GeluTanh,
        gguf_rope_neox: true,
        scale_embeddings: true,
        sliding_window: true,
        sliding_pattern: 2,
        softcap: true,
        wide_query_scale_at_layers: Some(46),
        gguf_gate_in_up: false,
        safetensors: true,
    },
    ArchSpec {
        arch: Arch::Phi3,
        name: "phi3",
        tensors: &[],
        activation: Activation::Silu,
        gguf_rope_neox: true,
        scale_embeddings: false,
        // Phi 3 declares a window, but llama.cpp runs it without (its conversions do not
        // say which layers slide); so do we, with the context capped at the window
        // (`ModelConfig::cap_at_unapplied_window`), where transformers agrees.
        sliding_window: false,
        sliding_pattern: 1,
        softcap: false,
        wide_query_scale_at_layers: None,
        gguf_gate_in_up: true,
        safetensors: true,
    },
];

/// The names of every supported architecture, for messages.
pub fn supported_names() -> String {
    ARCHITECTURES
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The spec for an architecture name as files write it, if we run it.
pub fn find(name: &str) -> Option<&'static ArchSpec> {
    ARCHITECTURES.iter().find(|s| s.name == name)
}

impl ArchSpec {
    /// How this architecture uses a tensor group (None: it has none).
    pub fn presence(&self, group: TensorGroup) -> Option<Presence> {
        self.tensors
            .iter()
            .find(|(g, _)| *g == group)
            .map(|(_, p)| *p)
    }
}

impl Arch {
    /// The architecture `name` (read from `path`), or an error listing what is supported.
    pub fn parse(name: &str, path: &Path) -> Result<Self> {
        find(name)
            .map(|s| s.arch)
            .ok_or_else(|| Error::UnsupportedArchitecture {
                path: path.to_path_buf(),
                arch: name.to_string(),
                supported: supported_names(),
            })
    }

    pub fn spec(self) -> &'static ArchSpec {
        ARCHITECTURES
            .iter()
            .find(|s| s.arch == self)
            .expect("every Arch has a table entry")
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_architecture_has_exactly_one_entry_and_round_trips_its_name() {
        for arch in [
            Arch::Llama,
            Arch::Qwen2,
            Arch::Qwen3,
            Arch::Gemma2,
            Arch::Gemma3,
            Arch::Phi3,
        ] {
            assert_eq!(
                ARCHITECTURES.iter().filter(|s| s.arch == arch).count(),
                1,
                "{arch:?}"
            );
            assert_eq!(Arch::parse(arch.name(), Path::new("x")).unwrap(), arch);
        }
        let err = Arch::parse("mamba", Path::new("m.gguf"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mamba") && err.contains("m.gguf"), "{err}");
    }
}
