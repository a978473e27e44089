//! The decoder-only transformer forward pass for every architecture in `arch`, on candle
//! ops.
//!
//! Unlike candle-transformers' quantized models, the KV cache is passed in (and can be
//! forked), logits are computed only at the positions asked for, and a batch of
//! sequences of equal length, or a ragged batch of rows each with its own cache, runs in
//! one pass.

use super::config::{Activation, ModelConfig};
use super::kv_cache::KvCache;
use super::linear::Linear;
use super::residual::Keep;
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor, D};

/// One row's captured residual stream: a d_model vector per captured block.
pub type RowStates = Vec<Vec<f32>>;

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
    /// The same tables as flat (positions x head_dim/2) vectors, for the fused attention.
    rope_global_flat: (Vec<f32>, Vec<f32>),
    rope_local_flat: (Vec<f32>, Vec<f32>),
    /// Which implementation of attention and the gated activation runs (see `OpPath`).
    pub op_path: OpPath,
    /// Vectors added to the residual stream (see `residual::Steering`); empty for an
    /// unsteered model, whose arithmetic is then untouched.
    pub(crate) steering: Vec<super::residual::Steering>,
}

/// How attention and the gated activation are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpPath {
    /// Our CPU functions: `kernels::attention` (one fused function per (sequence, kv
    /// head, query block)) and `kernels::activation` (act(gate) * up in one pass), both
    /// spread over the threads. The default on CPU (head_dim 16, 32, 64, 128 or 256;
    /// others use the reference).
    Fused,
    /// Candle tensor ops (the reference, and the path on GPUs); `--ops reference`
    /// selects it on CPU.
    Reference,
}

impl OpPath {
    pub fn name(self) -> &'static str {
        match self {
            OpPath::Fused => "fused",
            OpPath::Reference => "reference",
        }
    }
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
        preferred_ops: OpPath,
    ) -> Result<Self> {
        let positions = config.context_length.min(MAX_ROPE_POSITIONS);
        let factors = config.rope_freq_factors.as_deref();
        let rope_global = rope_tables(
            config.head_dim,
            config.rope_base,
            factors,
            config.rope_attn_factor,
            positions,
            &device,
        )?;
        let rope_local = rope_tables(
            config.head_dim,
            config.rope_base_local,
            factors,
            config.rope_attn_factor,
            positions,
            &device,
        )?;
        let flat = |(c, s): &(Tensor, Tensor)| -> Result<(Vec<f32>, Vec<f32>)> {
            Ok((c.flatten_all()?.to_vec1()?, s.flatten_all()?.to_vec1()?))
        };
        let (rope_global_flat, rope_local_flat) = (flat(&rope_global)?, flat(&rope_local)?);
        let fused_fits = crate::kernels::attention::HEAD_DIMS.contains(&config.head_dim);
        // The fused kernels are CPU functions compiled for a few head dims; elsewhere the
        // reference runs whatever was preferred.
        let op_path = if preferred_ops == OpPath::Fused && device.is_cpu() && fused_fits {
            OpPath::Fused
        } else {
            OpPath::Reference
        };
        Ok(Self {
            config,
            embeddings,
            layers,
            final_norm,
            output,
            device,
            rope_global,
            rope_local,
            rope_global_flat,
            rope_local_flat,
            op_path,
            steering: Vec::new(),
        })
    }

    /// Whether every projection is batch-invariant (see `Linear::batch_invariant`): only
    /// then may rows of different trials share a forward pass without changing results.
    pub fn batch_invariant(&self) -> bool {
        let qkv = |q: &QkvProj| match q {
            QkvProj::Fused(l) => l.batch_invariant(),
            QkvProj::Separate(a, b, c) => {
                a.batch_invariant() && b.batch_invariant() && c.batch_invariant()
            }
        };
        let gate_up = |g: &GateUp| match g {
            GateUp::Fused(l) => l.batch_invariant(),
            GateUp::Separate(a, b) => a.batch_invariant() && b.batch_invariant(),
        };
        self.output.batch_invariant()
            && self.layers.iter().all(|l| {
                qkv(&l.qkv)
                    && gate_up(&l.gate_up)
                    && l.o_proj.batch_invariant()
                    && l.down.batch_invariant()
            })
    }

    /// The kernels the output projection runs on (every matrix of a model loads alike,
    /// but for what the loader could not pack): what run.json records as `weights`.
    pub fn weights_kind(&self) -> super::Kernels {
        match &self.output {
            Linear::Packed(..) => super::Kernels::Packed,
            Linear::Quantized(_) => super::Kernels::Candle,
            Linear::Dense(t) if t.dtype() == DType::F16 => super::Kernels::DenseF16,
            Linear::Dense(_) => super::Kernels::DenseF32,
        }
    }

    /// Whether any projection runs on the packed int8 kernels.
    pub fn uses_packed_weights(&self) -> bool {
        matches!(self.output, Linear::Packed(..))
            || self
                .layers
                .iter()
                .any(|l| matches!(l.down, Linear::Packed(..)))
    }

    /// The rope cos/sin tables, (positions, head_dim / 2), of a sliding or a global layer.
    pub(super) fn rope_for(&self, sliding: bool) -> &(Tensor, Tensor) {
        if sliding {
            &self.rope_local
        } else {
            &self.rope_global
        }
    }

    /// The longest sequence (cached + new) this model accepts.
    pub fn max_positions(&self) -> usize {
        self.config.context_length.min(MAX_ROPE_POSITIONS)
    }

    /// Runs `tokens` (one equal-length row per sequence) after what `cache` holds and
    /// returns logits shaped (batch, positions, vocab) at the requested positions.
    pub fn forward(
        &self,
        tokens: &[Vec<u32>],
        cache: &mut KvCache,
        at: &LogitsAt,
    ) -> Result<Tensor> {
        Ok(self.forward_capturing(tokens, cache, at, &[])?.0)
    }

    /// `forward`, also returning the residual stream after each of `capture` blocks
    /// (0: the embeddings; see `residual`) at every new position, each (b, s, d) f32.
    /// Capturing copies the stream and changes no arithmetic: the logits are the same
    /// bits as `forward`'s (tested).
    pub fn forward_capturing(
        &self,
        tokens: &[Vec<u32>],
        cache: &mut KvCache,
        at: &LogitsAt,
        capture: &[usize],
    ) -> Result<(Tensor, Vec<Tensor>)> {
        self.forward_keeping(tokens, cache, at, capture, Keep::Every)
    }

    /// `forward_capturing`, each capture reduced as `keep` says as soon as its block is
    /// done (the same values as reducing `forward_capturing`'s afterwards).
    pub fn forward_keeping(
        &self,
        tokens: &[Vec<u32>],
        cache: &mut KvCache,
        at: &LogitsAt,
        capture: &[usize],
        keep: Keep,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        self.check_capture(capture)?;
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
        let mut taps = vec![None; capture.len()];
        let mut x = self.after_block(0, self.embed(tokens)?, capture, &mut taps, keep)?;
        for (i, layer) in self.layers.iter().enumerate() {
            // A stop asked for by a signal ends the pass between layers (the caller
            // discards it), so a long prefill is not computed to the end first.
            crate::interrupt::stop_point()?;
            x = self.layer_forward(i, layer, &x, cache, offset)?;
            x = self.after_block(i + 1, x, capture, &mut taps, keep)?;
        }
        cache.advance(s, b);
        let x = match at {
            LogitsAt::Last => x.narrow(1, s - 1, 1)?,
            LogitsAt::All => x,
            LogitsAt::Positions(p) => {
                if let Some(bad) = p.iter().find(|&&i| i >= s) {
                    candle_core::bail!("logit position {bad} is past the {s} new tokens");
                }
                let idx = Tensor::new(
                    p.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                    &self.device,
                )?;
                x.index_select(&idx, 1)?
            }
        };
        let x = self.rms_norm(&x, &self.final_norm)?;
        Ok((self.logits(&x)?, taps.into_iter().flatten().collect()))
    }

    /// The output projection, soft-capped where the architecture asks for it.
    pub(super) fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let logits = self.output.forward(x)?;
        match self.config.final_softcap {
            Some(cap) => (logits.to_dtype(DType::F32)? / cap as f64)?.tanh()? * cap as f64,
            None => Ok(logits),
        }
    }

    /// Extends each cache with its own row of tokens (rows may differ in length and in
    /// cached length) in one pass, and returns each row's last-position logits. Each
    /// row's logits and cache are bit-identical to `last_logits(row, cache)` alone when
    /// the model is `batch_invariant` (the projections see one long matrix whose rows
    /// are computed independently; attention runs row by row). Callers check that.
    pub fn last_logits_ragged(
        &self,
        rows: &[Vec<u32>],
        caches: &mut [KvCache],
    ) -> Result<Vec<Vec<f32>>> {
        Ok(self.last_logits_ragged_capturing(rows, caches, &[])?.0)
    }

    /// `last_logits_ragged`, also returning each row's residual stream at its last
    /// position after each of `capture` blocks: `states[row][k]` is the d-vector after
    /// block `capture[k]`. The logits are the same bits as without capture.
    pub fn last_logits_ragged_capturing(
        &self,
        rows: &[Vec<u32>],
        caches: &mut [KvCache],
        capture: &[usize],
    ) -> Result<(Vec<Vec<f32>>, Vec<RowStates>)> {
        self.check_capture(capture)?;
        if rows.is_empty() || rows.len() != caches.len() || rows.iter().any(|r| r.is_empty()) {
            candle_core::bail!("last_logits_ragged needs one non-empty row per cache");
        }
        for (row, cache) in rows.iter().zip(caches.iter()) {
            if cache.batch().is_some_and(|b| b != 1) {
                candle_core::bail!("last_logits_ragged needs batch-1 caches");
            }
            if cache.len() + row.len() > self.max_positions() {
                candle_core::bail!(
                    "sequence of {} positions exceeds the context of {}",
                    cache.len() + row.len(),
                    self.max_positions()
                );
            }
        }
        let mut spans = Vec::with_capacity(rows.len());
        let mut total = 0;
        for r in rows {
            spans.push((total, r.len()));
            total += r.len();
        }
        let flat: Vec<u32> = rows.iter().flatten().copied().collect();
        let last = Tensor::new(
            spans
                .iter()
                .map(|&(start, len)| (start + len - 1) as u32)
                .collect::<Vec<_>>(),
            &self.device,
        )?;
        let keep = Keep::Positions(&last);
        let mut taps = vec![None; capture.len()];
        let mut x = self.after_block(0, self.embed(&[flat])?, capture, &mut taps, keep)?;
        for (i, layer) in self.layers.iter().enumerate() {
            crate::interrupt::stop_point()?;
            x = self.layer_forward_ragged(i, layer, &x, &spans, caches)?;
            x = self.after_block(i + 1, x, capture, &mut taps, keep)?;
        }
        for (&(_, len), cache) in spans.iter().zip(caches.iter_mut()) {
            cache.advance(len, 1);
        }
        let mut states = vec![Vec::with_capacity(capture.len()); rows.len()];
        for tap in taps.into_iter().flatten() {
            let at_last = tap.squeeze(0)?.to_vec2::<f32>()?;
            for (row, v) in states.iter_mut().zip(at_last) {
                row.push(v);
            }
        }
        let x = self.rms_norm(&x.index_select(&last, 1)?, &self.final_norm)?;
        let logits = self
            .logits(&x)?
            .squeeze(0)?
            .to_dtype(DType::F32)?
            .to_vec2()?;
        Ok((logits, states))
    }

    /// Token embeddings (b, s, d), scaled by sqrt(d) where the architecture asks for it.
    pub(super) fn embed(&self, tokens: &[Vec<u32>]) -> Result<Tensor> {
        let x = self.embed_rows(tokens)?;
        if self.config.scale_embeddings {
            x * (self.config.d_model as f64).sqrt()
        } else {
            Ok(x)
        }
    }

    fn embed_rows(&self, tokens: &[Vec<u32>]) -> Result<Tensor> {
        let (b, s) = (tokens.len(), tokens[0].len());
        let flat: Vec<u32> = tokens.iter().flatten().copied().collect();
        if let Some(&bad) = flat.iter().find(|&&t| t as usize >= self.config.vocab_size) {
            candle_core::bail!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.vocab_size
            );
        }
        let d = self.config.d_model;
        match &self.embeddings {
            Embeddings::Dense(table) => {
                let ids = Tensor::new(flat, &self.device)?;
                table
                    .index_select(&ids, 0)?
                    .to_dtype(DType::F32)?
                    .reshape((b, s, d))
            }
            Embeddings::Packed(p) => {
                let rows: Vec<f32> = flat
                    .iter()
                    .flat_map(|&t| p.dequantize_row(t as usize))
                    .collect();
                Tensor::from_vec(rows, (b, s, d), &self.device)
            }
        }
    }

    fn layer_forward(
        &self,
        idx: usize,
        l: &Layer,
        x: &Tensor,
        cache: &mut KvCache,
        offset: usize,
    ) -> Result<Tensor> {
        let (q, k, v) = self.project_qkv(l, x)?;
        let attn = self.attend(idx, l, &q, &k, &v, cache, offset)?;
        self.finish_layer(l, x, &attn)
    }

    /// One layer over a ragged batch: `x` is (1, total, d), the rows' new tokens laid end
    /// to end, `spans[i]` = (start, len) of row i, each row with its own cache. Every
    /// step but attention works position by position, so it runs on all rows at once;
    /// attention runs row by row through the same `attend` as a lone sequence.
    fn layer_forward_ragged(
        &self,
        idx: usize,
        l: &Layer,
        x: &Tensor,
        spans: &[(usize, usize)],
        caches: &mut [KvCache],
    ) -> Result<Tensor> {
        let (q, k, v) = self.project_qkv(l, x)?;
        let parts = spans
            .iter()
            .zip(caches.iter_mut())
            .map(|(&(start, len), cache)| {
                let offset = cache.len();
                self.attend(
                    idx,
                    l,
                    &q.narrow(1, start, len)?,
                    &k.narrow(1, start, len)?,
                    &v.narrow(1, start, len)?,
                    cache,
                    offset,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let attn = if parts.len() == 1 {
            parts.into_iter().next().expect("one row")
        } else {
            Tensor::cat(&parts, 1)?
        };
        self.finish_layer(l, x, &attn)
    }

    /// Normalised input projected to queries, keys and values, each (b, s, heads*hd).
    pub(super) fn project_qkv(&self, l: &Layer, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let cfg = &self.config;
        let (nh, nkv, hd) = (cfg.n_head, cfg.n_kv_head, cfg.head_dim);
        let h = self.rms_norm(x, &l.attn_norm)?;
        let (mut q, mut k, mut v) = match &l.qkv {
            QkvProj::Fused(w) => {
                let qkv = w.forward(&h)?;
                (
                    qkv.narrow(2, 0, nh * hd)?,
                    qkv.narrow(2, nh * hd, nkv * hd)?,
                    qkv.narrow(2, (nh + nkv) * hd, nkv * hd)?,
                )
            }
            QkvProj::Separate(wq, wk, wv) => (wq.forward(&h)?, wk.forward(&h)?, wv.forward(&h)?),
        };
        if let Some((bq, bk, bv)) = &l.qkv_bias {
            q = q.broadcast_add(bq)?;
            k = k.broadcast_add(bk)?;
            v = v.broadcast_add(bv)?;
        }
        Ok((q, k, v))
    }

    /// Self-attention of one batch of equal-length sequences sharing `cache` (positions
    /// from `offset`): rope, cache append, attention over every cached segment. Returns
    /// (b, s, heads*hd).
    #[allow(clippy::too_many_arguments)]
    fn attend(
        &self,
        idx: usize,
        l: &Layer,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        cache: &mut KvCache,
        offset: usize,
    ) -> Result<Tensor> {
        match self.op_path {
            OpPath::Fused => self.attend_fused(idx, l, q, k, v, cache, offset),
            OpPath::Reference => self.attend_reference(idx, l, q, k, v, cache, offset),
        }
    }

    /// `attend` through `kernels::attention` (CPU, f32).
    #[allow(clippy::too_many_arguments)]
    fn attend_fused(
        &self,
        idx: usize,
        l: &Layer,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        cache: &mut KvCache,
        offset: usize,
    ) -> Result<Tensor> {
        use crate::kernels::attention::{
            attention_with, rms_norm_heads, rope, Heads, ScoreRule, SegmentView,
        };
        let cfg = &self.config;
        let (b, s, _) = q.dims3()?;
        let (nh, nkv, hd) = (cfg.n_head, cfg.n_kv_head, cfg.head_dim);
        let flat =
            |t: &Tensor| -> Result<Vec<f32>> { t.to_dtype(DType::F32)?.flatten_all()?.to_vec1() };
        let (mut qv, mut kv, vv) = (flat(q)?, flat(k)?, flat(v)?);
        if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
            rms_norm_heads(&mut qv, hd, &flat(qn)?, cfg.rms_eps as f32);
            rms_norm_heads(&mut kv, hd, &flat(kn)?, cfg.rms_eps as f32);
        }
        let sliding = cfg.is_sliding(idx);
        let (cos, sin) = if sliding {
            &self.rope_local_flat
        } else {
            &self.rope_global_flat
        };
        let positions = || (0..b).flat_map(|_| offset..offset + s);
        rope(&mut qv, nh, hd, positions(), cos, sin, cfg.rope_neox);
        rope(&mut kv, nkv, hd, positions(), cos, sin, cfg.rope_neox);
        let kt = Tensor::from_vec(kv, (b, s, nkv, hd), &self.device)?.transpose(1, 2)?;
        let vt = Tensor::from_vec(vv, (b, s, nkv, hd), &self.device)?.transpose(1, 2)?;
        let segments = cache.append(idx, kt, vt)?;
        let guards = segments
            .iter()
            .map(|g| (g.k.storage_and_layout(), g.v.storage_and_layout()))
            .collect::<Vec<_>>();
        let views = segments
            .iter()
            .zip(&guards)
            .map(|(seg, (gk, gv))| {
                Ok(SegmentView {
                    k: cpu_f32(gk)?,
                    v: cpu_f32(gv)?,
                    batch: seg.batch(),
                    capacity: seg.capacity(),
                    len: seg.len,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let window = if sliding { cfg.sliding_window } else { None };
        let out = attention_with(
            &qv,
            b,
            s,
            Heads {
                n_head: nh,
                n_kv_head: nkv,
                head_dim: hd,
            },
            &views,
            offset,
            window,
            ScoreRule {
                scale: cfg.attention_scale(),
                softcap: cfg.attn_softcap,
            },
        );
        Tensor::from_vec(out, (b, s, nh * hd), &self.device)
    }

    /// `attend` with candle tensor ops: the reference for the fused path, and the path on
    /// GPUs.
    #[allow(clippy::too_many_arguments)]
    fn attend_reference(
        &self,
        idx: usize,
        l: &Layer,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        cache: &mut KvCache,
        offset: usize,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let (b, s, _) = q.dims3()?;
        let (nh, nkv, hd) = (cfg.n_head, cfg.n_kv_head, cfg.head_dim);
        let mut q = q.reshape((b, s, nh, hd))?.transpose(1, 2)?.contiguous()?;
        let mut k = k.reshape((b, s, nkv, hd))?.transpose(1, 2)?.contiguous()?;
        let v = v.reshape((b, s, nkv, hd))?.transpose(1, 2)?.contiguous()?;
        if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
            q = rms_norm(&q, qn, cfg.rms_eps)?;
            k = rms_norm(&k, kn, cfg.rms_eps)?;
        }
        let sliding = cfg.is_sliding(idx);
        let (cos, sin) = if sliding {
            &self.rope_local
        } else {
            &self.rope_global
        };
        let (cos, sin) = (cos.narrow(0, offset, s)?, sin.narrow(0, offset, s)?);
        let rope = if cfg.rope_neox {
            candle_nn::rotary_emb::rope
        } else {
            candle_nn::rotary_emb::rope_i
        };
        let q = rope(&q, &cos, &sin)?;
        let k = rope(&k, &cos, &sin)?;
        let segments = cache.append(idx, k, v)?;
        let total = offset + s;

        // Grouped-query attention without copying keys: fold the query heads that share a
        // kv head into the sequence axis, (b, nkv, group*s, hd). Attention runs segment by
        // segment (scores joined for one softmax), so shared prefixes are never copied.
        let group = nh / nkv;
        let q = (q.reshape((b, nkv, group * s, hd))? * cfg.attention_scale() as f64)?;
        let mut parts = Vec::with_capacity(segments.len());
        for seg in segments {
            // The cache keeps keys transposed; the GEMM is handed them exactly as
            // candle-transformers does (a transposed view of contiguous (len, hd) keys),
            // since its kernel choice, and so the last bits, depend on the strides.
            let (sk_t, _) = seg.views()?;
            let sk = sk_t.transpose(2, 3)?.contiguous()?;
            parts.push(batched_matmul(&q, &sk.t()?, seg.batch())?); // (b, nkv, group*s, len)
        }
        let mut scores = if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Tensor::cat(&parts, 3)?
        };
        if let Some(cap) = cfg.attn_softcap {
            scores = ((scores / cap as f64)?.tanh()? * cap as f64)?;
        }
        let window = if sliding { cfg.sliding_window } else { None };
        if s > 1 || window.is_some_and(|w| total > w) {
            let mask = attention_mask(s, offset, window, &self.device)?; // (s, total)
            let scores4 = scores.reshape((b, nkv, group, s, total))?;
            scores = scores4
                .broadcast_add(&mask)?
                .reshape((b, nkv, group * s, total))?;
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
        attn.reshape((b, nh, s, hd))?
            .transpose(1, 2)?
            .reshape((b, s, nh * hd))
    }

    /// Output projection, residuals and the feed-forward block, position by position.
    pub(super) fn finish_layer(&self, l: &Layer, x: &Tensor, attn: &Tensor) -> Result<Tensor> {
        let cfg = &self.config;
        let mut out = l.o_proj.forward(attn)?;
        if let Some(n) = &l.post_attn_norm {
            out = self.rms_norm(&out, n)?;
        }
        let x = (x + out)?;

        let h = self.rms_norm(&x, &l.ffn_norm)?;
        let (gate, up) = match &l.gate_up {
            GateUp::Fused(w) => {
                let gu = w.forward(&h)?;
                let f = gu.dim(D::Minus1)? / 2;
                (gu.narrow(2, 0, f)?, gu.narrow(2, f, f)?)
            }
            GateUp::Separate(g, u) => (g.forward(&h)?, u.forward(&h)?),
        };
        let gated = match self.op_path {
            OpPath::Fused => crate::kernels::activation::gated(&gate, &up, cfg.activation)?,
            OpPath::Reference => {
                let act = match cfg.activation {
                    Activation::Silu => candle_nn::ops::silu(&gate)?,
                    Activation::GeluTanh => gate.gelu()?,
                };
                (act * up)?
            }
        };
        let mut out = l.down.forward(&gated)?;
        if let Some(n) = &l.post_ffn_norm {
            out = self.rms_norm(&out, n)?;
        }
        x + out
    }

    /// Convenience: logits of the last position of a single sequence, as a Vec.
    pub fn last_logits(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let logits = self.forward(&[tokens.to_vec()], cache, &LogitsAt::Last)?;
        logits.i((0, 0))?.to_dtype(DType::F32)?.to_vec1()
    }

    /// Logits of the last position of every row of an equal-length batch, one Vec per row.
    pub fn last_logits_rows(
        &self,
        rows: &[Vec<u32>],
        cache: &mut KvCache,
    ) -> Result<Vec<Vec<f32>>> {
        self.forward(rows, cache, &LogitsAt::Last)?
            .squeeze(1)?
            .to_dtype(DType::F32)?
            .to_vec2()
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
    let rows = (0..b)
        .map(|i| x.narrow(0, i, 1)?.matmul(y))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&rows, 0)
}

/// The f32 data of a CPU tensor, from its read guard and layout.
fn cpu_f32<'a, G: std::ops::Deref<Target = candle_core::Storage>>(
    (storage, layout): &'a (G, &candle_core::Layout),
) -> Result<&'a [f32]> {
    match &**storage {
        candle_core::Storage::Cpu(candle_core::CpuStorage::F32(data)) => {
            Ok(&data[layout.start_offset()..layout.start_offset() + layout.shape().elem_count()])
        }
        _ => candle_core::bail!("fused attention needs an f32 CPU cache"),
    }
}

impl Transformer {
    /// RMS norm over the last dimension: the kernel pool's on the fused path (bit-
    /// identical to candle's, without rayon's second pool), candle's otherwise.
    pub(super) fn rms_norm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let eps = self.config.rms_eps;
        if self.op_path != OpPath::Fused || x.dtype() != DType::F32 || w.dtype() != DType::F32 {
            return rms_norm(x, w, eps);
        }
        let x = x.contiguous()?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let ws = w.flatten_all()?.to_vec1::<f32>()?;
        if ws.is_empty() || !xs.len().is_multiple_of(ws.len()) {
            return rms_norm(&x, w, eps);
        }
        let mut out = vec![0f32; xs.len()];
        crate::kernels::norm::rms_norm_rows(&xs, &ws, eps as f32, &mut out);
        Tensor::from_vec(out, x.shape(), x.device())
    }
}

pub(super) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)
}

/// cos/sin tables shaped (positions, head_dim / 2).
fn rope_tables(
    head_dim: usize,
    base: f32,
    freq_factors: Option<&[f32]>,
    attn_factor: f32,
    positions: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    // As llama.cpp: the frequency divided by the pair's factor.
    let inv: Vec<f32> = (0..head_dim)
        .step_by(2)
        .enumerate()
        .map(|(pair, i)| {
            let factor = freq_factors.map_or(1.0, |f| f[pair]);
            1.0 / base.powf(i as f32 / head_dim as f32) / factor
        })
        .collect();
    let n = inv.len();
    let inv = Tensor::from_vec(inv, (1, n), device)?;
    let pos = Tensor::arange(0u32, positions as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((positions, 1))?;
    let freqs = pos.matmul(&inv)?;
    if attn_factor == 1.0 {
        return Ok((freqs.cos()?, freqs.sin()?));
    }
    let m = attn_factor as f64;
    Ok(((freqs.cos()? * m)?, (freqs.sin()? * m)?))
}

/// Additive attention mask for `s` new queries after `offset` cached positions:
///
/// ```text
///            keys 0 .. offset+s
///   query i  [ 0  0  0 ... 0 -inf -inf ]   key j visible iff j <= offset + i
///                                          and, with a window w, offset + i - j < w
/// ```
fn attention_mask(
    s: usize,
    offset: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Tensor> {
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
        let m = attention_mask(2, 3, None, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(m[0], vec![0.0, 0.0, 0.0, 0.0, f32::NEG_INFINITY]);
        assert_eq!(m[1], vec![0.0; 5]);
    }

    #[test]
    fn mask_respects_the_sliding_window() {
        let m = attention_mask(3, 0, Some(2), &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let ninf = f32::NEG_INFINITY;
        assert_eq!(m[2], vec![ninf, 0.0, 0.0]);
        assert_eq!(m[1], vec![0.0, 0.0, ninf]);
    }
}
