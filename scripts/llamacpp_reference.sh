#!/usr/bin/env bash
# Regenerates tests/data/llamacpp_reference.json: writes the tiny GGUF models of every
# architecture (the parity test does, into target/tiny-gguf/), then asks llama.cpp
# (llama-cpp-python, in PEER_VENV, default /tmp/affectbench-peers; it compiles from
# source, ~17 min on 2 cores, once) for its logits and greedy tokens on them.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${PEER_VENV:-/tmp/affectbench-peers}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c "import llama_cpp, numpy" 2>/dev/null || "$VENV/bin/pip" install -q llama-cpp-python numpy
rm -rf target/tiny-gguf
# The test writes the files first; it fails on a stale fixture, which is why we are here.
cargo test --release -q --test llamacpp_parity >/dev/null 2>&1 || true
ls target/tiny-gguf/*.gguf >/dev/null
"$VENV/bin/python" scripts/llamacpp_reference.py target/tiny-gguf/*.gguf > tests/data/llamacpp_reference.json.tmp
mv tests/data/llamacpp_reference.json.tmp tests/data/llamacpp_reference.json
cargo test --release -q --test llamacpp_parity
