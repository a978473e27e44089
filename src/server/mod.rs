//! OpenAI-compatible servers (vLLM, SGLang, llama.cpp's server, Ollama) as models: the
//! spec that names one (`endpoint`) and the client that talks to it (`client`). Issue
//! 30 builds the study runner's use of them on these.

pub mod client;
pub mod endpoint;
