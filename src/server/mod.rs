//! OpenAI-compatible servers (vLLM, SGLang, llama.cpp's server, Ollama) as models: the
//! client that talks to one (`client`) and the requests a study's trials make of it
//! (`model`). The spec that names one is `crate::endpoint`, apart so that the registry
//! can resolve it without depending on the model code this module uses.

pub mod client;
pub mod model;
