//! Seeded sampling: temperature, top-k, top-p and min-p over one position's logits.
//!
//! Randomness comes from one ChaCha stream per sequence (`crate::rng::Stream`), seeded from
//! (run seed, stream name), so a sequence's tokens never depend on what else is computed beside it, on batch
//! size, on thread count or on order. Temperature 0 is greedy and is recorded as such.

use crate::error::{Error, Result};
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

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
        Self {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            min_p: None,
        }
    }
}

/// What actually runs: greedy, or a filtered, temperature-scaled draw.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Sampling {
    Greedy,
    Sample {
        temperature: f32,
        top_k: Option<usize>,
        top_p: Option<f32>,
        min_p: Option<f32>,
    },
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
            return Err(Error::Sampling(format!(
                "temperature must be >= 0, got {t}"
            )));
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
        Ok(Sampling::Sample {
            temperature: t,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
        })
    }
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
    let (mut p, sum) = softmax_weights(logits, temperature);
    p.iter_mut().for_each(|x| *x /= sum);
    p
}

/// exp((logit - max) / temperature) per token, and their sum (8 lanes by position, then
/// pairwise): the unnormalised softmax. Written lane-wise with `exp_nonpositive` so it
/// vectorises; with Gemma's 262,144-token vocabulary libm's scalar exp made sampling
/// half of a 32-row decode step.
pub fn softmax_weights(logits: &[f32], temperature: f32) -> (Vec<f64>, f64) {
    let mut p = vec![0f64; logits.len()];
    let sum = exp_weights::<true>(logits, 1.0 / temperature as f64, max_logit(logits), &mut p);
    (p, sum)
}

/// ln(sum_i exp(logit_i)), by the same arithmetic as `softmax_weights` at temperature 1,
/// without keeping the weights (log-softmax needs only this).
pub fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = max_logit(logits);
    exp_weights::<false>(logits, 1.0, max, &mut []).ln() + max
}

fn max_logit(logits: &[f32]) -> f64 {
    logits
        .iter()
        .fold(f32::NEG_INFINITY, |m, &l| if l > m { l } else { m }) as f64
}

/// Sum of exp((logit - max) * inv_t) in 8 lanes by position, then pairwise; with STORE
/// each term is also written to `out` (same length as `logits`).
fn exp_weights<const STORE: bool>(logits: &[f32], inv_t: f64, max: f64, out: &mut [f64]) -> f64 {
    let mut lanes = [0f64; 8];
    // Without STORE the terms go to a scratch block that is overwritten each step.
    let mut scratch = [0f64; 8];
    let whole = logits.len() / 8 * 8;
    for (c, l) in logits[..whole].chunks_exact(8).enumerate() {
        let o: &mut [f64; 8] = if STORE {
            (&mut out[c * 8..c * 8 + 8]).try_into().expect("8 slots")
        } else {
            &mut scratch
        };
        // Whole 8-lane steps, so the loop vectorises.
        for k in 0..8 {
            o[k] = exp_nonpositive((l[k] as f64 - max) * inv_t);
            lanes[k] += o[k];
        }
    }
    for (k, &x) in logits[whole..].iter().enumerate() {
        let w = exp_nonpositive((x as f64 - max) * inv_t);
        if STORE {
            out[whole + k] = w;
        }
        lanes[k] += w;
    }
    ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6]))
        + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]))
}

/// e^x for x <= 0 in f64 (0 below -708), to a few ulp: x = n ln2 + r, |r| <= ln2/2, e^r
/// by its Taylor polynomial to degree 13, 2^n from the exponent bits. Plain arithmetic,
/// so the compiler vectorises the loops that call it, and deterministic.
#[inline]
pub fn exp_nonpositive(x: f64) -> f64 {
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52: adding it rounds to an integer
    let x = if x < -708.0 { -708.0 } else { x };
    let n = (x * std::f64::consts::LOG2_E + ROUND) - ROUND;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut p: f64 = 1.0 / 6_227_020_800.0; // 1/13!
    for c in [
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p.mul_add(r, c);
    }
    // 2^n from the bits of n + 1023 held in a double's mantissa (n in [-1022, 0]).
    let biased = (n + 1023.0 + 4_503_599_627_370_496.0).to_bits() & 0xF_FFFF_FFFF_FFFF;
    p * f64::from_bits(biased << 52)
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
        Sampling::Sample {
            temperature,
            top_k,
            top_p,
            min_p,
        } => (temperature, top_k, top_p, min_p),
    };
    if top_k.is_none() && top_p.is_none() && min_p.is_none() {
        // No filter: invert the cumulative distribution in token-id order (no sort of
        // the whole vocabulary per token), on the unnormalised weights with u scaled by
        // their sum (one pass fewer than normalising).
        let (weights, sum) = softmax_weights(logits, temperature);
        return inverse_cdf(&weights, rng.random::<f64>() * sum)
            .map(|i| i as u32)
            .unwrap_or_else(|| argmax(logits));
    }
    let probs = softmax(logits, temperature);
    // Candidates by descending probability; ties broken by token id for determinism.
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    let mut keep = order.len();
    if let Some(k) = top_k {
        keep = keep.min(k);
    }
    if let Some(mp) = min_p {
        let floor = probs[order[0]] * mp as f64;
        keep = keep.min(
            order
                .iter()
                .take_while(|&&i| probs[i] >= floor)
                .count()
                .max(1),
        );
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
    use crate::rng::Stream;

    #[test]
    fn temperature_zero_is_recorded_as_greedy() {
        let s = SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(s, Sampling::Greedy);
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"mode":"greedy"}"#);
    }

    #[test]
    fn invalid_settings_are_rejected() {
        assert!(SamplingParams {
            temperature: -1.0,
            ..Default::default()
        }
        .resolve()
        .is_err());
        assert!(SamplingParams {
            temperature: 1.0,
            top_p: Some(0.0),
            ..Default::default()
        }
        .resolve()
        .is_err());
    }

    #[test]
    fn same_seed_and_id_give_the_same_stream_and_ids_differ() {
        let a: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(Stream::Named("a").rng(1), |r, _| Some(r.random()))
            .collect();
        let b: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(Stream::Named("a").rng(1), |r, _| Some(r.random()))
            .collect();
        let c: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(Stream::Named("b").rng(1), |r, _| Some(r.random()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn sample_frequencies_match_the_softmax() {
        let logits = [1.0f32, 2.0, 0.5, -1.0];
        let s = Sampling::Sample {
            temperature: 0.7,
            top_k: None,
            top_p: None,
            min_p: None,
        };
        let expected = softmax(&logits, 0.7);
        let mut rng = Stream::Named("freq").rng(42);
        let n = 200_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[sample(&logits, &s, &mut rng) as usize] += 1;
        }
        for i in 0..4 {
            let f = counts[i] as f64 / n as f64;
            // 5 standard errors of a binomial proportion.
            let se = (expected[i] * (1.0 - expected[i]) / n as f64).sqrt();
            assert!(
                (f - expected[i]).abs() < 5.0 * se + 1e-4,
                "token {i}: {f} vs {}",
                expected[i]
            );
        }
    }

    #[test]
    fn exp_matches_libm() {
        // Down to -700 (below -708 the clamp rules and weights are < 1e-307 anyway).
        for i in 0..19_600 {
            let x = -(i as f64) * 0.0357;
            let (ours, libm) = (exp_nonpositive(x), x.exp());
            assert!(
                (ours - libm).abs() <= 8.0 * f64::EPSILON * libm,
                "{x}: {ours} vs {libm}"
            );
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1000.0) < 1e-300);
    }

    #[test]
    fn top_k_and_min_p_restrict_candidates() {
        let logits = [5.0f32, 4.9, 0.0, -3.0];
        let mut rng = Stream::Named("k").rng(3);
        let k2 = Sampling::Sample {
            temperature: 1.0,
            top_k: Some(2),
            top_p: None,
            min_p: None,
        };
        let mp = Sampling::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            min_p: Some(0.5),
        };
        for _ in 0..2000 {
            assert!(sample(&logits, &k2, &mut rng) < 2);
            assert!(sample(&logits, &mp, &mut rng) < 2);
        }
    }
}
