//! Lexicon valence of a completion, from the VADER lexicon (Hutto & Gilbert 2014; MIT;
//! shipped unmodified in `scenarios/lexicons/vader/` with its licence).
//!
//! The scorer is deliberately simple and documented, not VADER's full rule set: words
//! are lower-cased and stripped of surrounding punctuation; each word in the lexicon
//! contributes its mean human valence (-4..+4), multiplied by -0.74 when one of the three
//! words before it negates (the damping constant reported by Hutto & Gilbert); the sum s
//! is mapped to (-1, 1) as s / sqrt(s^2 + 15), the paper's normalisation. A completion
//! with no lexicon word scores 0.

use std::collections::HashMap;
use std::sync::OnceLock;

const LEXICON: &str = include_str!("../../scenarios/lexicons/vader/vader_lexicon.txt");
const NEGATION_SCALE: f64 = -0.74;
const NORMALISATION_ALPHA: f64 = 15.0;
const NEGATORS: &[&str] = &[
    "not", "no", "never", "none", "nobody", "nothing", "nowhere", "neither", "nor", "cannot",
    "without",
];

fn lexicon() -> &'static HashMap<&'static str, f64> {
    static MAP: OnceLock<HashMap<&'static str, f64>> = OnceLock::new();
    MAP.get_or_init(|| {
        LEXICON
            .lines()
            .filter_map(|line| {
                let mut cols = line.split('\t');
                let word = cols.next()?;
                let valence = cols.next()?.trim().parse().ok()?;
                Some((word, valence))
            })
            .collect()
    })
}

/// The number of distinct tokens in the shipped lexicon (7,506 for VADER 3.3.2, whose
/// 7,520 lines repeat a few tokens; the last line for a token wins).
pub fn lexicon_size() -> usize {
    lexicon().len()
}

fn is_negator(word: &str) -> bool {
    NEGATORS.contains(&word) || word.ends_with("n't")
}

/// Words as the scorer sees them: lower case, surrounding punctuation removed, curly
/// apostrophes made straight.
fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| w.replace('\u{2019}', "'").to_lowercase())
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric() && c != '\'')
                .trim_matches('\'')
                .to_string()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Lexicon valence in (-1, 1), and how many lexicon words it rests on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LexiconScore {
    pub valence: f64,
    pub matched: usize,
}

pub fn score(text: &str) -> LexiconScore {
    let lex = lexicon();
    let ws = words(text);
    let (mut sum, mut matched) = (0.0, 0);
    for (i, w) in ws.iter().enumerate() {
        if let Some(&v) = lex.get(w.as_str()) {
            let negated = ws[i.saturating_sub(3)..i].iter().any(|p| is_negator(p));
            sum += if negated { v * NEGATION_SCALE } else { v };
            matched += 1;
        }
    }
    LexiconScore {
        valence: sum / (sum * sum + NORMALISATION_ALPHA).sqrt(),
        matched,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_follow_the_lexicon_negation_and_normalisation() {
        assert_eq!(lexicon_size(), 7506);
        // "happy" is +2.7 in the lexicon: 2.7 / sqrt(2.7^2 + 15).
        let happy = score("I am happy.");
        assert!(
            (happy.valence - 2.7 / (2.7f64 * 2.7 + 15.0).sqrt()).abs() < 1e-12
                && happy.matched == 1
        );
        let not_happy = score("I am not happy");
        let s = 2.7 * NEGATION_SCALE;
        // "not" itself is not in the lexicon; "happy" is negated.
        assert!((not_happy.valence - s / (s * s + 15.0).sqrt()).abs() < 1e-12);
        assert!(score("I don't feel sad").valence > 0.0);
        assert!(score("Everything is terrible and I am miserable").valence < -0.5);
        assert_eq!(
            score("The table is brown."),
            LexiconScore {
                valence: 0.0,
                matched: 0
            }
        );
    }
}
