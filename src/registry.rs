//! The model registry (`models/registry.toml`): which models `--model NAME` can name, where
//! each file can be fetched from, and the sha256 it must have.
//!
//! Two layers, as in candle's configs: `RegistrySpec`/`ModelSpec` mirror the file (serde,
//! unknown fields rejected) and are validated once into `Registry`/`ModelEntry`.

use crate::error::{toml_error, Error, IoContext, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The registry shipped with the crate, used when no file is given.
pub const BUILTIN_REGISTRY: &str = include_str!("../models/registry.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistrySpec {
    default: String,
    model: Vec<ModelSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSpec {
    name: String,
    description: String,
    architecture: String,
    file_name: String,
    sha256: String,
    size: u64,
    licence: String,
    hf: Option<HfSource>,
    #[serde(default)]
    pypi: Vec<PypiPart>,
    chat_template: Option<String>,
}

/// A file on the Hugging Face hub.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HfSource {
    pub repo: String,
    pub file: String,
    pub revision: String,
}

/// One part of a file shipped inside a PyPI wheel; parts are concatenated in order.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PypiPart {
    pub package: String,
    pub version: String,
    /// Path of the part inside the wheel.
    pub member: String,
}

/// A validated registry entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEntry {
    pub name: String,
    pub description: String,
    pub architecture: String,
    pub file_name: String,
    pub sha256: String,
    pub size: u64,
    pub licence: String,
    pub hf: Option<HfSource>,
    pub pypi: Vec<PypiPart>,
    pub chat_template: Option<String>,
}

/// All registry entries plus the default model's name.
#[derive(Debug, Clone)]
pub struct Registry {
    pub default: String,
    pub models: Vec<ModelEntry>,
}

impl Registry {
    /// The registry compiled into the binary.
    pub fn builtin() -> Self {
        Self::parse(Path::new("models/registry.toml"), BUILTIN_REGISTRY)
            .expect("the built-in registry is validated by the test suite")
    }

    /// Reads a registry file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_path(path)?;
        Self::parse(path, &text)
    }

    /// Parses and validates registry text; errors name `path` and the line.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let spec: RegistrySpec = toml::from_str(text).map_err(|e| toml_error(path, text, e))?;
        let line_of = |needle: &str| {
            text.lines()
                .position(|l| l.contains(needle))
                .map(|i| i + 1)
                .unwrap_or(0)
        };
        let bad = |name: &str, message: String| Error::DataFile {
            path: path.to_path_buf(),
            line: line_of(&format!("\"{name}\"")),
            message,
        };
        let mut models = Vec::new();
        for m in spec.model {
            if crate::arch::find(&m.architecture).is_none() {
                return Err(bad(
                    &m.name,
                    format!(
                        "model '{}': architecture '{}' is not one of {}",
                        m.name,
                        m.architecture,
                        crate::arch::supported_names()
                    ),
                ));
            }
            // Both become path components inside the cache: a separator or `..` would
            // let an entry read or write outside it.
            for (field, value) in [("name", &m.name), ("file_name", &m.file_name)] {
                if !is_plain_file_name(value) {
                    return Err(bad(
                        &m.name,
                        format!("model '{}': {field} '{value}' must be a plain file name (no '/', '\\', '..' or leading '.')", m.name),
                    ));
                }
            }
            if m.sha256.len() != 64 || !m.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad(
                    &m.name,
                    format!("model '{}': sha256 must be 64 hex digits", m.name),
                ));
            }
            if m.hf.is_none() && m.pypi.is_empty() {
                return Err(bad(
                    &m.name,
                    format!("model '{}': give at least one source (hf or pypi)", m.name),
                ));
            }
            if models.iter().any(|e: &ModelEntry| e.name == m.name) {
                return Err(bad(&m.name, format!("model '{}' is listed twice", m.name)));
            }
            models.push(ModelEntry {
                name: m.name,
                description: m.description,
                architecture: m.architecture,
                file_name: m.file_name,
                sha256: m.sha256.to_ascii_lowercase(),
                size: m.size,
                licence: m.licence,
                hf: m.hf,
                pypi: m.pypi,
                chat_template: m.chat_template,
            });
        }
        if !models.iter().any(|m| m.name == spec.default) {
            return Err(Error::DataFile {
                path: path.to_path_buf(),
                line: line_of("default"),
                message: format!("default model '{}' has no [[model]] entry", spec.default),
            });
        }
        Ok(Registry {
            default: spec.default,
            models,
        })
    }

    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.name == name)
    }

    pub fn names(&self) -> String {
        self.models
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A name that stays one path component: no separators, no `.`/`..`, no hidden file.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0']) && name != ".."
}

/// What a `--model` argument points at.
// A handful exist per run, so the registry entry's size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ModelRef {
    /// A registry entry (the file lives in the cache).
    Registry(ModelEntry),
    /// A local `.gguf` file.
    GgufFile(PathBuf),
    /// A Hugging Face-style directory: config.json, tokenizer.json, *.safetensors.
    SafetensorsDir(PathBuf),
}

impl ModelRef {
    /// Resolves a registry name, a `.gguf` path or a safetensors directory.
    pub fn resolve(registry: &Registry, arg: &str) -> Result<Self> {
        if let Some(entry) = registry.get(arg) {
            return Ok(ModelRef::Registry(entry.clone()));
        }
        let path = PathBuf::from(arg);
        if path.is_file() && path.extension().is_some_and(|e| e == "gguf") {
            return Ok(ModelRef::GgufFile(path));
        }
        if path.is_dir() && path.join("config.json").is_file() {
            return Ok(ModelRef::SafetensorsDir(path));
        }
        Err(Error::UnknownModel {
            name: arg.to_string(),
            known: registry.names(),
        })
    }

    /// What to do about a model with no chat template, for the error that refuses it.
    pub fn missing_template_fix(&self) -> String {
        match self {
            ModelRef::Registry(e) => format!(
                "add chat_template to the entry '{}' in a registry file given with --registry",
                e.name
            ),
            ModelRef::GgufFile(p) => format!(
                "{} has no tokenizer.chat_template in its metadata (an instruct model's GGUF \
                 normally has one: llama.cpp's convert_hf_to_gguf.py copies it from \
                 tokenizer_config.json); use a file converted with its template, or the \
                 Hugging Face directory itself",
                p.display()
            ),
            ModelRef::SafetensorsDir(d) => format!(
                "{} has no chat_template in tokenizer_config.json and no chat_template.jinja; \
                 put the model's template in one of them",
                d.display()
            ),
        }
    }

    /// A short label for logs and output directories.
    pub fn label(&self) -> String {
        match self {
            ModelRef::Registry(e) => e.name.clone(),
            ModelRef::GgufFile(p) => p
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_else(|| p.display().to_string()),
            // A directory has no extension to drop: its name is whole ("Qwen2.5-0.5B").
            ModelRef::SafetensorsDir(p) => p
                .file_name()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_else(|| p.display().to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_keep_a_directorys_whole_name_and_drop_a_files_extension() {
        let dir = ModelRef::SafetensorsDir(PathBuf::from("/models/Qwen2.5-0.5B-Instruct"));
        assert_eq!(dir.label(), "Qwen2.5-0.5B-Instruct");
        let gguf = ModelRef::GgufFile(PathBuf::from("/m/Llama-3.1-8B-Instruct.Q4_K_M.gguf"));
        assert_eq!(gguf.label(), "Llama-3.1-8B-Instruct.Q4_K_M");
    }
}
