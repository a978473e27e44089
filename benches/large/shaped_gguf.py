"""Writes a random-weight GGUF shaped like a real large model, to measure load time, memory
and speed at the sizes studies use without the real weights (no model hub here). The
tensors have the real names, shapes and Q4_K_M quant mix (Q4_K, with Q6_K for attn_v and
ffn_down in the layers llama.cpp's Q4_K_M gives more bits, and for the output layer); the
blocks hold random quants with small scales, so the arithmetic is exactly the real
model's work but the text is noise. The tokenizer is the real one, copied from
llama.cpp's vocabulary-only GGUF of the family (tests/common fetches those). The real
files carry a chat template and studies need one: the Qwen vocabulary file has its own;
for Llama 3, whose vocabulary file has none, the script writes a short template of Llama
3's turn format (header tokens, blank line, text, <|eot_id|>), not Meta's full template
with its tool-calling branches.

    python benches/large/shaped_gguf.py llama3.1-8b VOCAB_DIR out.gguf
    python benches/large/shaped_gguf.py qwen2.5-14b VOCAB_DIR out.gguf
    python benches/large/shaped_gguf.py llama3.1-8b VOCAB_DIR out.gguf iq4_xs

The optional last argument is the quant mix: q4_k_m (the default) or iq4_xs (every
matrix IQ4_XS but the output layer, Q6_K).

Needs numpy and gguf (pip install numpy gguf). Not committed: generated on demand.
"""
import sys

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader, GGUFValueType, GGUFWriter

SHAPES = {
    # Llama-3.1-8B-Instruct: llama-bpe tokenizer, rope scaling as rope_freqs.weight.
    "llama3.1-8b": dict(arch="llama", vocab="llama-bpe", layers=32, d=4096, heads=32, kv=8,
                        ffn=14336, rope_base=500000.0, context=131072, bias=False,
                        rope_freqs=True),
    # Qwen2.5-14B-Instruct: qwen2 tokenizer, q/k/v biases.
    "qwen2.5-14b": dict(arch="qwen2", vocab="qwen2", layers=48, d=5120, heads=40, kv=8,
                        ffn=13824, rope_base=1000000.0, context=32768, bias=True,
                        rope_freqs=False),
}

BLOCK_BYTES = {Q.Q4_K: 144, Q.Q6_K: 210, Q.IQ4_XS: 136}
rng = np.random.default_rng(20261124)


def f16_bytes(n, lo, hi):
    return rng.uniform(lo, hi, size=n).astype(np.float16).view(np.uint8).reshape(n, 2)


def quant_rows(rows, cols, qtype):
    """Random blocks of `qtype` for a (rows, cols) matrix, as the raw bytes GGUF stores."""
    nb = rows * cols // 256
    blocks = rng.integers(0, 256, size=(nb, BLOCK_BYTES[qtype]), dtype=np.uint8)
    if qtype == Q.Q4_K:
        blocks[:, 0:2] = f16_bytes(nb, 1e-4, 3e-4)  # d
        blocks[:, 2:4] = f16_bytes(nb, 0.0, 2e-4)  # dmin
    elif qtype == Q.IQ4_XS:
        blocks[:, 0:2] = f16_bytes(nb, 2e-5, 6e-5)  # d
    else:
        blocks[:, 208:210] = f16_bytes(nb, 2e-4, 6e-4)  # d
    return blocks.reshape(rows, cols // 256 * BLOCK_BYTES[qtype])


def more_bits(i, n):
    """llama.cpp's Q4_K_M rule for attn_v and ffn_down."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def copy_tokenizer(w, vocab_path):
    r = GGUFReader(vocab_path)
    for key, field in r.fields.items():
        if not key.startswith("tokenizer."):
            continue
        types = field.types
        if types[0] == GGUFValueType.ARRAY:
            sub = types[1]
            if sub == GGUFValueType.STRING:
                values = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
            else:
                values = [field.parts[i].tolist()[0] for i in field.data]
            w.add_key_value(key, values, GGUFValueType.ARRAY, sub_type=sub)
        elif types[0] == GGUFValueType.STRING:
            w.add_key_value(key, bytes(field.parts[field.data[0]]).decode("utf-8"), types[0])
        else:
            w.add_key_value(key, field.parts[field.data[0]].tolist()[0], types[0])
    return len(r.fields["tokenizer.ggml.tokens"].data), "tokenizer.chat_template" in r.fields


# Llama 3's turn format: every message under a role header, ended by <|eot_id|>.
LLAMA3_TURNS = (
    "{{- bos_token }}"
    "{%- for m in messages %}"
    "<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def main():
    name, vocab_dir, out = sys.argv[1:4]
    mix = sys.argv[4] if len(sys.argv) > 4 else "q4_k_m"
    if mix not in ("q4_k_m", "iq4_xs"):
        sys.exit(f"unknown quant mix {mix!r}: q4_k_m or iq4_xs")
    # The bulk type, and the one of attn_v/ffn_down in llama.cpp's "more bits" layers.
    bulk = Q.Q4_K if mix == "q4_k_m" else Q.IQ4_XS
    s = SHAPES[name]
    a, n, d, hd = s["arch"], s["layers"], s["d"], s["d"] // s["heads"]
    w = GGUFWriter(out, a)
    w.add_name(f"random weights shaped like {name}")
    vocab, has_template = copy_tokenizer(w, f"{vocab_dir}/ggml-vocab-{s['vocab']}.gguf")
    if not has_template and s["vocab"] == "llama-bpe":
        w.add_chat_template(LLAMA3_TURNS)
    w.add_block_count(n)
    w.add_context_length(s["context"])
    w.add_embedding_length(d)
    w.add_feed_forward_length(s["ffn"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv"])
    w.add_rope_freq_base(s["rope_base"])
    w.add_rope_dimension_count(hd)
    w.add_layer_norm_rms_eps(1e-5)
    ones = lambda k: np.ones(k, dtype=np.float32)
    w.add_tensor("token_embd.weight", quant_rows(vocab, d, bulk), raw_dtype=bulk)
    w.add_tensor("output_norm.weight", ones(d))
    w.add_tensor("output.weight", quant_rows(vocab, d, Q.Q6_K), raw_dtype=Q.Q6_K)
    if s["rope_freqs"]:
        w.add_tensor("rope_freqs.weight", np.linspace(1.0, 8.0, hd // 2, dtype=np.float32))
    kvd = s["kv"] * hd
    for i in range(n):
        p = f"blk.{i}."
        v_type = Q.Q6_K if more_bits(i, n) and mix == "q4_k_m" else bulk
        w.add_tensor(p + "attn_norm.weight", ones(d))
        w.add_tensor(p + "attn_q.weight", quant_rows(d, d, bulk), raw_dtype=bulk)
        w.add_tensor(p + "attn_k.weight", quant_rows(kvd, d, bulk), raw_dtype=bulk)
        w.add_tensor(p + "attn_v.weight", quant_rows(kvd, d, v_type), raw_dtype=v_type)
        if s["bias"]:
            for t, k in [("q", d), ("k", kvd), ("v", kvd)]:
                w.add_tensor(p + f"attn_{t}.bias", rng.uniform(-0.1, 0.1, k).astype(np.float32))
        w.add_tensor(p + "attn_output.weight", quant_rows(d, d, bulk), raw_dtype=bulk)
        w.add_tensor(p + "ffn_norm.weight", ones(d))
        w.add_tensor(p + "ffn_gate.weight", quant_rows(s["ffn"], d, bulk), raw_dtype=bulk)
        w.add_tensor(p + "ffn_up.weight", quant_rows(s["ffn"], d, bulk), raw_dtype=bulk)
        w.add_tensor(p + "ffn_down.weight", quant_rows(d, s["ffn"], v_type), raw_dtype=v_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()


if __name__ == "__main__":
    main()
