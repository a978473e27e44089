//! The decoder-only transformer forward pass for llama, qwen2 and gemma3, on candle ops.
//!
//! Unlike candle-transformers' quantized models, the KV cache is passed in (and can be
//! forked), logits are computed only at the positions asked for, and a batch of
//! sequences of equal length runs in one pass.

use super::config::{Activation, ModelConfig};
use super::kv_cache::KvCache;
use super::linear::Linear;
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor, D};

/// One decoder layer's weights.
#[derive(Debug, Clone)]
pub struct Layer {
    pub attn_norm: Tensor,
    /// q, k and v stacked, or separately when their formats differ.
    pub qkv: QkvProj,
    pub qkv_bias: Option<(Tensor, Tensor, Tensor)>,
    pub o_proj: Linear,
    pub q_norm: Option<Tensor>,
    pub k_norm: Option<Tensor>,
    pub post_attn_norm: Option<Tensor>,
    pub ffn_norm: Tensor,
    pub gate_up: GateUp,
    pub down: Linear,
    pub post_ffn_norm: Option<Tensor>,
}

#[derive(Debug, Clone)]
pub enum QkvProj {
    Fused(Linear),
    Separate(Linear, Linear, Linear),
}

#[derive(Debug, Clone)]
pub enum GateUp {
    Fused(Linear),
    Separate(Linear, Linear),
}

/// Where logits are wanted, per sequence in the batch.
#[derive(Debug, Clone, PartialEq)]
pub enum LogitsAt {
    /// The last new position only (generation).
    Last,
    /// Every new position.
    All,
    /// These indices into the new tokens (e.g. each answer position).
    Positions(Vec<usize>),
}

/// Embedding table: rows are looked up by token id.
#[derive(Debug, Clone)]
pub enum Embeddings {
    /// A dense (vocab, d) table.
    Dense(Tensor),
    /// Rows dequantised on demand from the packed matrix shared with a tied output layer.
    Packed(std::sync::Arc<crate::kernels::packed::PackedMatrix>),
}

/// The weights and configuration of a loaded model.
#[derive(Debug, Clone)]
pub struct Transformer {
    pub config: ModelConfig,
    pub embeddings: Embeddings,
    pub layers: Vec<Layer>,
    pub final_norm: Tensor,
    pub output: Linear,
    pub device: Device,
    rope_global: (Tensor, Tensor),
    rope_local: (Tensor, Tensor),
}

/// Positions for which rope tables are precomputed (capped: long contexts grow on demand
/// would complicate the cache; this covers every prompt the studies use).
const MAX_ROPE_POSITIONS: usize = 8192;

impl Transformer {
    pub fn new(
        config: ModelConfig,
        embeddings: Embeddings,
        layers: Vec<Layer>,
        final_norm: Tensor,
        output: Linear,
        device: Device,
    ) -> Result<Self> {
        let positions = config.context_length.min(MAX_ROPE_POSITIONS);
        let rope_global = rope_tables(config.head_dim, config.rope_base, positions, &device)?;
        let rope_local = rope_tables(config.head_dim, config.rope_base_local, positions, &device)?;
        Ok(Self { config, embeddings, layers, final_norm, output, device, rope_global, rope_local })
    }

    /// The longest sequence (cached + new) this model accepts.
    /// Whether every projection is batch-invariant (see `Linear::batch_invariant`): only
    /// then may rows of different trials share a forward pass without changing results.
    pub fn batch_invariant(&self) -> bool {
        let qkv = |q: &QkvProj| match q {
            QkvProj::Fused(l) => l.batch_invariant(),
            QkvProj::Separate(a, b, c) => a.batch_invariant() && b.batch_invariant() && c.batch_invariant(),
        };
        let gate_up = |g: &GateUp| match g {
            GateUp::Fused(l) => l.batch_invariant(),
            GateUp::Separate(a, b) => a.batch_invariant() && b.batch_invariant(),
        };
        self.output.batch_invariant() && self.layers.iter().all(|l| qkv(&l.qkv) && gate_up(&l.gate_up) && l.o_proj.batch_invariant() && l.down.batch_invariant())
    }

    pub fn max_positions(&self) -> usize {
        self.config.context_length.min(MAX_ROPE_POSITIONS)
    }

    /// Runs `tokens` (one equal-length row per sequence) after what `cache` holds and
    /// returns logits shaped (batch, positions, vocab) at the requested positions.
    pub fn forward(&self, tokens: &[Vec<u32>], cache: &mut KvCache, at: &LogitsAt) -> Result<Tensor> {
        let b = tokens.len();
        let s = tokens.first().map(|t| t.len()).unwrap_or(0);
        if b == 0 || s == 0 || tokens.iter().any(|t| t.len() != s) {
            candle_core::bail!("forward needs a non-empty batch of equal-length sequences");
        }
        if let Some(cb) = cache.batch() {
            if cb != b {
                candle_core::bail!("cache holds {cb} sequences but {b} were given");
            }
        }
        let offset = cache.len();
        if offset + s > self.max_positions() {
            candle_core::bail!(
                "sequence of {} positions exceeds the context of {}",
                offset + s,
                self.max_positions()
            );
        }
        let cfg = &self.config;
        let mut x = self.embed(tokens)?;
        if cfg.scale_embeddings {
            x = (x * (cfg.d_model as f64).sqrt())?;
        }
        for (i, layer) in self.layers.iter().enumerate() {
            x = self.layer_forward(i, layer, &x, cache, offset)?;
        }
        cache.advance(s, b);
        let x = match at {
            LogitsAt::Last => x.narrow(1, s - 1, 1)?,
            LogitsAt::All => x,
            LogitsAt::Positions(p) => {
                if let Some(bad) = p.iter().find(|&&i| i >= s) {
                    candle_core::bail!("logit position {bad} is past the {s} new tokens");
                }
                let idx = Tensor::new(p.iter().map(|&i| i as u32).collect::<Vec<_>>(), &self.device)?;
                x.index_select(&idx, 1)?
            }
        };
        let x = rms_norm(&x, &self.final_norm, cfg.rms_eps)?;
        self.output.forward(&x)
    }

    fn embed(&self, tokens: &[Vec<u32>]) -> Result<Tensor> {
        let (b, s) = (tokens.len(), tokens[0].len());
        let flat: Vec<u32> = tokens.iter().flatten().copied().collect();
        if let Some(&bad) = flat.iter().find(|&&t| t as usize >= self.config.vocab_size) {
            candle_core::bail!("token id {bad} is outside the vocabulary of {}", self.config.vocab_size);
        }
        let d = self.config.d_model;
        match &self.embeddings {
            Embeddings::Dense(table) => {
                let ids = Tensor::new(flat, &self.device)?;
                table.index_select(&ids, 0)?.to_dtype(DType::F32)?.reshape((b, s, d))
            }
            Embeddings::Packed(p) => {
                let rows: Vec<f32> = flat.iter().flat_map(|&t| p.dequantize_row(t as usize)).collect();
                Tensor::from_vec(rows, (b, s, d), &self.device)
            }
        }
    }

    fn layer_forward(&self, idx: usize, l: &Layer, x: &Tensor, cache: &mut KvCache, offset: usize) -> Result<Tensor> {
        let cfg = &self.config;
        let (b, s, _) = x.dims3()?;
        let (nh, nkv, hd) = (cfg.n_head, cfg.n_kv_head, cfg.head_dim);
        let h = rms_norm(x, &l.attn_norm, cfg.rms_eps)?;
        let (mut q, mut k, mut v) = match &l.qkv {
            QkvProj::Fused(w) => {
                let qkv = w.forward(&h)?;
                (qkv.narrow(2, 0, nh * hd)?, qkv.narrow(2, nh * hd, nkv * hd)?, qkv.narrow(2, (nh + nkv) * hd, nkv * hd)?)
            }
            QkvProj::Separate(wq, wk, wv) => (wq.forward(&h)?, wk.forward(&h)?, wv.forward(&h)?),
        };
        if let Some((bq, bk, bv)) = &l.qkv_bias {
            q = q.broadcast_add(bq)?;
            k = k.broadcast_add(bk)?;
            v = v.broadcast_add(bv)?;
        }
        let mut q = q.reshape((b, s, nh, hd))?.transpose(1, 2)?.contiguous()?;
        let mut k = k.reshape((b, s, nkv, hd))?.transpose(1, 2)?.contiguous()?;
        let v = v.reshape((b, s, nkv, hd))?.transpose(1, 2)?.contiguous()?;
        if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
            q = rms_norm(&q, qn, cfg.rms_eps)?;
            k = rms_norm(&k, kn, cfg.rms_eps)?;
        }
        let sliding = cfg.is_sliding(idx);
        let (cos, sin) = if sliding { &self.rope_local } else { &self.rope_global };
        let (cos, sin) = (cos.narrow(0, offset, s)?, sin.narrow(0, offset, s)?);
        let rope = if cfg.rope_neox { candle_nn::rotary_emb::rope } else { candle_nn::rotary_emb::rope_i };
        let q = rope(&q, &cos, &sin)?;
        let k = rope(&k, &cos, &sin)?;
        let segments = cache.append(idx, k, v)?;
        let total = offset + s;

        // Grouped-query attention without copying keys: fold the query heads that share a
        // kv head into the sequence axis, (b, nkv, group*s, hd). Attention runs segment by
        // segment (scores joined for one softmax), so shared prefixes are never copied.
        let group = nh / nkv;
        let q = (q.reshape((b, nkv, group * s, hd))? * (1.0 / (hd as f64).sqrt()))?;
        let mut parts = Vec::with_capacity(segments.len());
        for seg in segments {
            let (sk, _) = seg.views()?;
            parts.push(batched_matmul(&q, &sk.t()?, seg.batch())?); // (b, nkv, group*s, len)
        }
        let mut scores = if parts.len() == 1 { parts.pop().expect("one part") } else { Tensor::cat(&parts, 3)? };
        let window = if sliding { cfg.sliding_window } else { None };
        if s > 1 || window.is_some_and(|w| total > w) {
            let mask = attention_mask(s, offset, window, &self.device)?; // (s, total)
            let scores4 = scores.reshape((b, nkv, group, s, total))?;
            scores = scores4.broadcast_add(&mask)?.reshape((b, nkv, group * s, total))?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let mut attn: Option<Tensor> = None;
        let mut start = 0;
        for seg in segments {
            let (_, sv) = seg.views()?;
            let p = probs.narrow(3, start, seg.len)?.contiguous()?;
            let part = batched_matmul(&p, &sv, seg.batch())?; // (b, nkv, group*s, hd)
            attn = Some(match attn {
                None => part,
                Some(acc) => (acc + part)?,
            });
            start += seg.len;
        }
        let attn = attn.expect("at least one segment");
        let attn = attn.reshape((b, nh, s, hd))?.transpose(1, 2)?.reshape((b, s, nh * hd))?;
        let mut out = l.o_proj.forward(&attn)?;
        if let Some(n) = &l.post_attn_norm {
            out = rms_norm(&out, n, cfg.rms_eps)?;
        }
        let x = (x + out)?;

        let h = rms_norm(&x, &l.ffn_norm, cfg.rms_eps)?;
        let (gate, up) = match &l.gate_up {
            GateUp::Fused(w) => {
                let gu = w.forward(&h)?;
                let f = gu.dim(D::Minus1)? / 2;
                (gu.narrow(2, 0, f)?, gu.narrow(2, f, f)?)
            }
            GateUp::Separate(g, u) => (g.forward(&h)?, u.forward(&h)?),
        };
        let act = match cfg.activation {
            Activation::Silu => candle_nn::ops::silu(&gate)?,
            Activation::GeluTanh => gate.gelu()?,
        };
        let mut out = l.down.forward(&(act * up)?)?;
        if let Some(n) = &l.post_ffn_norm {
            out = rms_norm(&out, n, cfg.rms_eps)?;
        }
        x + out
    }

    /// Convenience: logits of the last position of a single sequence, as a Vec.
    pub fn last_logits(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let logits = self.forward(&[tokens.to_vec()], cache, &LogitsAt::Last)?;
        logits.i((0, 0))?.to_dtype(DType::F32)?.to_vec1()
    }

    /// Logits of the last position of every row of an equal-length batch, one Vec per row.
    pub fn last_logits_rows(&self, rows: &[Vec<u32>], cache: &mut KvCache) -> Result<Vec<Vec<f32>>> {
        self.forward(rows, cache, &LogitsAt::Last)?.squeeze(1)?.to_dtype(DType::F32)?.to_vec2()
    }
}

/// `x (b, h, m, k) @ y (yb, h, k, n)` where `y` may be a batch-1 tensor shared by all b
/// rows (a shared prefix, never copied). Each row is multiplied on its own, with the
/// same shapes as when that sequence runs alone: the GEMM picks its kernel by shape, and
/// folding the rows into one (b*m)-row product changed the last bits of the attention
/// scores (measured: batched option scores and lockstep samples differed from the
/// single-sequence ones). Batch invariance is worth the extra reads of the shared keys.
fn batched_matmul(x: &Tensor, y: &Tensor, y_batch: usize) -> Result<Tensor> {
    let b = x.dims4()?.0;
    if y_batch == b {
        return x.matmul(y);
    }
    let rows = (0..b).map(|i| x.narrow(0, i, 1)?.matmul(y)).collect::<Result<Vec<_>>>()?;
    Tensor::cat(&rows, 0)
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)
}

/// cos/sin tables shaped (positions, head_dim / 2).
fn rope_tables(head_dim: usize, base: f32, positions: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let inv: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1.0 / base.powf(i as f32 / head_dim as f32))
        .collect();
    let n = inv.len();
    let inv = Tensor::from_vec(inv, (1, n), device)?;
    let pos = Tensor::arange(0u32, positions as u32, device)?.to_dtype(DType::F32)?.reshape((positions, 1))?;
    let freqs = pos.matmul(&inv)?;
    Ok((freqs.cos()?, freqs.sin()?))
}

/// Additive attention mask for `s` new queries after `offset` cached positions:
///
/// ```text
///            keys 0 .. offset+s
///   query i  [ 0  0  0 ... 0 -inf -inf ]   key j visible iff j <= offset + i
///                                          and, with a window w, offset + i - j < w
/// ```
fn attention_mask(s: usize, offset: usize, window: Option<usize>, device: &Device) -> Result<Tensor> {
    let total = offset + s;
    let mut m = vec![0f32; s * total];
    for i in 0..s {
        let qpos = offset + i;
        for j in 0..total {
            let future = j > qpos;
            let too_far = window.is_some_and(|w| qpos - j.min(qpos) >= w);
            if future || too_far {
                m[i * total + j] = f32::NEG_INFINITY;
            }
        }
    }
    Tensor::from_vec(m, (s, total), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_is_causal_with_offset() {
        let m = attention_mask(2, 3, None, &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(m[0], vec![0.0, 0.0, 0.0, 0.0, f32::NEG_INFINITY]);
        assert_eq!(m[1], vec![0.0; 5]);
    }

    #[test]
    fn mask_respects_the_sliding_window() {
        let m = attention_mask(3, 0, Some(2), &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        let ninf = f32::NEG_INFINITY;
        assert_eq!(m[2], vec![ninf, 0.0, 0.0]);
        assert_eq!(m[1], vec![0.0, 0.0, ninf]);
    }
}
