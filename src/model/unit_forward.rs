//! The fixed-plan batched forward pass: the rows of one unit of work continue one shared
//! prefix in lockstep, one padded pass per step, over a key/value grid allocated once
//! for the unit. It is what GPUs run (few, large kernels instead of one small kernel per
//! row), written over candle tensors so the same code runs on the CPU in tests.
//!
//! ```text
//!   prefix  (1, kv_heads, P, head_dim)         computed once, read by every row, never copied
//!   grid    (rows, kv_heads, capacity, head_dim)
//!           row 0: [ a a a a | d | d ]          step t writes slot t of every row:
//!           row 1: [ b b . . | d | d ]          a, b: prompt tokens, .: padding, d: decoded
//! ```
//!
//! A real query attends to the prefix and to its row's real slots up to its own position;
//! a padding query attends only to its own slot, so no softmax row is empty and padding
//! never reaches a real row.
//!
//! Unlike the packed CPU path, a row's bits here depend on which rows share its pass
//! (cuBLAS and candle's GEMMs choose kernels by shape): results are reproducible because
//! the composition of every unit is a pure function of the plan and `--batch-size`
//! (`Guarantee::FixedPlan`), not because batching is invisible.

use super::kv_cache::KvCache;
use super::residual::Keep;
use super::transformer::{rms_norm, Transformer};
use candle_core::{DType, Result, Tensor};

/// The keys and values of one unit: the shared prefix, and a grid of per-row slots.
#[derive(Debug, Clone)]
pub struct UnitKv {
    /// Per layer: the prefix's keys transposed, (1, kv_heads, head_dim, P), and values,
    /// (1, kv_heads, P, head_dim); None for an empty prefix.
    prefix: Vec<Option<(Tensor, Tensor)>>,
    prefix_len: usize,
    /// Per layer: keys and values, (rows, kv_heads, capacity, head_dim).
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Per row, per used slot: the position of the token it holds (None: padding).
    slots: Vec<Vec<Option<usize>>>,
    capacity: usize,
}

impl UnitKv {
    /// A unit of `rows` rows continuing `prefix` (a batch-1 cache, maybe empty), with
    /// room for `capacity` slots per row.
    pub fn new(t: &Transformer, prefix: &KvCache, rows: usize, capacity: usize) -> Result<Self> {
        if prefix.batch().is_some_and(|b| b != 1) {
            candle_core::bail!("a unit continues a batch-1 prefix cache");
        }
        let cfg = &t.config;
        let mut prefix_layers = Vec::with_capacity(cfg.n_layer);
        for layer in 0..cfg.n_layer {
            let segs = prefix.segments(layer);
            if segs.is_empty() || prefix.is_empty() {
                prefix_layers.push(None);
                continue;
            }
            let views = segs.iter().map(|s| s.views()).collect::<Result<Vec<_>>>()?;
            let ks: Vec<Tensor> = views.iter().map(|(k, _)| k.clone()).collect();
            let vs: Vec<Tensor> = views.iter().map(|(_, v)| v.clone()).collect();
            // Joined and made contiguous once per unit: every row reads this one copy.
            let k = Tensor::cat(&ks, 3)?.to_dtype(DType::F32)?.contiguous()?;
            let v = Tensor::cat(&vs, 2)?.to_dtype(DType::F32)?.contiguous()?;
            prefix_layers.push(Some((k, v)));
        }
        let grid = || -> Result<Vec<Tensor>> {
            (0..cfg.n_layer)
                .map(|_| {
                    Tensor::zeros(
                        (rows, cfg.n_kv_head, capacity, cfg.head_dim),
                        DType::F32,
                        &t.device,
                    )
                })
                .collect()
        };
        Ok(Self {
            prefix: prefix_layers,
            prefix_len: prefix.len(),
            k: grid()?,
            v: grid()?,
            slots: vec![Vec::new(); rows],
            capacity,
        })
    }

    pub fn rows(&self) -> usize {
        self.slots.len()
    }

    /// Slots used so far (the same for every row).
    pub fn used(&self) -> usize {
        self.slots.first().map_or(0, Vec::len)
    }

    /// Slots left per row.
    pub fn room(&self) -> usize {
        self.capacity - self.used()
    }

    /// Positions row `r` holds: the prefix and its real slots.
    pub fn row_len(&self, r: usize) -> usize {
        self.prefix_len + self.slots[r].iter().filter(|s| s.is_some()).count()
    }

    /// Bytes of the grid (keys and values of every layer), for memory statements.
    pub fn grid_bytes(&self) -> usize {
        self.k
            .iter()
            .chain(&self.v)
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }

    /// A unit whose row i is a copy of row `rows[i]` of this one (the prefix still
    /// shared), with `extra` more slots of room: forks for scoring multi-token labels.
    pub fn select_rows(&self, rows: &[usize], extra: usize) -> Result<Self> {
        let used = self.used();
        let device = self.k[0].device();
        let idx = Tensor::new(rows.iter().map(|&r| r as u32).collect::<Vec<_>>(), device)?;
        let fork = |grid: &[Tensor]| -> Result<Vec<Tensor>> {
            grid.iter()
                .map(|g| {
                    let (_, h, _, d) = g.dims4()?;
                    let out = Tensor::zeros((rows.len(), h, used + extra, d), g.dtype(), device)?;
                    if used > 0 {
                        out.slice_set(&g.narrow(2, 0, used)?.index_select(&idx, 0)?, 2, 0)?;
                    }
                    Ok(out)
                })
                .collect()
        };
        Ok(Self {
            prefix: self.prefix.clone(),
            prefix_len: self.prefix_len,
            k: fork(&self.k)?,
            v: fork(&self.v)?,
            slots: rows.iter().map(|&r| self.slots[r].clone()).collect(),
            capacity: used + extra,
        })
    }
}

/// The additive mask of one step, (rows, 1, s, prefix + used + s): 0 where a query may
/// look, -inf elsewhere. `slots` already holds this step's slots.
fn step_mask(
    kv: &UnitKv,
    s: usize,
    window: Option<usize>,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let (p, total) = (kv.prefix_len, kv.used());
    let width = p + total;
    let first = total - s;
    let mut m = vec![f32::NEG_INFINITY; kv.rows() * s * width];
    let near = |q: usize, k: usize| window.is_none_or(|w| q - k < w);
    for (r, slots) in kv.slots.iter().enumerate() {
        for i in 0..s {
            let row = &mut m[(r * s + i) * width..(r * s + i + 1) * width];
            let Some(qpos) = slots[first + i] else {
                row[p + first + i] = 0.0;
                continue;
            };
            for (j, m) in row[..p].iter_mut().enumerate() {
                if near(qpos, j) {
                    *m = 0.0;
                }
            }
            for (t, slot) in slots.iter().enumerate() {
                if let Some(kpos) = *slot {
                    if kpos <= qpos && near(qpos, kpos) {
                        row[p + t] = 0.0;
                    }
                }
            }
        }
    }
    Tensor::from_vec(m, (kv.rows(), 1, s, width), device)
}

impl Transformer {
    /// Runs one step of a unit: `tokens[r]` (at least one token per row; rows may differ
    /// in length and are padded) continue row r. Returns each row's logits at its last
    /// new token, (rows, vocab) f32, on the model's device.
    pub fn unit_step(&self, kv: &mut UnitKv, tokens: &[Vec<u32>]) -> Result<Tensor> {
        let rows = kv.rows();
        if tokens.len() != rows || tokens.iter().any(|t| t.is_empty()) {
            candle_core::bail!("a unit step needs one non-empty row of tokens per unit row");
        }
        let s = tokens.iter().map(Vec::len).max().unwrap_or(1);
        if s > kv.room() {
            candle_core::bail!(
                "the unit has room for {} more slots but {s} were given",
                kv.room()
            );
        }
        let mut ids = Vec::with_capacity(rows);
        let mut positions = Vec::with_capacity(rows * s);
        let mut last = Vec::with_capacity(rows);
        for (r, row) in tokens.iter().enumerate() {
            let base = kv.row_len(r);
            if base + row.len() > self.max_positions() {
                candle_core::bail!(
                    "sequence of {} positions exceeds the context of {}",
                    base + row.len(),
                    self.max_positions()
                );
            }
            let mut padded = row.clone();
            padded.resize(s, 0);
            ids.push(padded);
            for i in 0..s {
                // A padding slot takes its row's last real position for rope (any
                // in-range position would do: nothing real reads it).
                let pos = base + i.min(row.len() - 1);
                positions.push(pos as u32);
                kv.slots[r].push((i < row.len()).then_some(pos));
            }
            last.push((r * s + row.len() - 1) as u32);
        }
        let result = self.unit_layers(kv, &ids, &positions, &last, s);
        if result.is_err() {
            // Leave the unit as it was, so a caller that recovers sees no half step.
            for slots in &mut kv.slots {
                slots.truncate(slots.len() - s);
            }
        }
        result
    }

    fn unit_layers(
        &self,
        kv: &mut UnitKv,
        ids: &[Vec<u32>],
        positions: &[u32],
        last: &[u32],
        s: usize,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let rows = kv.rows();
        let (nh, nkv, hd) = (cfg.n_head, cfg.n_kv_head, cfg.head_dim);
        let group = nh / nkv;
        let (p, used) = (kv.prefix_len, kv.used());
        let first = used - s;
        let device = &self.device;
        let pos = Tensor::new(positions, device)?;
        let rope_at = |sliding: bool| -> Result<(Tensor, Tensor)> {
            let (cos, sin) = self.rope_for(sliding);
            let pick = |t: &Tensor| t.index_select(&pos, 0)?.reshape((rows, s, hd / 2));
            Ok((pick(cos)?, pick(sin)?))
        };
        let global = rope_at(false)?;
        let local = if (0..cfg.n_layer).any(|i| cfg.is_sliding(i)) {
            Some(rope_at(true)?)
        } else {
            None
        };
        let mask_global = step_mask(kv, s, None, device)?;
        let mask_local = match cfg.sliding_window {
            Some(w) if local.is_some() => Some(step_mask(kv, s, Some(w), device)?),
            _ => None,
        };
        let rope = if cfg.rope_neox {
            candle_nn::rotary_emb::rope
        } else {
            candle_nn::rotary_emb::rope_i
        };
        let mut taps: Vec<Option<Tensor>> = Vec::new();
        let mut x = self.after_block(0, self.embed(ids)?, &[], &mut taps, Keep::Every)?;
        for (idx, l) in self.layers.iter().enumerate() {
            crate::interrupt::stop_point()?;
            let sliding = cfg.is_sliding(idx);
            let (cos, sin) = if sliding {
                local.as_ref().unwrap_or(&global)
            } else {
                &global
            };
            let mask = match (sliding, &mask_local) {
                (true, Some(m)) => m,
                _ => &mask_global,
            };
            let (q, k, v) = self.project_qkv(l, &x)?;
            let heads = |t: Tensor, n: usize| -> Result<Tensor> {
                t.reshape((rows, s, n, hd))?
                    .transpose(1, 2)?
                    .to_dtype(DType::F32)?
                    .contiguous()
            };
            let (mut q, mut k, v) = (heads(q, nh)?, heads(k, nkv)?, heads(v, nkv)?);
            if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
                q = rms_norm(&q, qn, cfg.rms_eps)?;
                k = rms_norm(&k, kn, cfg.rms_eps)?;
            }
            let q = rope(&q, cos, sin)?;
            let k = rope(&k, cos, sin)?;
            kv.k[idx].slice_set(&k, 2, first)?;
            kv.v[idx].slice_set(&v, 2, first)?;
            let keys = kv.k[idx].narrow(2, 0, used)?;
            let values = kv.v[idx].narrow(2, 0, used)?;
            // Query heads sharing a kv head folded into the rows: (rows, nkv, group*s, hd).
            let q = (q.reshape((rows, nkv, group * s, hd))? * cfg.attention_scale() as f64)?;
            let tail_scores = q.matmul(&keys.t()?)?;
            // The prefix is read by all rows in one product: rows folded into M.
            let folded = |t: &Tensor, n: usize| -> Result<Tensor> {
                t.transpose(0, 1)?
                    .contiguous()?
                    .reshape((1, nkv, rows * group * s, n))
            };
            let unfold = |t: Tensor, n: usize| -> Result<Tensor> {
                t.reshape((nkv, rows, group * s, n))?.transpose(0, 1)
            };
            let mut scores = match &kv.prefix[idx] {
                Some((pk, _)) => {
                    let ps = unfold(folded(&q, hd)?.matmul(pk)?, p)?;
                    Tensor::cat(&[&ps, &tail_scores], 3)?
                }
                None => tail_scores,
            };
            if let Some(cap) = cfg.attn_softcap {
                scores = ((scores / cap as f64)?.tanh()? * cap as f64)?;
            }
            let width = p + used;
            let scores = scores
                .contiguous()?
                .reshape((rows, nh, s, width))?
                .broadcast_add(mask)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?.reshape((
                rows,
                nkv,
                group * s,
                width,
            ))?;
            let mut out = probs.narrow(3, p, used)?.contiguous()?.matmul(&values)?;
            if let Some((_, pv)) = &kv.prefix[idx] {
                let pp = folded(&probs.narrow(3, 0, p)?, p)?;
                out = (out + unfold(pp.matmul(pv)?, hd)?)?;
            }
            let attn =
                out.reshape((rows, nh, s, hd))?
                    .transpose(1, 2)?
                    .reshape((rows, s, nh * hd))?;
            x = self.finish_layer(l, &x, &attn)?;
            x = self.after_block(idx + 1, x, &[], &mut taps, Keep::Every)?;
        }
        let d = cfg.d_model;
        let last = Tensor::new(last, device)?;
        let x = x
            .reshape((rows * s, d))?
            .index_select(&last, 0)?
            .unsqueeze(1)?;
        let x = self.rms_norm(&x, &self.final_norm)?;
        self.logits(&x)?.squeeze(1)?.to_dtype(DType::F32)
    }
}

/// `(rows, vocab)` logits as one Vec per row (the one transfer back from the device).
pub fn rows_to_vecs(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    logits.to_vec2()
}
