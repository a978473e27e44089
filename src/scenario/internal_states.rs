//! A study's requests on the model's internal states: `[capture]` (which blocks of the
//! residual stream to store for every item trial, for `affectbench probe`) and
//! `[[steering]]` (conditions that add a direction to the residual stream with strength
//! alpha and no affective text: a dose-response per instrument).
//!
//! Both are model-agnostic in the study file: blocks are numbers or a relative depth,
//! and a direction is a name looked up in the directions file given to `run` for each
//! model (written by `affectbench probe`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CaptureSpec {
    /// "all", or a list of block positions (0: the embeddings, n_layer: the last block).
    pub blocks: BlocksSpec,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum BlocksSpec {
    Named(String),
    Listed(Vec<usize>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SteeringSpec {
    pub direction: String,
    /// The block position to steer after, or
    pub block: Option<usize>,
    /// the relative depth (0..=1, rounded to a block of each model).
    pub depth: Option<f64>,
    pub alphas: Vec<f64>,
    pub instruments: Vec<String>,
    /// The text the steered conversations hold (default: none, as the baseline).
    pub induction: Option<String>,
}

/// Which blocks a run captures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureBlocks {
    /// 0..=n_layer: the embeddings and every block's output.
    All,
    Listed(Vec<usize>),
}

impl CaptureBlocks {
    /// The block positions for a model with `n_layer` blocks, or why they do not fit.
    pub fn resolve(&self, n_layer: usize) -> Result<Vec<usize>, String> {
        match self {
            CaptureBlocks::All => Ok((0..=n_layer).collect()),
            CaptureBlocks::Listed(list) => match list.iter().find(|&&b| b > n_layer) {
                Some(bad) => Err(format!(
                    "[capture] block {bad} is past this model's {n_layer} blocks (0..={n_layer})"
                )),
                None => Ok(list.clone()),
            },
        }
    }
}

/// Where a steering vector is added.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SteeringSite {
    Block(usize),
    /// A fraction of the model's depth.
    Depth(f64),
}

impl SteeringSite {
    /// The block position in a model with `n_layer` blocks.
    pub fn resolve(self, n_layer: usize) -> Result<usize, String> {
        match self {
            SteeringSite::Block(b) if b <= n_layer => Ok(b),
            SteeringSite::Block(b) => Err(format!(
                "[[steering]] block {b} is past this model's {n_layer} blocks (0..={n_layer})"
            )),
            SteeringSite::Depth(f) => Ok((f * n_layer as f64).round() as usize),
        }
    }
}

/// A steered condition's intervention: `alpha` times the direction `direction` (from
/// the run's directions file for the model) added after the block `site` resolves to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionSteering {
    pub direction: String,
    pub site: SteeringSite,
    pub alpha: f64,
}

/// The name of a steered condition: `steer-anxiety@+2`.
pub fn steering_condition_name(direction: &str, alpha: f64) -> String {
    format!("steer-{direction}@{alpha:+}")
}

/// The validated `[capture]` table.
pub(super) fn capture_from_spec(spec: &CaptureSpec) -> Result<CaptureBlocks, String> {
    match &spec.blocks {
        BlocksSpec::Named(s) if s == "all" => Ok(CaptureBlocks::All),
        BlocksSpec::Named(s) => Err(format!(
            "[capture] blocks is \"{s}\"; use \"all\" or a list of block numbers such as [0, 8, 16]"
        )),
        BlocksSpec::Listed(l) if l.is_empty() => {
            Err("[capture] blocks is empty; use \"all\" or a list such as [0, 8, 16]".into())
        }
        BlocksSpec::Listed(l) => {
            let mut sorted = l.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != l.len() {
                return Err("[capture] blocks lists a block twice".into());
            }
            Ok(CaptureBlocks::Listed(sorted))
        }
    }
}

/// The validated site and alphas of one `[[steering]]` block.
pub(super) fn steering_from_spec(spec: &SteeringSpec) -> Result<(SteeringSite, Vec<f64>), String> {
    let site = match (spec.block, spec.depth) {
        (Some(b), None) => SteeringSite::Block(b),
        (None, Some(f)) if (0.0..=1.0).contains(&f) => SteeringSite::Depth(f),
        (None, Some(f)) => {
            return Err(format!(
                "[[steering]] depth is {f}; give a fraction of the model's depth between 0 and 1"
            ))
        }
        _ => {
            return Err(
                "[[steering]] needs exactly one of block (a block number) or depth (0..1)".into(),
            )
        }
    };
    if spec.alphas.is_empty() || spec.alphas.iter().any(|a| !a.is_finite()) {
        return Err("[[steering]] alphas must be a non-empty list of finite numbers".into());
    }
    let mut seen: Vec<f64> = Vec::new();
    for a in &spec.alphas {
        if seen.contains(a) {
            return Err(format!("[[steering]] alphas lists {a} twice"));
        }
        seen.push(*a);
    }
    if spec.direction.is_empty()
        || !spec
            .direction
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "[[steering]] direction '{}' must be a name of letters, digits, '-' or '_' (a direction in the file `affectbench probe` writes)",
            spec.direction
        ));
    }
    Ok((site, spec.alphas.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_and_blocks_resolve_per_model() {
        assert_eq!(SteeringSite::Depth(0.5).resolve(30), Ok(15));
        assert_eq!(SteeringSite::Depth(0.5).resolve(24), Ok(12));
        assert!(SteeringSite::Block(31).resolve(30).is_err());
        assert_eq!(CaptureBlocks::All.resolve(2), Ok(vec![0, 1, 2]));
        assert!(CaptureBlocks::Listed(vec![0, 5]).resolve(4).is_err());
        assert_eq!(steering_condition_name("anxiety", 2.0), "steer-anxiety@+2");
        assert_eq!(
            steering_condition_name("anxiety", -0.5),
            "steer-anxiety@-0.5"
        );
    }
}
