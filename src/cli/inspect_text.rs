//! The terminal rendering of `models inspect`: the model's facts, a table of ggml type x
//! kernel, and every exception by name.

use affectbench::model::inspect::Inspection;
use std::fmt::Write;

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

pub fn render(r: &Inspection, all_tensors: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "file          {} ({})", r.path, mb(r.file_bytes));
    let _ = writeln!(out, "architecture  {}", r.architecture);
    match &r.config {
        Ok(c) => {
            let _ = writeln!(
                out,
                "shape         {} layers, d_model {}, {} heads ({} kv), head dim {}, vocab {}, context {}",
                c.layers, c.d_model, c.heads, c.kv_heads, c.head_dim, c.vocab, c.context
            );
            let _ = writeln!(
                out,
                "rope          base {}, scaling: {}",
                c.rope_base, c.rope_scaling
            );
            if let Some(w) = c.sliding_window {
                let _ = writeln!(out, "sliding       window {w}");
            }
            if let Some((attn, last)) = c.softcaps {
                let _ = writeln!(
                    out,
                    "soft caps     attention {}, final logits {}",
                    attn.map_or("none".into(), |c| c.to_string()),
                    last.map_or("none".into(), |c| c.to_string())
                );
            }
        }
        Err(e) => {
            let _ = writeln!(out, "CANNOT RUN    {e}");
        }
    }
    match &r.tokenizer {
        Ok(t) => {
            let _ = writeln!(out, "tokenizer     {t}");
        }
        Err(e) => {
            let _ = writeln!(out, "TOKENIZER     cannot be built: {e}");
        }
    }
    let _ = writeln!(
        out,
        "chat template {}",
        r.chat_template
            .as_deref()
            .unwrap_or("none in the file (give one in a registry entry)")
    );
    let _ = writeln!(out, "parameters    {:.3} B", r.parameters as f64 / 1e9);
    let _ = writeln!(out, "\ntensors  size        type    kernel");
    for ((ty, kernel), (n, bytes)) in r.by_type_and_kernel() {
        let _ = writeln!(out, "{n:>7}  {:>10}  {ty:<6}  {kernel}", mb(bytes));
    }
    let exceptions = r.exceptions();
    if exceptions.is_empty() {
        let _ = writeln!(
            out,
            "\nevery matrix runs on the packed int8 kernels; every tensor is read"
        );
    } else {
        let _ = writeln!(out, "\nnot packed, or not read:");
        for t in exceptions {
            let _ = writeln!(
                out,
                "  {} {:?} {}: {}",
                t.name, t.shape, t.ggml_type, t.kernel
            );
        }
    }
    if all_tensors {
        let _ = writeln!(out, "\nname  shape  type  role  kernel");
        for t in &r.tensors {
            let _ = writeln!(
                out,
                "{}  {:?}  {}  {}  {}",
                t.name, t.shape, t.ggml_type, t.role, t.kernel
            );
        }
    }
    out
}
