//! Seeded sampling: temperature, top-k, top-p and min-p over one position's logits.
//!
//! Randomness comes from one ChaCha stream per sequence, seeded from (run seed, sequence
//! id), so a sequence's tokens never depend on what else is computed beside it, on batch
//! size, on thread count or on order. Temperature 0 is greedy and is recorded as such.

use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Sampling settings as requested.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { temperature: 0.0, top_k: None, top_p: None, min_p: None }
    }
}

/// What actually runs: greedy, or a filtered, temperature-scaled draw.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Sampling {
    Greedy,
    Sample { temperature: f32, top_k: Option<usize>, top_p: Option<f32>, min_p: Option<f32> },
}

impl SamplingParams {
    /// Validates and resolves; temperature 0 becomes `Greedy`.
    ///
    /// ```
    /// use affectbench::sampling::{Sampling, SamplingParams};
    /// let greedy = SamplingParams { temperature: 0.0, ..Default::default() }.resolve().unwrap();
    /// assert_eq!(greedy, Sampling::Greedy);
    /// assert!(SamplingParams { temperature: -0.5, ..Default::default() }.resolve().is_err());
    /// ```
    pub fn resolve(self) -> Result<Sampling> {
        let t = self.temperature;
        if !t.is_finite() || t < 0.0 {
            return Err(Error::Sampling(format!("temperature must be >= 0, got {t}")));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::Sampling(format!("top-p must be in (0, 1], got {p}")));
            }
        }
        if let Some(p) = self.min_p {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::Sampling(format!("min-p must be in [0, 1), got {p}")));
            }
        }
        if self.top_k == Some(0) {
            return Err(Error::Sampling("top-k must be at least 1".into()));
        }
        if t == 0.0 || self.top_k == Some(1) {
            return Ok(Sampling::Greedy);
        }
        Ok(Sampling::Sample { temperature: t, top_k: self.top_k, top_p: self.top_p, min_p: self.min_p })
    }
}

/// The RNG for one sequence: ChaCha20 seeded by sha256(run seed, sequence id).
///
/// ```
/// use rand::Rng;
/// let a: u64 = affectbench::sampling::sequence_rng(7, "trial-1").random();
/// let b: u64 = affectbench::sampling::sequence_rng(7, "trial-1").random();
/// assert_eq!(a, b);
/// ```
pub fn sequence_rng(run_seed: u64, sequence_id: &str) -> ChaCha20Rng {
    let mut h = Sha256::new();
    h.update(b"affectbench/sequence-rng/v1");
    h.update(run_seed.to_le_bytes());
    h.update(sequence_id.as_bytes());
    ChaCha20Rng::from_seed(h.finalize().into())
}

/// Index of the largest logit (the first one on ties).
///
/// ```
/// assert_eq!(affectbench::sampling::argmax(&[0.1, 2.0, 2.0, -1.0]), 1);
/// ```
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Softmax of logits / temperature, in f64 for a stable sum.
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f64> {
    let t = temperature as f64;
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut p: Vec<f64> = logits.iter().map(|&l| ((l as f64 - max) / t).exp()).collect();
    let sum: f64 = p.iter().sum();
    p.iter_mut().for_each(|x| *x /= sum);
    p
}

/// The first index whose cumulative probability exceeds `u` (in [0, 1)); None when
/// rounding leaves the total below `u`, so the caller chooses the fallback.
pub fn inverse_cdf(probs: &[f64], u: f64) -> Option<usize> {
    let mut cum = 0.0;
    probs.iter().position(|p| {
        cum += p;
        u < cum
    })
}

/// Picks the next token. Exactly one uniform draw is taken per sampled token, so streams
/// stay aligned however the filters change the candidate set.
pub fn sample(logits: &[f32], sampling: &Sampling, rng: &mut ChaCha20Rng) -> u32 {
    let (temperature, top_k, top_p, min_p) = match *sampling {
        Sampling::Greedy => return argmax(logits),
        Sampling::Sample { temperature, top_k, top_p, min_p } => (temperature, top_k, top_p, min_p),
    };
    let probs = softmax(logits, temperature);
    if top_k.is_none() && top_p.is_none() && min_p.is_none() {
        // No filter: invert the cumulative distribution in token-id order (no sort of
        // the whole vocabulary per token).
        return inverse_cdf(&probs, rng.random::<f64>()).map(|i| i as u32).unwrap_or_else(|| argmax(logits));
    }
    // Candidates by descending probability; ties broken by token id for determinism.
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    let mut keep = order.len();
    if let Some(k) = top_k {
        keep = keep.min(k);
    }
    if let Some(mp) = min_p {
        let floor = probs[order[0]] * mp as f64;
        keep = keep.min(order.iter().take_while(|&&i| probs[i] >= floor).count().max(1));
    }
    if let Some(tp) = top_p {
        let mut cum = 0.0;
        let mut n = 0;
        for &i in order.iter().take(keep) {
            cum += probs[i];
            n += 1;
            if cum >= tp as f64 {
                break;
            }
        }
        keep = n.max(1);
    }
    let kept = &order[..keep];
    let total: f64 = kept.iter().map(|&i| probs[i]).sum();
    let u: f64 = rng.random::<f64>() * total;
    let mut cum = 0.0;
    for &i in kept {
        cum += probs[i];
        if u < cum {
            return i as u32;
        }
    }
    *kept.last().expect("at least one candidate") as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_zero_is_recorded_as_greedy() {
        let s = SamplingParams { temperature: 0.0, ..Default::default() }.resolve().unwrap();
        assert_eq!(s, Sampling::Greedy);
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"mode":"greedy"}"#);
    }

    #[test]
    fn invalid_settings_are_rejected() {
        assert!(SamplingParams { temperature: -1.0, ..Default::default() }.resolve().is_err());
        assert!(SamplingParams { temperature: 1.0, top_p: Some(0.0), ..Default::default() }.resolve().is_err());
    }

    #[test]
    fn same_seed_and_id_give_the_same_stream_and_ids_differ() {
        let a: Vec<u64> = (0..4).map(|_| 0).scan(sequence_rng(1, "a"), |r, _| Some(r.random())).collect();
        let b: Vec<u64> = (0..4).map(|_| 0).scan(sequence_rng(1, "a"), |r, _| Some(r.random())).collect();
        let c: Vec<u64> = (0..4).map(|_| 0).scan(sequence_rng(1, "b"), |r, _| Some(r.random())).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn sample_frequencies_match_the_softmax() {
        let logits = [1.0f32, 2.0, 0.5, -1.0];
        let s = Sampling::Sample { temperature: 0.7, top_k: None, top_p: None, min_p: None };
        let expected = softmax(&logits, 0.7);
        let mut rng = sequence_rng(42, "freq");
        let n = 200_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[sample(&logits, &s, &mut rng) as usize] += 1;
        }
        for i in 0..4 {
            let f = counts[i] as f64 / n as f64;
            // 5 standard errors of a binomial proportion.
            let se = (expected[i] * (1.0 - expected[i]) / n as f64).sqrt();
            assert!((f - expected[i]).abs() < 5.0 * se + 1e-4, "token {i}: {f} vs {}", expected[i]);
        }
    }

    #[test]
    fn top_k_and_min_p_restrict_candidates() {
        let logits = [5.0f32, 4.9, 0.0, -3.0];
        let mut rng = sequence_rng(3, "k");
        let k2 = Sampling::Sample { temperature: 1.0, top_k: Some(2), top_p: None, min_p: None };
        let mp = Sampling::Sample { temperature: 1.0, top_k: None, top_p: None, min_p: Some(0.5) };
        for _ in 0..2000 {
            assert!(sample(&logits, &k2, &mut rng) < 2);
            assert!(sample(&logits, &mp, &mut rng) < 2);
        }
    }
}
