//! Sentence-completion tasks (`scenarios/tasks/*.toml`): ambiguous stems the model
//! completes, for the negativity-bias read-out.

use super::{info, invalid, read_toml, FileInfo};
use crate::error::Result;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskSpec {
    id: String,
    version: u32,
    description: String,
    source: String,
    licence: String,
    instruction: String,
    judge: Option<JudgeSpec>,
    stem: Vec<StemSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JudgeSpec {
    instruction: String,
    options: Vec<JudgeOptionSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JudgeOptionSpec {
    label: String,
    value: f64,
}

/// The model-as-judge read-out of a completion's valence: a fresh conversation asks
/// the model to classify the text (`{text}` in the instruction is replaced by it), and
/// the option probabilities at the answer position give an expected valence.
#[derive(Debug, Clone, PartialEq)]
pub struct Judge {
    pub instruction: String,
    /// (label, valence value), e.g. ("negative", -1).
    pub options: Vec<(String, f64)>,
}

impl Judge {
    pub fn prompt(&self, text: &str) -> String {
        self.instruction.replace("{text}", text)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StemSpec {
    id: String,
    text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stem {
    pub id: String,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct StemTask {
    pub info: FileInfo,
    pub description: String,
    pub instruction: String,
    pub judge: Option<Judge>,
    pub stems: Vec<Stem>,
}

impl StemTask {
    pub fn load(path: &Path) -> Result<Self> {
        let (spec, text): (TaskSpec, String) = read_toml(path)?;
        let mut stems: Vec<Stem> = Vec::new();
        for s in spec.stem {
            if stems.iter().any(|x| x.id == s.id) {
                return Err(invalid(
                    path,
                    &text,
                    &format!("\"{}\"", s.id),
                    format!("stem id '{}' is used twice", s.id),
                ));
            }
            stems.push(Stem {
                id: s.id,
                text: s.text,
            });
        }
        let judge = match spec.judge {
            None => None,
            Some(j) => {
                if !j.instruction.contains("{text}") {
                    return Err(invalid(
                        path,
                        &text,
                        "[judge]",
                        "the judge instruction must contain {text}, where the completion goes"
                            .to_string(),
                    ));
                }
                if j.options.len() < 2 {
                    return Err(invalid(
                        path,
                        &text,
                        "[judge]",
                        "the judge needs at least two options".to_string(),
                    ));
                }
                Some(Judge {
                    instruction: j.instruction,
                    options: j.options.into_iter().map(|o| (o.label, o.value)).collect(),
                })
            }
        };
        Ok(StemTask {
            info: info(
                path,
                &text,
                &spec.id,
                spec.version,
                &spec.source,
                &spec.licence,
            )?,
            description: spec.description,
            instruction: spec.instruction,
            judge,
            stems,
        })
    }
}
