//! OpenAI-compatible servers (vLLM, SGLang, llama.cpp's server, Ollama) as models: the
//! spec that names one (`endpoint`), the client that talks to it (`client`), and the
//! requests a study's trials make of it (`model`).

pub mod client;
pub mod endpoint;
pub mod model;
