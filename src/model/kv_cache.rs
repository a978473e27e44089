//! The key/value cache, owned by the caller rather than hidden in the model.
//!
//! A `KvCache` is a value: cloning it is cheap and a clone can be extended
//! independently, so a computed prefix can be forked into many continuations without
//! copying it. Per layer the cache is a chain of segments:
//!
//! ```text
//!   [ shared prefix (read-only) ][ fork's own tokens ][ ... ]   -> attention runs over all
//! ```
//!
//! Each segment holds values as `(batch, kv_heads, capacity, head_dim)` and keys
//! transposed, `(batch, kv_heads, head_dim, capacity)`, of which the first `len`
//! positions are valid. Keys are stored transposed because attention reads them as the
//! right-hand side of q k^T: the fused CPU kernel then streams each key dimension
//! contiguously across positions, with no transposition per step. Appending writes in place into the last segment while this
//! cache is its only owner and it has room; otherwise a new private segment is started,
//! and nothing already computed is copied. `repeat_batch` shares the batch-1 prefix with
//! a batch of n continuations (their own tokens go into batch-n segments).

use candle_core::{Result, Tensor};
use std::sync::Arc;

/// One stretch of cached positions.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Keys, transposed: (batch, kv_heads, head_dim, capacity).
    pub k: Tensor,
    /// Values: (batch, kv_heads, capacity, head_dim).
    pub v: Tensor,
    pub len: usize,
    /// Shared by every clone of this buffer; unique means we may write in place.
    owner: Arc<()>,
}

impl Segment {
    pub fn capacity(&self) -> usize {
        self.v.dims()[2]
    }
    pub fn batch(&self) -> usize {
        self.k.dims()[0]
    }
    /// The valid part of keys (transposed, (b, h, d, len)) and values ((b, h, len, d)).
    pub fn views(&self) -> Result<(Tensor, Tensor)> {
        Ok((
            self.k.narrow(3, 0, self.len)?,
            self.v.narrow(2, 0, self.len)?,
        ))
    }
}

#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Vec<Segment>>,
    len: usize,
    /// Logical batch size (segments may hold batch 1, shared by every row).
    batch: Option<usize>,
    /// At most how many more positions a decoder will append (`expect_growth`).
    growth: Option<usize>,
}

/// A decoding cache's next segment holds at least this many positions, so most
/// decode steps append in place.
const MIN_SEGMENT: usize = 64;

impl KvCache {
    pub fn new(n_layer: usize) -> Self {
        Self {
            layers: vec![Vec::new(); n_layer],
            len: 0,
            batch: None,
            growth: None,
        }
    }

    /// Declares that at most `n` more positions will be appended (a decoder's token
    /// budget, forgotten once spent), so a decoding segment reserves no more room than
    /// that. Without it a
    /// decoding cache reserves half of what it holds, which for a short answer after a
    /// long prompt is hundreds of positions it never uses, per row of a batch.
    pub fn expect_growth(&mut self, n: usize) {
        self.growth = Some(n);
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
        self.batch
    }

    /// The segments of `layer`, in position order.
    pub(crate) fn segments(&self, layer: usize) -> &[Segment] {
        &self.layers[layer]
    }

    /// Appends new keys/values `(b, h, s, d)` for `layer` and returns its segments.
    pub(crate) fn append(&mut self, layer: usize, k: Tensor, v: Tensor) -> Result<&[Segment]> {
        let (b, h, s, d) = k.dims4()?;
        let segs = &mut self.layers[layer];
        // The last segment is this cache's alone and of its batch: it may be written.
        let own = segs
            .last()
            .filter(|last| Arc::strong_count(&last.owner) == 1 && last.batch() == b);
        if own.is_none_or(|last| last.capacity() - last.len < s) {
            // Only a cache that fills its own segment one position at a time is
            // decoding: it reserves room ahead (a share of what it holds, so segments
            // stay few; no more than its decoder's declared budget). A fresh cache, a
            // fork (a questionnaire item, an option's continuation) or an extension by
            // a turn (a re-ask) gets what it was given: there are many of them and most
            // stop there, and reserving ahead for each had an 8B questionnaire pass hold
            // 1.1 GB of cache for 0.3 GB of positions, and a unit of re-asked answers
            // hold half its prompts' length again per row. A multiple of 16 so the
            // attention kernel reads whole blocks.
            let capacity = if own.is_some() && s == 1 {
                let ahead = MIN_SEGMENT.max(self.len / 2);
                self.growth.map_or(ahead, |g| ahead.min(g.max(s)))
            } else {
                s
            }
            .next_multiple_of(16);
            segs.push(Segment {
                k: Tensor::zeros((b, h, d, capacity), k.dtype(), k.device())?,
                v: Tensor::zeros((b, h, capacity, d), v.dtype(), v.device())?,
                len: 0,
                owner: Arc::new(()),
            });
        }
        let last = segs.last_mut().expect("a segment exists");
        last.k
            .slice_set(&k.transpose(2, 3)?.contiguous()?, 3, last.len)?;
        last.v.slice_set(&v.contiguous()?, 2, last.len)?;
        last.len += s;
        Ok(segs)
    }

    pub(crate) fn advance(&mut self, n: usize, batch: usize) {
        self.len += n;
        // A spent budget is forgotten: whatever decodes next declares its own, or
        // reserves ahead.
        self.growth = self
            .growth
            .and_then(|g| g.checked_sub(n))
            .filter(|&g| g > 0);
        self.batch = Some(batch);
    }

    /// Keeps only the first `n` positions (to continue a conversation from a shared point).
    pub fn truncate(&mut self, n: usize) -> Result<()> {
        if n > self.len {
            candle_core::bail!("cannot truncate a cache of {} positions to {n}", self.len);
        }
        for segs in &mut self.layers {
            let mut kept = 0;
            let mut keep_segments = 0;
            for seg in segs.iter_mut() {
                if kept >= n {
                    break;
                }
                seg.len = seg.len.min(n - kept);
                kept += seg.len;
                keep_segments += 1;
            }
            segs.truncate(keep_segments);
        }
        self.len = n;
        Ok(())
    }

    /// The same cached prefix shared by `n` sequences (batch 1 -> batch n), without
    /// copying it: one computed prefix feeds a batch of continuations.
    pub fn repeat_batch(&self, n: usize) -> Result<Self> {
        if let Some(b) = self.batch {
            if b != 1 {
                candle_core::bail!("repeat_batch needs a batch-1 cache, got batch {b}");
            }
        }
        Ok(Self {
            layers: self.layers.clone(),
            len: self.len,
            batch: Some(n),
            growth: self.growth,
        })
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
        let segs = c.append(0, t(new), t(new)).unwrap().to_vec();
        c.advance(new.len(), 1);
        segs.iter()
            .flat_map(|s| {
                s.views()
                    .unwrap()
                    .0
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .collect()
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
        assert_eq!(
            keys(&mut a, &[5.0]),
            vec![1.0, 2.0, 3.0, 4.0, 5.0],
            "truncating a fork leaves the original"
        );
        drop(b);
    }

    fn capacities(c: &KvCache) -> Vec<usize> {
        c.layers[0].iter().map(Segment::capacity).collect()
    }

    /// Regression: every fork reserved max(64, half the prefix) positions, so a
    /// questionnaire's 20 items and their option continuations after a 167-token prefix
    /// held 4,000 positions of cache for 2,100 used (1.1 GB at 8B).
    #[test]
    fn forks_hold_what_they_were_given_and_decoding_reserves_ahead() {
        let prefix: Vec<f32> = (0..167).map(|i| i as f32).collect();
        let mut shared = KvCache::new(1);
        keys(&mut shared, &prefix);
        assert_eq!(
            capacities(&shared),
            vec![176],
            "a fresh cache holds its prefill"
        );

        let mut item = shared.clone();
        keys(&mut item, &[1.0; 20]);
        assert_eq!(
            capacities(&item),
            vec![176, 32],
            "a fork holds its own tokens"
        );
        let mut option = item.clone();
        keys(&mut option, &[2.0]);
        assert_eq!(capacities(&option), vec![176, 32, 16]);

        // Decoding from the fork fills its own segment in place, then starts one with
        // room ahead (half of the 203 positions held, in whole blocks).
        for i in 0..16 {
            keys(&mut option, &[i as f32]);
        }
        assert_eq!(capacities(&option), vec![176, 32, 16, 112]);
        for i in 0..111 {
            keys(&mut option, &[i as f32]);
        }
        assert_eq!(capacities(&option).len(), 4, "appends went in place");
        assert_eq!(option.len(), 167 + 20 + 16 + 112);
    }

    /// Regression: a re-ask turn appended to an answer's full segment reserved half the
    /// cache (a decoding step's rule), and so did the re-ask's decode of a few tokens:
    /// ~200 positions per row for a 6-token answer after a 400-token prompt, held by
    /// every row of a unit decoded together.
    #[test]
    fn a_turn_gets_its_positions_and_a_decoder_no_more_than_its_budget() {
        let prompt: Vec<f32> = (0..400).map(|i| i as f32).collect();
        let mut row = KvCache::new(1);
        keys(&mut row, &prompt);
        assert_eq!(capacities(&row), vec![400]);
        let mut turn = row.clone();
        drop(row);
        keys(&mut turn, &[1.0; 30]);
        assert_eq!(
            capacities(&turn),
            vec![400, 32],
            "a turn is not a decoding step"
        );

        // A full segment of its own, then a decoder with a 6-token budget.
        keys(&mut turn, &[2.0; 2]);
        turn.expect_growth(6);
        keys(&mut turn, &[3.0]);
        assert_eq!(capacities(&turn), vec![400, 32, 16]);
        for i in 0..5 {
            keys(&mut turn, &[i as f32]);
        }
        assert_eq!(
            capacities(&turn).len(),
            3,
            "the budget's tokens went in place"
        );

        // Past the budget (a decoder that did not declare one) it reserves ahead again:
        // half of the 448 positions held.
        for i in 0..11 {
            keys(&mut turn, &[i as f32]);
        }
        assert_eq!(capacities(&turn), vec![400, 32, 16, 224]);
    }

    #[test]
    fn growth_keeps_contents() {
        let mut a = KvCache::new(1);
        let mut want = Vec::new();
        for i in 0..300 {
            want.push(i as f32);
            assert_eq!(keys(&mut a, &[i as f32]), want);
        }
    }
}
