//! The validated model configuration, read from GGUF metadata or a Hugging Face
//! `config.json`. Missing keys and unknown architectures are errors naming the file.

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

pub use super::arch::Arch;
pub use crate::kernels::activation::Activation;

/// Everything the forward pass needs to know about a model's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub n_layer: usize,
    pub d_model: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rms_eps: f64,
    pub rope_base: f32,
    /// Gemma 3's sliding-window layers use a different rope base.
    pub rope_base_local: f32,
    /// Per rotary pair, the divisor of its frequency (Llama 3.1+'s `rope_freqs.weight`,
    /// or derived from a `llama3` / `linear` rope scaling): None means all 1.
    pub rope_freq_factors: Option<Vec<f32>>,
    /// Multiplies rope's cos and sin (`rope.scaling.attn_factor`, Phi 3's LongRoPE): 1
    /// where absent.
    pub rope_attn_factor: f32,
    /// Rotate halves (NeoX / HF style) rather than interleaved pairs (GGUF llama).
    pub rope_neox: bool,
    /// Gemma 3: every `sliding_pattern`-th layer is global, the others see `sliding_window`.
    pub sliding_window: Option<usize>,
    pub sliding_pattern: usize,
    pub activation: Activation,
    /// Gemma 2/3: multiply embeddings by sqrt(d_model).
    pub scale_embeddings: bool,
    /// Gemma 2: attention scores become c * tanh(score / c), and so do the final logits.
    pub attn_softcap: Option<f32>,
    pub final_softcap: Option<f32>,
    /// The query scale where it is not 1/sqrt(head_dim) (Gemma 2/3 27B).
    pub query_scale: Option<f32>,
}

impl ModelConfig {
    /// Reads the configuration from GGUF metadata.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch_name = g.architecture()?;
        let arch = Arch::parse(&arch_name, &g.path)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let d_model = g.usize(&key("embedding_length"))?;
        let n_head = g.usize(&key("attention.head_count"))?;
        if n_head == 0 || d_model == 0 {
            let (k, v) = if n_head == 0 {
                ("attention.head_count", n_head)
            } else {
                ("embedding_length", d_model)
            };
            return Err(Error::Metadata {
                path: g.path.clone(),
                key: key(k),
                problem: format!("is {v}; a model needs at least one"),
            });
        }
        let n_kv_head = g
            .opt_usize(&key("attention.head_count_kv"))?
            .unwrap_or(n_head);
        let head_dim = g
            .opt_usize(&key("attention.key_length"))?
            .unwrap_or(d_model / n_head);
        let vocab_size = g.strings("tokenizer.ggml.tokens")?.len();
        let spec = arch.spec();
        let cfg = ModelConfig {
            arch,
            n_layer: g.usize(&key("block_count"))?,
            d_model,
            n_head,
            n_kv_head,
            head_dim,
            vocab_size,
            context_length: g.usize(&key("context_length"))?,
            rms_eps: g.f32(&key("attention.layer_norm_rms_epsilon"))? as f64,
            rope_base: g.opt_f32(&key("rope.freq_base"))?.unwrap_or(10_000.0),
            rope_base_local: g.opt_f32(&key("rope.local_freq_base"))?.unwrap_or(10_000.0),
            rope_freq_factors: None,
            rope_attn_factor: g.opt_f32(&key("rope.scaling.attn_factor"))?.unwrap_or(1.0),
            rope_neox: spec.gguf_rope_neox,
            sliding_window: if spec.sliding_window {
                g.opt_usize(&key("attention.sliding_window"))?
            } else {
                None
            },
            sliding_pattern: g
                .opt_usize(&key("attention.sliding_window_pattern"))?
                .unwrap_or(spec.sliding_pattern),
            activation: spec.activation,
            scale_embeddings: spec.scale_embeddings,
            attn_softcap: if spec.softcap {
                g.opt_f32(&key("attn_logit_softcapping"))?
            } else {
                None
            },
            final_softcap: if spec.softcap {
                g.opt_f32(&key("final_logit_softcapping"))?
            } else {
                None
            },
            query_scale: None,
        };
        let mut cfg = cfg;
        if !spec.sliding_window {
            if let Some(window) = g.opt_usize(&key("attention.sliding_window"))? {
                cfg.cap_at_unapplied_window(window);
            }
        }
        if spec.wide_query_scale_at_layers == Some(cfg.n_layer) {
            cfg.query_scale = Some(1.0 / ((d_model / n_head) as f32).sqrt());
        }
        cfg.rope_freq_factors = match g.opt_string(&key("rope.scaling.type"))?.as_deref() {
            None | Some("none") => None,
            Some("linear") => {
                let factor = g.f32(&key("rope.scaling.factor"))?;
                Some(vec![factor; head_dim / 2])
            }
            Some(other) => {
                return Err(Error::Metadata {
                    path: g.path.clone(),
                    key: key("rope.scaling.type"),
                    problem: format!("is '{other}'; supported: none, linear (and Llama 3's rope_freqs.weight tensor). Run the model with its original context scaling, or open an issue with the file's name"),
                })
            }
        };
        cfg.validate(&g.path)?;
        cfg.check_against_tensors(g, &arch_name)?;
        Ok(cfg)
    }

    /// Checks the sizes the metadata claims against the tensors the file holds, before
    /// anything is allocated from them: a `block_count` of 2^32 - 1 or a `key_length` of
    /// 2^40 asked for terabytes and aborted the process, and an embedding table with
    /// fewer rows than the vocabulary loaded, then panicked at the first token past it.
    fn check_against_tensors(&self, g: &GgufFile, arch_name: &str) -> Result<()> {
        let bad = |key: &str, problem: String| Error::Metadata {
            path: g.path.clone(),
            key: key.to_string(),
            problem,
        };
        let tensors = g.tensor_entries();
        let blocks = tensors
            .keys()
            .filter_map(|name| {
                name.strip_prefix("blk.")?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .collect::<std::collections::BTreeSet<usize>>();
        if let Some(missing) = (0..self.n_layer).find(|i| !blocks.contains(i)) {
            return Err(bad(
                &format!("{arch_name}.block_count"),
                format!(
                    "is {}, but the file holds no tensors for block {missing} (it has {} \
                     blocks); the metadata does not describe these weights",
                    self.n_layer,
                    blocks.len()
                ),
            ));
        }
        // The query projection's rows are the heads times the head dimension (a fused
        // projection adds the key and value heads).
        let q_rows = match (
            tensors.get("blk.0.attn_q.weight"),
            tensors.get("blk.0.attn_qkv.weight"),
        ) {
            (Some(q), _) => q.shape.first().map(|&r| (r, self.n_head)),
            (None, Some(qkv)) => qkv
                .shape
                .first()
                .map(|&r| (r, self.n_head + 2 * self.n_kv_head)),
            (None, None) => None,
        };
        if let Some((rows, heads)) = q_rows {
            if heads.checked_mul(self.head_dim) != Some(rows) {
                return Err(bad(
                    &format!("{arch_name}.attention.key_length"),
                    format!(
                        "gives a head dimension of {}, but block 0's query projection has \
                         {rows} rows for {heads} heads",
                        self.head_dim
                    ),
                ));
            }
        }
        if let Some(e) = tensors.get("token_embd.weight") {
            let rows = e.shape.first().copied().unwrap_or(0);
            if rows < self.vocab_size {
                return Err(Error::Tensor {
                    path: g.path.clone(),
                    tensor: "token_embd.weight".into(),
                    message: format!(
                        "has {rows} rows for a vocabulary of {} tokens \
                         (tokenizer.ggml.tokens): every token needs a row",
                        self.vocab_size
                    ),
                });
            }
            if e.shape.get(1).is_some_and(|&cols| cols != self.d_model) {
                return Err(bad(
                    &format!("{arch_name}.embedding_length"),
                    format!(
                        "is {}, but token_embd.weight has {} columns",
                        self.d_model, e.shape[1]
                    ),
                ));
            }
        }
        if let Some(e) = tensors.get("output.weight") {
            let rows = e.shape.first().copied().unwrap_or(0);
            if rows < self.vocab_size {
                return Err(Error::Tensor {
                    path: g.path.clone(),
                    tensor: "output.weight".into(),
                    message: format!(
                        "has {rows} rows for a vocabulary of {} tokens: every token needs a \
                         logit",
                        self.vocab_size
                    ),
                });
            }
        }
        Ok(())
    }

    pub(crate) fn validate(&self, path: &std::path::Path) -> Result<()> {
        let bad = |key: &str, problem: String| Error::Metadata {
            path: path.to_path_buf(),
            key: key.into(),
            problem,
        };
        if self.n_head == 0 || self.n_kv_head == 0 || !self.n_head.is_multiple_of(self.n_kv_head) {
            return Err(bad(
                "attention.head_count_kv",
                format!(
                    "must divide head_count ({} vs {})",
                    self.n_kv_head, self.n_head
                ),
            ));
        }
        if !(self.rms_eps.is_finite() && self.rms_eps > 0.0) {
            return Err(bad(
                "attention.layer_norm_rms_epsilon",
                format!("is {}; it must be a small positive number", self.rms_eps),
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return Err(bad(
                "attention.key_length",
                format!("must be even and positive, got {}", self.head_dim),
            ));
        }
        for (key, cap) in [
            ("attn_logit_softcapping", self.attn_softcap),
            ("final_logit_softcapping", self.final_softcap),
        ] {
            if let Some(c) = cap.filter(|c| !(c.is_finite() && *c > 0.0)) {
                return Err(bad(
                    key,
                    format!("is {c}; a soft cap must be a positive number"),
                ));
            }
        }
        if !(self.rope_attn_factor.is_finite() && self.rope_attn_factor > 0.0) {
            return Err(bad(
                "rope.scaling.attn_factor",
                format!("is {}; it must be a positive number", self.rope_attn_factor),
            ));
        }
        if let Some(f) = &self.rope_freq_factors {
            if f.len() != self.head_dim / 2 {
                return Err(bad(
                    "rope_freqs.weight",
                    format!(
                        "holds {} factors; a head dim of {} needs {}",
                        f.len(),
                        self.head_dim,
                        self.head_dim / 2
                    ),
                ));
            }
            if let Some(x) = f.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
                return Err(bad(
                    "rope_freqs.weight",
                    format!("holds {x}; every factor must be a positive number"),
                ));
            }
        }
        Ok(())
    }

    /// q . k is multiplied by this before the softmax.
    pub fn attention_scale(&self) -> f32 {
        self.query_scale
            .unwrap_or(1.0 / (self.head_dim as f32).sqrt())
    }

    /// A sliding window the file declares for an architecture that attends to the whole
    /// context (Mistral's, Phi 3's): llama.cpp ignores it (it disables Phi 3's SWA) and
    /// transformers applies it, so the two agree only on sequences within the window.
    /// The context is capped there, so no sequence is computed where they would differ.
    pub fn cap_at_unapplied_window(&mut self, window: usize) {
        if window > 0 {
            self.context_length = self.context_length.min(window);
        }
    }

    /// Whether layer `i` uses the sliding window (Gemma 2/3's local layers).
    pub fn is_sliding(&self, layer: usize) -> bool {
        self.sliding_window.is_some() && !(layer + 1).is_multiple_of(self.sliding_pattern)
    }
}
