//! Option scoring, the engine half of the choice read-out: the log-probability of every
//! response option at the answer position, from the model's logits. Multi-token labels ("100") are scored exactly, as
//! the sum of their tokens' log-probabilities, by extending a fork of the prompt's cache.

use crate::error::Result;
use crate::generate::extend_each;
use crate::model::{KvCache, Model};

/// log-softmax of one logit row, in f64 (the vectorised exp of the sampler).
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let lse = crate::sampling::log_sum_exp(logits);
    logits.iter().map(|&l| l as f64 - lse).collect()
}

/// log P(option tokens | prompt) for each option. `cache` holds the prompt and
/// `last_logits` are the logits at its final position.
pub fn option_logprobs(
    model: &Model,
    cache: &KvCache,
    last_logits: &[f32],
    options: &[Vec<u32>],
) -> Result<Vec<f64>> {
    Ok(
        option_logprobs_rows(model, &[(cache, last_logits, options)])?
            .pop()
            .expect("one row"),
    )
}

/// One prompt to score: its cache, the logits at its last position, and each option's
/// tokens.
pub type ScoringRow<'a> = (&'a KvCache, &'a [f32], &'a [Vec<u32>]);

/// `option_logprobs` for several prompts at once (e.g. a batch of items): multi-token
/// labels are scored depth by depth, and at depth d every distinct d-token label prefix
/// of every prompt is fed from that prompt's cache in one forward pass (rows of
/// different prompts and lengths together; the kernels are batch-invariant, so each
/// row equals its lone computation). Labels like " 1", which every tokenizer here splits
/// into two tokens, thus cost one pass per batch instead of one per item.
pub fn option_logprobs_rows(model: &Model, rows: &[ScoringRow<'_>]) -> Result<Vec<Vec<f64>>> {
    // An empty label (it tokenises to nothing) has no first token to score.
    if rows
        .iter()
        .any(|(_, _, options)| options.iter().any(|t| t.is_empty()))
    {
        return Err(crate::Error::Run(
            "an option label tokenises to no tokens; give every option a non-empty label".into(),
        ));
    }
    let mut out: Vec<Vec<f64>> = rows
        .iter()
        .map(|(_, logits, options)| {
            let first = log_softmax(logits);
            options.iter().map(|t| first[t[0] as usize]).collect()
        })
        .collect();
    let longest = rows
        .iter()
        .flat_map(|(_, _, o)| o.iter().map(|t| t.len()))
        .max()
        .unwrap_or(0);
    for depth in 1..longest {
        // (row, prefix) pairs, distinct within a row.
        let mut jobs: Vec<(usize, Vec<u32>)> = Vec::new();
        for (r, (_, _, options)) in rows.iter().enumerate() {
            for t in options.iter().filter(|t| t.len() > depth) {
                if !jobs.iter().any(|(jr, p)| *jr == r && p[..] == t[..depth]) {
                    jobs.push((r, t[..depth].to_vec()));
                }
            }
        }
        let prefixes: Vec<Vec<u32>> = jobs.iter().map(|(_, p)| p.clone()).collect();
        let caches: Vec<KvCache> = jobs.iter().map(|(r, _)| rows[*r].0.clone()).collect();
        let lps: Vec<Vec<f64>> = extend_each(model, caches, &prefixes)?
            .iter()
            .map(|(_, l)| log_softmax(l))
            .collect();
        for (r, (_, _, options)) in rows.iter().enumerate() {
            for (i, t) in options.iter().enumerate().filter(|(_, t)| t.len() > depth) {
                let j = jobs
                    .iter()
                    .position(|(jr, p)| *jr == r && p[..] == t[..depth])
                    .expect("collected above");
                out[r][i] += lps[j][t[depth] as usize];
            }
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
