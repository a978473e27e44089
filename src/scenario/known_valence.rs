//! Sentences of known valence (`scenarios/judges/known-valence.toml`), compiled into the
//! binary so that every run, and `affectbench judge` on runs made before the file
//! existed, checks its completion judge on the same set; records carry the file's sha256.

use super::{info, invalid, FileInfo};
use crate::error::{toml_error, Result};
use serde::Deserialize;
use std::path::Path;

/// The shipped set, as compiled in.
const SHIPPED: &str = include_str!("../../scenarios/judges/known-valence.toml");
const SHIPPED_PATH: &str = "scenarios/judges/known-valence.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetSpec {
    id: String,
    version: u32,
    description: String,
    source: String,
    licence: String,
    sentence: Vec<SentenceSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SentenceSpec {
    id: String,
    valence: i8,
    text: String,
}

/// One sentence and its known side (+1 positive, -1 negative).
#[derive(Debug, Clone, PartialEq)]
pub struct KnownSentence {
    pub id: String,
    pub valence: i8,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct KnownValence {
    pub info: FileInfo,
    pub description: String,
    pub sentences: Vec<KnownSentence>,
}

impl KnownValence {
    /// The shipped set.
    pub fn shipped() -> Self {
        Self::parse(Path::new(SHIPPED_PATH), SHIPPED)
            .expect("the shipped known-valence set is valid")
    }

    /// A set from its file text: valences +1 or -1, ids unique, both sides present.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let spec: SetSpec = toml::from_str(text).map_err(|e| toml_error(path, text, e))?;
        let mut sentences: Vec<KnownSentence> = Vec::new();
        for s in spec.sentence {
            if s.valence != 1 && s.valence != -1 {
                return Err(invalid(
                    path,
                    text,
                    &format!("id = \"{}\"", s.id),
                    format!(
                        "sentence '{}' has valence {}; use 1 (positive) or -1 (negative)",
                        s.id, s.valence
                    ),
                ));
            }
            if sentences.iter().any(|x| x.id == s.id) {
                return Err(invalid(
                    path,
                    text,
                    &format!("id = \"{}\"", s.id),
                    format!("sentence id '{}' is used twice", s.id),
                ));
            }
            sentences.push(KnownSentence {
                id: s.id,
                valence: s.valence,
                text: s.text,
            });
        }
        if !(sentences.iter().any(|s| s.valence > 0) && sentences.iter().any(|s| s.valence < 0)) {
            return Err(invalid(path, text, "sentence", "a known-valence set needs positive and negative sentences, so a judge that always says one side cannot pass".into()));
        }
        Ok(KnownValence {
            info: info(
                path,
                text,
                &spec.id,
                spec.version,
                &spec.source,
                &spec.licence,
            )?,
            description: spec.description,
            sentences,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_set_is_balanced_and_sixty_sentences() {
        let set = KnownValence::shipped();
        assert_eq!(set.sentences.len(), 60);
        assert_eq!(set.sentences.iter().filter(|s| s.valence > 0).count(), 30);
    }

    #[test]
    fn a_valence_other_than_plus_or_minus_one_is_refused_with_its_line() {
        let text = "id = \"x\"\nversion = 1\ndescription = \"d\"\nsource = \"s\"\nlicence = \"CC0-1.0\"\n[[sentence]]\nid = \"a\"\nvalence = 1\ntext = \"good\"\n[[sentence]]\nid = \"b\"\nvalence = 0\ntext = \"meh\"\n";
        let e = KnownValence::parse(Path::new("k.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("k.toml") && e.contains("valence 0"), "{e}");
    }
}
