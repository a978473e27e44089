//! The key/value cache, owned by the caller rather than hidden in the model.
//!
//! A `KvCache` is a value: cloning it is cheap and a clone can be extended
//! independently, so a computed prefix can be forked into many continuations. Per layer
//! it holds keys and values in a buffer shaped `(batch, kv_heads, capacity, head_dim)`
//! of which the first `len` positions are valid:
//!
//! ```text
//!   buffer:  [ k0 k1 ... k(len-1) | free ... ]      capacity grows by 1.5x
//! ```
//!
//! Appending writes in place while this cache is the buffer's only owner; a buffer
//! shared with a fork is copied once (into a private, larger one) before the first write.
//! So decoding costs O(new tokens) per step instead of re-copying the whole cache, and a
//! fork pays one copy, not one per token.

use candle_core::{Result, Tensor};
use std::sync::Arc;

#[derive(Debug, Clone)]
struct LayerKv {
    k: Tensor,
    v: Tensor,
    /// Shared by every clone of this buffer; unique means we may write in place.
    owner: Arc<()>,
}

impl LayerKv {
    fn capacity(&self) -> usize {
        self.k.dims()[2]
    }
}

#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerKv>>,
    len: usize,
}

/// A fresh contiguous buffer of `capacity` positions holding `k[..len]`.
fn grow(t: &Tensor, len: usize, capacity: usize) -> Result<Tensor> {
    let (b, h, _, d) = t.dims4()?;
    let buf = Tensor::zeros((b, h, capacity, d), t.dtype(), t.device())?;
    if len > 0 {
        buf.slice_set(&t.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
    }
    Ok(buf)
}

impl KvCache {
    pub fn new(n_layer: usize) -> Self {
        Self { layers: vec![None; n_layer], len: 0 }
    }

    /// Number of positions already cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Batch size of the cached sequences (None when empty).
    pub fn batch(&self) -> Option<usize> {
        self.layers.first()?.as_ref().map(|l| l.k.dims()[0])
    }

    /// Appends new keys/values `(b, h, s, d)` for `layer` and returns views of all
    /// cached keys/values, `(b, h, len + s, d)`.
    pub(crate) fn append(&mut self, layer: usize, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let pos = self.len;
        let s = k.dims()[2];
        let need = pos + s;
        let slot = &mut self.layers[layer];
        let must_copy = match slot {
            None => true,
            Some(l) => Arc::strong_count(&l.owner) > 1 || l.capacity() < need,
        };
        if must_copy {
            let capacity = (need * 3 / 2).max(need + 16);
            let fresh = match slot {
                None => LayerKv { k: grow(&k, 0, capacity)?, v: grow(&v, 0, capacity)?, owner: Arc::new(()) },
                Some(l) => LayerKv { k: grow(&l.k, pos, capacity)?, v: grow(&l.v, pos, capacity)?, owner: Arc::new(()) },
            };
            *slot = Some(fresh);
        }
        let l = slot.as_ref().expect("allocated above");
        l.k.slice_set(&k.contiguous()?, 2, pos)?;
        l.v.slice_set(&v.contiguous()?, 2, pos)?;
        Ok((l.k.narrow(2, 0, need)?, l.v.narrow(2, 0, need)?))
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Keeps only the first `n` positions (to continue a conversation from a shared point).
    pub fn truncate(&mut self, n: usize) -> Result<()> {
        if n > self.len {
            candle_core::bail!("cannot truncate a cache of {} positions to {n}", self.len);
        }
        self.len = n;
        Ok(())
    }

    /// The same cached prefix repeated for `n` sequences (batch 1 -> batch n), so one
    /// computed prefix can feed a batch of continuations.
    pub fn repeat_batch(&self, n: usize) -> Result<Self> {
        let len = self.len;
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                None => Ok(None),
                Some(l) => {
                    let rep = |t: &Tensor| -> Result<Tensor> {
                        let valid = t.narrow(2, 0, len)?;
                        let mut dims = valid.dims().to_vec();
                        if dims[0] != 1 {
                            candle_core::bail!("repeat_batch needs a batch-1 cache, got batch {}", dims[0]);
                        }
                        dims[0] = n;
                        grow(&valid.broadcast_as(dims)?.contiguous()?, len, len + 16)
                    };
                    Ok(Some(LayerKv { k: rep(&l.k)?, v: rep(&l.v)?, owner: Arc::new(()) }))
                }
            })
            .collect::<Result<_>>()?;
        Ok(Self { layers, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(vals: &[f32]) -> Tensor {
        Tensor::from_slice(vals, (1, 1, vals.len(), 1), &Device::Cpu).unwrap()
    }

    fn keys(c: &mut KvCache, new: &[f32]) -> Vec<f32> {
        let (k, _) = c.append(0, t(new), t(new)).unwrap();
        c.advance(new.len());
        k.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn forks_do_not_see_each_others_writes() {
        let mut a = KvCache::new(1);
        assert_eq!(keys(&mut a, &[1.0, 2.0]), vec![1.0, 2.0]);
        let mut b = a.clone();
        assert_eq!(keys(&mut a, &[3.0]), vec![1.0, 2.0, 3.0]);
        assert_eq!(keys(&mut b, &[9.0]), vec![1.0, 2.0, 9.0]);
        assert_eq!(keys(&mut a, &[4.0]), vec![1.0, 2.0, 3.0, 4.0]);
        let mut c = a.clone();
        c.truncate(1).unwrap();
        assert_eq!(keys(&mut c, &[7.0]), vec![1.0, 7.0]);
        assert_eq!(keys(&mut a, &[5.0]), vec![1.0, 2.0, 3.0, 4.0, 5.0], "truncating a fork leaves the original");
    }

    #[test]
    fn growth_keeps_contents() {
        let mut a = KvCache::new(1);
        let mut want = Vec::new();
        for i in 0..100 {
            want.push(i as f32);
            assert_eq!(keys(&mut a, &[i as f32]), want);
        }
    }
}
