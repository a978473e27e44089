//! Induction files (`scenarios/inductions/*.toml`, one emotion each) and regulation files
//! (`scenarios/regulations/*.toml`, one strategy each). A variant is either a single
//! `text` (an imagery script, presented as one user turn) or a list of `turns`, for
//! protocols whose conversation grows turn by turn with generated assistant replies.

use super::{info, invalid, read_toml, FileInfo};
use crate::error::Result;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InductionSpec {
    id: String,
    version: u32,
    emotion: String,
    description: String,
    source: String,
    licence: String,
    #[serde(default)]
    variant: Vec<VariantSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegulationSpec {
    id: String,
    version: u32,
    strategy: String,
    description: String,
    source: String,
    licence: String,
    #[serde(default)]
    variant: Vec<VariantSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VariantSpec {
    id: String,
    text: Option<String>,
    turns: Option<Vec<TurnSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TurnSpec {
    role: String,
    text: Option<String>,
    /// For assistant turns: generate up to this many tokens instead of a fixed text.
    generate: Option<usize>,
}

/// One turn of an induction or regulation.
#[derive(Debug, Clone, PartialEq)]
pub enum Turn {
    User(String),
    Assistant(String),
    /// The model's own reply, up to this many tokens.
    AssistantGenerated {
        max_tokens: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub id: String,
    pub turns: Vec<Turn>,
    /// True for a single imagery text (followed by the study's acknowledgement).
    pub is_text: bool,
}

#[derive(Debug, Clone)]
pub struct Induction {
    pub info: FileInfo,
    pub emotion: String,
    pub description: String,
    pub variants: Vec<Variant>,
}

#[derive(Debug, Clone)]
pub struct Regulation {
    pub info: FileInfo,
    pub strategy: String,
    pub description: String,
    pub variants: Vec<Variant>,
}

fn variants(path: &Path, text: &str, specs: Vec<VariantSpec>) -> Result<Vec<Variant>> {
    let mut out: Vec<Variant> = Vec::new();
    for v in specs {
        let at = format!("\"{}\"", v.id);
        if out.iter().any(|o| o.id == v.id) {
            return Err(invalid(
                path,
                text,
                &at,
                format!("variant id '{}' is used twice", v.id),
            ));
        }
        let (turns, is_text) = match (v.text, v.turns) {
            (Some(t), None) => {
                if t.trim().is_empty() {
                    return Err(invalid(
                        path,
                        text,
                        &at,
                        format!("variant '{}' has an empty text", v.id),
                    ));
                }
                (vec![Turn::User(t.trim().to_string())], true)
            }
            (None, Some(turns)) => {
                let mut out_turns = Vec::new();
                for t in turns {
                    out_turns.push(match (t.role.as_str(), t.text, t.generate) {
                        ("user", Some(x), None) => Turn::User(x),
                        ("assistant", Some(x), None) => Turn::Assistant(x),
                        ("assistant", None, Some(n)) if n > 0 => Turn::AssistantGenerated { max_tokens: n },
                        (role, _, _) => {
                            return Err(invalid(path, text, &at, format!(
                                "variant '{}': a turn with role '{role}' needs `text` (user or assistant) or `generate = N` (assistant only), not both",
                                v.id
                            )))
                        }
                    });
                }
                if !matches!(out_turns.first(), Some(Turn::User(_))) {
                    return Err(invalid(
                        path,
                        text,
                        &at,
                        format!("variant '{}': the first turn must be a user turn", v.id),
                    ));
                }
                (out_turns, false)
            }
            _ => {
                return Err(invalid(
                    path,
                    text,
                    &at,
                    format!("variant '{}' needs exactly one of `text` or `turns`", v.id),
                ))
            }
        };
        out.push(Variant {
            id: v.id,
            turns,
            is_text,
        });
    }
    Ok(out)
}

impl Induction {
    pub fn load(path: &Path) -> Result<Self> {
        let (spec, text): (InductionSpec, String) = read_toml(path)?;
        super::check_plain_name(path, &text, "emotion", &spec.emotion)?;
        let variants = variants(path, &text, spec.variant)?;
        if variants.is_empty() {
            return Err(invalid(
                path,
                &text,
                "emotion",
                format!("induction '{}' has no [[variant]]", spec.emotion),
            ));
        }
        Ok(Induction {
            info: info(
                path,
                &text,
                &spec.id,
                spec.version,
                &spec.source,
                &spec.licence,
            )?,
            emotion: spec.emotion,
            description: spec.description,
            variants,
        })
    }
}

impl Regulation {
    pub fn load(path: &Path) -> Result<Self> {
        let (spec, text): (RegulationSpec, String) = read_toml(path)?;
        super::check_plain_name(path, &text, "strategy", &spec.strategy)?;
        let variants = variants(path, &text, spec.variant)?;
        if variants.is_empty() && spec.strategy != "none" {
            return Err(invalid(
                path,
                &text,
                "strategy",
                format!("regulation '{}' has no [[variant]]", spec.strategy),
            ));
        }
        Ok(Regulation {
            info: info(
                path,
                &text,
                &spec.id,
                spec.version,
                &spec.source,
                &spec.licence,
            )?,
            strategy: spec.strategy,
            description: spec.description,
            variants,
        })
    }
}
