//! CPU kernels the project owns. `packed` holds the weight format every GGUF quant type we
//! load is converted into; `int8_matmul` multiplies activations by it; `attention` is the
//! fused causal attention over the segmented KV cache; `activation` the gated
//! feed-forward activation.
//!
//! Why our own kernels: candle 0.11's CPU quantized matmul has no SIMD path for Q4_1 or
//! Q5_0, and its AVX-512 VNNI repack needs k % 256 == 0, which SmolLM2 (d = 576) fails, so
//! SmolLM2 Q4_1 ran at about a third of llama.cpp's decode speed.

pub mod activation;
pub mod attention;
pub mod int8_matmul;
pub mod packed;
