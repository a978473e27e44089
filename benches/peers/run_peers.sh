#!/usr/bin/env bash
# Side-by-side run: affectbench's standard workloads (`affectbench bench --json`) and the
# same workloads on llama.cpp (llama-cpp-python) and transformers, same GGUF, same
# threads, one session. Installs the peers into a virtual environment outside the repo
# (PEER_VENV, default /tmp/affectbench-peers; llama-cpp-python compiles from source,
# ~17 min on 2 cores, once).
#
#   benches/peers/run_peers.sh [MODEL] [THREADS]     # default smollm2-135m-instruct, 2
#
# INT8_KERNEL=avx2 (any `--int8-kernel` name) runs affectbench on that path; for a fair
# AVX2 comparison on an AVX-512 machine, build llama.cpp without AVX-512 too:
#   CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF" \
#     PEER_VENV=/tmp/peers-avx2 benches/peers/run_peers.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL="${1:-smollm2-135m-instruct}"
THREADS="${2:-2}"
VENV="${PEER_VENV:-/tmp/affectbench-peers}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q llama-cpp-python transformers gguf accelerate numpy
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/pip" install -q torch --index-url https://download.pytorch.org/whl/cpu || "$VENV/bin/pip" install -q torch

cargo build --release -q
BIN=target/release/affectbench
GGUF="$($BIN models path "$MODEL" 2>/dev/null || { $BIN models fetch "$MODEL" >&2 && $BIN models path "$MODEL"; })"
OUT="${OUT:-target/peers-$(date +%Y%m%dT%H%M%S)}"
mkdir -p "$OUT"
echo "model $GGUF, $THREADS threads; results in $OUT" >&2
$BIN --threads "$THREADS" bench --model "$MODEL" ${INT8_KERNEL:+--int8-kernel "$INT8_KERNEL"} --json > "$OUT/affectbench.json"
"$VENV/bin/python" benches/peers/peers.py llamacpp "$GGUF" --threads "$THREADS" > "$OUT/llamacpp.json"
"$VENV/bin/python" benches/peers/peers.py transformers "$GGUF" --threads "$THREADS" > "$OUT/transformers.json"
python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
rows = {k: json.load(open(os.path.join(out, k + ".json"))) for k in ["affectbench", "llamacpp", "transformers"]}
fields = ["prefill_tok_s", "decode_tok_s", "batch32_decode_tok_s", "questionnaire_items_s", "peak_rss_bytes"]
print(f"affectbench on {rows['affectbench'].get('cpu')}, int8 kernel {rows['affectbench'].get('int8_kernel')}")
fmt = lambda v: "-" if v is None else (f"{v / 1e6:.0f} MB" if v > 1e6 else f"{v:.1f}")
print("| workload | affectbench | llama.cpp | transformers | vs llama.cpp | vs transformers |")
print("|---|---|---|---|---|---|")
for f in fields:
    a, l, t = (rows[k].get(f) for k in ["affectbench", "llamacpp", "transformers"])
    if f == "batch32_decode_tok_s" and l is None:
        # llama-cpp-python decodes one sequence; the target compares with that rate.
        l = rows["llamacpp"]["decode_tok_s"]
        f = "batch32_decode_tok_s (llama.cpp: its 1-sequence rate)"
    ratio = lambda x: "-" if not x or not a else (f"{a / x:.2f}x" if f != "peak_rss_bytes" else f"{a / x:.2f} of theirs")
    print(f"| {f} | {fmt(a)} | {fmt(l)} | {fmt(t)} | {ratio(l)} | {ratio(t)} |")
for k in ["llamacpp", "transformers"]:
    print(f"{rows[k]['engine']}: questionnaire variants (items/s) {json.dumps({v: round(x, 2) for v, x in rows[k]['questionnaire'].items()})}")
PY
