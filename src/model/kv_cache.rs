//! The key/value cache, owned by the caller rather than hidden in the model.
//!
//! A `KvCache` is a value: cloning it is cheap (tensors are reference counted) and a clone
//! can be extended independently, so a computed prefix can be forked into many
//! continuations. Per layer it holds keys and values shaped `(batch, kv_heads, seq, head_dim)`.

use candle_core::{Result, Tensor};

#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
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
        self.layers.first()?.as_ref().map(|(k, _)| k.dims()[0])
    }

    /// Appends new keys/values for `layer` and returns the full keys/values.
    pub(crate) fn append(&mut self, layer: usize, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = match &self.layers[layer] {
            None => (k.contiguous()?, v.contiguous()?),
            Some((ck, cv)) => (Tensor::cat(&[ck, &k], 2)?, Tensor::cat(&[cv, &v], 2)?),
        };
        self.layers[layer] = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Keeps only the first `n` positions (to continue a conversation from a shared point).
    pub fn truncate(&mut self, n: usize) -> Result<()> {
        if n > self.len {
            candle_core::bail!("cannot truncate a cache of {} positions to {n}", self.len);
        }
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.narrow(2, 0, n)?;
            *v = v.narrow(2, 0, n)?;
        }
        self.len = n;
        Ok(())
    }

    /// The same cached prefix repeated for `n` sequences (batch 1 -> batch n), so one
    /// computed prefix can feed a batch of continuations.
    pub fn repeat_batch(&self, n: usize) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                None => Ok(None),
                Some((k, v)) => Ok(Some((repeat0(k, n)?, repeat0(v, n)?))),
            })
            .collect::<Result<_>>()?;
        Ok(Self { layers, len: self.len })
    }
}

fn repeat0(t: &Tensor, n: usize) -> Result<Tensor> {
    let mut dims = t.dims().to_vec();
    if dims[0] != 1 {
        candle_core::bail!("repeat_batch needs a batch-1 cache, got batch {}", dims[0]);
    }
    dims[0] = n;
    t.broadcast_as(dims)?.contiguous()
}
