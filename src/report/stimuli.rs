//! The stimuli an arm's observations rest on, and the arm contrast with those stimuli
//! treated as a sample: each conversation's vignette, system prompt and regulation text
//! become crossed random factors (`stats::crossed`), so a difference carried by the few
//! texts a design happened to use is not mistaken for an effect of the condition.

use super::scores::CompletionScore;
use crate::stats::crossed::{self, CrossedFit, Observation};
use std::collections::BTreeSet;

/// The random factors of a scale-score contrast, in the order of `Levels`.
pub const SCALE_FACTORS: [&str; 3] = ["vignette", "system prompt", "regulation text"];

/// One conversation's level of each of `SCALE_FACTORS` (None where the factor does not
/// apply: a baseline conversation reads no vignette).
pub type Levels = [Option<String>; 3];

/// How many distinct stimuli an arm's observations rest on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StimulusCounts {
    pub vignettes: usize,
    pub system_prompts: usize,
    pub regulation_texts: usize,
}

impl StimulusCounts {
    pub fn of(levels: &[Levels]) -> StimulusCounts {
        let distinct = |f: usize| {
            levels
                .iter()
                .filter_map(|l| l[f].as_deref())
                .collect::<BTreeSet<_>>()
                .len()
        };
        StimulusCounts {
            vignettes: distinct(0),
            system_prompts: distinct(1),
            regulation_texts: distinct(2),
        }
    }

    /// "5 vignettes × 4 prompts" (the regulation texts where there are any), as tables
    /// print it beside an n.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let mut part = |n: usize, one: &str, many: &str| {
            if n > 0 {
                parts.push(format!("{n} {}", if n == 1 { one } else { many }));
            }
        };
        part(self.vignettes, "vignette", "vignettes");
        part(self.system_prompts, "prompt", "prompts");
        part(self.regulation_texts, "regulation text", "regulation texts");
        if parts.is_empty() {
            "no varied text".to_string()
        } else {
            parts.join(" × ")
        }
    }
}

/// Per factor (vignette, system prompt, regulation text), whether both arms show some
/// of the same levels: then the factor is crossed with the arms, not nested in them.
pub fn shared_factors(a: &[Levels], b: &[Levels]) -> [bool; 3] {
    let of = |ls: &[Levels], f: usize| -> BTreeSet<String> {
        ls.iter().filter_map(|l| l[f].clone()).collect()
    };
    [0, 1, 2].map(|f| !of(a, f).is_disjoint(&of(b, f)))
}

/// Arm a minus arm b with crossed random intercepts for the stimuli; None where the
/// model cannot be fitted (an empty arm, or too few observations).
pub fn crossed_contrast(a: (&[f64], &[Levels]), b: (&[f64], &[Levels])) -> Option<CrossedFit> {
    let mut observations = Vec::with_capacity(a.0.len() + b.0.len());
    for ((ys, levels), in_a) in [(a, true), (b, false)] {
        for (&y, l) in ys.iter().zip(levels) {
            observations.push(Observation {
                y,
                in_a,
                block: "",
                levels: l.iter().map(|v| v.as_deref()).collect(),
            });
        }
    }
    if observations.len() < 3 {
        return None;
    }
    crossed::fit(&SCALE_FACTORS, &observations)
}

/// The random factors of a completion contrast: completions of one conversation share
/// its prefix, and conversations share vignettes and system prompts.
pub const COMPLETION_FACTORS: [&str; 3] = ["conversation", "vignette", "system prompt"];

/// Completion valence, arm a minus arm b, with stems as fixed blocks and conversation,
/// vignette and system prompt as crossed random factors. `rows`: (valence, in arm a,
/// the completion).
pub fn crossed_completion_contrast<'a>(
    rows: impl IntoIterator<Item = (f64, bool, &'a CompletionScore)>,
) -> Option<CrossedFit> {
    let observations: Vec<Observation> = rows
        .into_iter()
        .map(|(y, in_a, c)| Observation {
            y,
            in_a,
            block: &c.stem,
            levels: vec![
                Some(c.conversation.as_str()),
                c.vignette.as_deref(),
                Some(c.system_prompt.as_str()),
            ],
        })
        .collect();
    if observations.len() < 3 {
        return None;
    }
    crossed::fit(&COMPLETION_FACTORS, &observations)
}

/// The distinct stimuli of a set of completions (their regulation texts are not
/// recorded per completion: 0).
pub fn completion_stimuli<'a>(
    rows: impl IntoIterator<Item = &'a CompletionScore>,
) -> StimulusCounts {
    let levels: Vec<Levels> = rows
        .into_iter()
        .map(|c| [c.vignette.clone(), Some(c.system_prompt.clone()), None])
        .collect();
    StimulusCounts::of(&levels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(vignette: Option<&str>, prompt: &str) -> Levels {
        [vignette.map(String::from), Some(prompt.to_string()), None]
    }

    #[test]
    fn counts_distinct_texts_and_describes_them() {
        let l = vec![
            levels(Some("anxiety/1"), "0"),
            levels(Some("anxiety/2"), "1"),
            levels(Some("anxiety/1"), "1"),
        ];
        let c = StimulusCounts::of(&l);
        assert_eq!(
            (c.vignettes, c.system_prompts, c.regulation_texts),
            (2, 2, 0)
        );
        assert_eq!(c.describe(), "2 vignettes × 2 prompts");
        assert_eq!(
            StimulusCounts::of(&[levels(None, "0")]).describe(),
            "1 prompt"
        );
    }

    #[test]
    fn a_vignette_effect_widens_the_interval_that_conversations_alone_would_give() {
        // Arm a: 4 vignettes, each with its own offset, 6 conversations each; arm b: the
        // baseline, no vignette. Counting conversations as independent gives a tight
        // interval; with vignettes as a sample the df fall towards vignettes - 1.
        let offsets = [2.0, -1.5, 1.0, -0.5];
        let mut ya = Vec::new();
        let mut la = Vec::new();
        for (v, off) in offsets.iter().enumerate() {
            for k in 0..6 {
                ya.push(5.0 + off + 0.1 * (k as f64 - 2.5));
                la.push(levels(Some(&format!("anxiety/{v}")), &(k % 2).to_string()));
            }
        }
        let yb: Vec<f64> = (0..12)
            .map(|k| 4.0 + 0.1 * (k as f64 % 6.0 - 2.5))
            .collect();
        let lb: Vec<Levels> = (0..12)
            .map(|k| levels(None, &(k % 2).to_string()))
            .collect();
        let fit = crossed_contrast((&ya, &la), (&yb, &lb)).expect("fits");
        assert!((fit.estimate - (ya.iter().sum::<f64>() / 24.0 - 4.0)).abs() < 1e-6);
        let vignette = fit
            .components
            .iter()
            .find(|c| c.factor == "vignette")
            .expect("vignette enters");
        assert_eq!(vignette.levels, 4);
        assert!(vignette.variance > 1.0, "{vignette:?}");
        assert!(fit.df < 5.0, "df {} should reflect 4 vignettes", fit.df);
    }
}
