//! The choice read-out: the probability of every response option at the answer
//! position, from the model's logits. Multi-token labels ("100") are scored exactly, as
//! the sum of their tokens' log-probabilities, by extending a fork of the prompt's cache.

use crate::error::Result;
use crate::model::{KvCache, LogitsAt, Model};
use candle_core::IndexOp;

/// log-softmax of one logit row, in f64.
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln() + max;
    logits.iter().map(|&l| l as f64 - lse).collect()
}

/// log P(option tokens | prompt) for each option. `cache` holds the prompt and
/// `last_logits` are the logits at its final position.
///
/// Labels are scored depth by depth: at depth d every distinct d-token label prefix is
/// fed in one batched forward from the prompt's cache, so the 11 bins "0".."100" take two
/// passes instead of ten (batching does not change results: the kernels are
/// batch-invariant).
pub fn option_logprobs(model: &Model, cache: &KvCache, last_logits: &[f32], options: &[Vec<u32>]) -> Result<Vec<f64>> {
    let first = log_softmax(last_logits);
    let mut out: Vec<f64> = options.iter().map(|t| first[t[0] as usize]).collect();
    let longest = options.iter().map(|t| t.len()).max().unwrap_or(0);
    for depth in 1..longest {
        let mut prefixes: Vec<Vec<u32>> = Vec::new();
        for t in options.iter().filter(|t| t.len() > depth) {
            if !prefixes.iter().any(|p| p[..] == t[..depth]) {
                prefixes.push(t[..depth].to_vec());
            }
        }
        let mut batch_cache = if prefixes.len() == 1 { cache.clone() } else { cache.repeat_batch(prefixes.len())? };
        let logits = model.transformer.forward(&prefixes, &mut batch_cache, &LogitsAt::Last)?;
        let rows: Vec<Vec<f64>> = (0..prefixes.len())
            .map(|i| Ok(log_softmax(&logits.i((i, 0))?.to_vec1::<f32>()?)))
            .collect::<Result<_>>()?;
        for (i, t) in options.iter().enumerate().filter(|(_, t)| t.len() > depth) {
            let row = prefixes.iter().position(|p| p[..] == t[..depth]).expect("collected above");
            out[i] += rows[row][t[depth] as usize];
        }
    }
    Ok(out)
}

/// Probabilities renormalised over the options, and the raw mass they had together.
pub fn normalise(logprobs: &[f64]) -> (Vec<f64>, f64) {
    let max = logprobs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = logprobs.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = w.iter().sum();
    let mass = logprobs.iter().map(|l| l.exp()).sum();
    (w.iter().map(|x| x / sum).collect(), mass)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_matches_a_hand_computation() {
        let lp = log_softmax(&[1.0, 2.0, 3.0]);
        let z = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        for (i, v) in lp.iter().enumerate() {
            assert!((v - ((i + 1) as f64 - z)).abs() < 1e-12);
        }
        let (p, mass) = normalise(&[(0.2f64).ln(), (0.3f64).ln()]);
        assert!((p[0] - 0.4).abs() < 1e-12 && (mass - 0.5).abs() < 1e-12);
    }
}
