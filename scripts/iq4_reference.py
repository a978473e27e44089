"""Writes tests/data/iq4_reference.json: random IQ4_NL and IQ4_XS blocks and their values
as gguf-py (llama.cpp's Python package, `pip install gguf numpy`) dequantises them, an
independent reference for affectbench's IQ4 decoders.

Usage: python3 scripts/iq4_reference.py > tests/data/iq4_reference.json
"""
import importlib.metadata
import json
import sys

import gguf
import numpy as np
from gguf import quants
from gguf.constants import GGMLQuantizationType as T

rng = np.random.default_rng(20261203)


def blocks(qtype, n_blocks):
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    # A finite, moderate f16 scale d in the first two bytes (random bytes could be NaN),
    # negative for some blocks.
    d = (rng.uniform(0.01, 0.5, n_blocks) * rng.choice([-1, 1], n_blocks)).astype(np.float16)
    raw[:, 0:2] = d.view(np.uint8).reshape(n_blocks, 2)
    return raw


out = {"gguf_py": importlib.metadata.version("gguf"), "types": {}}
for name, qtype, rows, k in [("IQ4_NL", T.IQ4_NL, 3, 64), ("IQ4_XS", T.IQ4_XS, 3, 512)]:
    block_size, _ = gguf.GGML_QUANT_SIZES[qtype]
    raw = blocks(qtype, rows * k // block_size)
    values = quants.dequantize(raw.reshape(-1), qtype).astype(np.float32).reshape(-1)
    out["types"][name] = {
        "rows": rows,
        "k": k,
        "hex": raw.tobytes().hex(),
        "values": [float(v) for v in values],
    }
json.dump(out, sys.stdout)
sys.stdout.write("\n")
