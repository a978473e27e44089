//! The residual stream between blocks: reading it (capture, for probes) and writing to
//! it (activation steering).
//!
//! Positions in the stream are counted in blocks: "after block 0" is the (scaled)
//! embeddings, "after block L" the output of the L-th decoder layer, up to `n_layer`
//! (the stream the final norm reads). A steering vector is added at its position to
//! every token of every forward pass (prompt, option scoring and decoding alike), so a
//! steered run is deterministic given the vector, like any other.

use super::transformer::Transformer;
use candle_core::{DType, Result, Tensor};

/// What a capture keeps of the stream after each block, taken when the block is done:
/// holding every block's whole stream until the pass ends cost an 8B questionnaire
/// pass 0.35 GB for the 33 x 20 vectors it reads.
#[derive(Debug, Clone, Copy)]
pub enum Keep<'a> {
    /// Every new position: (b, s, d).
    Every,
    /// The mean over the new positions: (b, d).
    Mean,
    /// The new positions listed in this u32 index: (b, n, d).
    Positions(&'a Tensor),
}

/// A vector added to the residual stream after block `after_block`.
#[derive(Debug, Clone)]
pub struct Steering {
    pub after_block: usize,
    /// (d_model,) f32 on the model's device, already multiplied by its strength.
    pub vector: Tensor,
}

impl Transformer {
    /// The same model with `steering` added to its residual stream (replacing any it
    /// had). Weights are shared, not copied. Each vector must have d_model entries and
    /// sit at a block position 0..=n_layer.
    pub fn steered(&self, steering: &[(usize, Vec<f32>)]) -> Result<Transformer> {
        let (d, n) = (self.config.d_model, self.config.n_layer);
        let mut out = self.clone();
        out.steering = steering
            .iter()
            .map(|(after_block, v)| {
                if *after_block > n {
                    candle_core::bail!(
                        "steering after block {after_block}, but the model has {n} blocks (0..={n})"
                    );
                }
                if v.len() != d {
                    candle_core::bail!(
                        "a steering vector has {} entries; the model's residual stream has {d}",
                        v.len()
                    );
                }
                Ok(Steering {
                    after_block: *after_block,
                    vector: Tensor::new(v.as_slice(), &self.device)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(out)
    }

    /// Refuses block positions outside 0..=n_layer, or asked twice.
    pub(crate) fn check_capture(&self, capture: &[usize]) -> Result<()> {
        let n = self.config.n_layer;
        if let Some(bad) = capture.iter().find(|&&b| b > n) {
            candle_core::bail!("capture after block {bad}, but the model has {n} blocks (0..={n})");
        }
        for (i, b) in capture.iter().enumerate() {
            if capture[..i].contains(b) {
                candle_core::bail!("block {b} is asked to be captured twice");
            }
        }
        Ok(())
    }

    /// The stream after block `after`: steering added where set, then copied into
    /// `taps[k]` where `capture[k] == after` (so a capture sees what later blocks see),
    /// reduced as `keep` says.
    pub(crate) fn after_block(
        &self,
        after: usize,
        mut x: Tensor,
        capture: &[usize],
        taps: &mut [Option<Tensor>],
        keep: Keep,
    ) -> Result<Tensor> {
        for s in self.steering.iter().filter(|s| s.after_block == after) {
            x = x.broadcast_add(&s.vector.to_dtype(x.dtype())?)?;
        }
        if let Some(k) = capture.iter().position(|&b| b == after) {
            let stream = x.to_dtype(DType::F32)?;
            taps[k] = Some(match keep {
                Keep::Every => stream,
                Keep::Mean => stream.mean(1)?,
                Keep::Positions(index) => stream.index_select(index, 1)?,
            });
        }
        Ok(x)
    }
}
