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
    stem: Vec<StemSpec>,
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
    pub stems: Vec<Stem>,
}

impl StemTask {
    pub fn load(path: &Path) -> Result<Self> {
        let (spec, text): (TaskSpec, String) = read_toml(path)?;
        let mut stems: Vec<Stem> = Vec::new();
        for s in spec.stem {
            if stems.iter().any(|x| x.id == s.id) {
                return Err(invalid(path, &text, &format!("\"{}\"", s.id), format!("stem id '{}' is used twice", s.id)));
            }
            stems.push(Stem { id: s.id, text: s.text });
        }
        Ok(StemTask { info: info(path, &text, &spec.id, spec.version, &spec.source, &spec.licence), description: spec.description, instruction: spec.instruction, stems })
    }
}
