#!/usr/bin/env bash
# Throughput on a shared node: the standard workloads (`affectbench bench --json`) and the
# same workloads on llama.cpp (llama-cpp-python, the same GGUF), each idle and then beside
# a CPU-bound competitor, in one session, runs alternating so drift hits both alike.
#
# The competitor is COMPETITORS busy-loop processes (default: one per thread, so the
# node is fully booked twice over: the case of a SLURM node whose other job ignores its
# allocation). A fair engine keeps about THREADS / (THREADS + COMPETITORS) of its idle
# figure; the issue's target is 40% of idle for the questionnaire.
#
#   benches/peers/contention.sh [MODEL] [THREADS]
#   BINS="/tmp/old-affectbench target/release/affectbench" benches/peers/contention.sh
#
# BINS: affectbench binaries to compare (default: this checkout's release build);
# PEER_VENV: the virtual environment with llama-cpp-python (as run_peers.sh; set
# NO_LLAMACPP=1 to skip it); ROUNDS: alternations (default 2); REPEATS: timed runs per
# workload inside each bench (default 3).
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL="${1:-smollm2-135m-instruct}"
THREADS="${2:-2}"
COMPETITORS="${COMPETITORS:-$THREADS}"
ROUNDS="${ROUNDS:-2}"
REPEATS="${REPEATS:-3}"
VENV="${PEER_VENV:-/tmp/affectbench-peers}"
if [ -z "${BINS:-}" ]; then
    cargo build --release -q
    BINS=target/release/affectbench
fi
FIRST_BIN="${BINS%% *}"
GGUF="$($FIRST_BIN models path "$MODEL" 2>/dev/null || { $FIRST_BIN models fetch "$MODEL" >&2 && $FIRST_BIN models path "$MODEL"; })"
if [ -z "${NO_LLAMACPP:-}" ]; then
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null || "$VENV/bin/pip" install -q llama-cpp-python numpy
fi
OUT="${OUT:-target/contention-$(date +%Y%m%dT%H%M%S)}"
mkdir -p "$OUT"

competitor_pids=()
start_competitors() {
    for _ in $(seq "$COMPETITORS"); do
        bash -c 'while :; do :; done' &
        competitor_pids+=($!)
    done
    sleep 1
}
stop_competitors() {
    for p in "${competitor_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${competitor_pids[@]}"; do wait "$p" 2>/dev/null || true; done
    competitor_pids=()
}
trap stop_competitors EXIT

measure() { # NAME LOAD ROUND COMMAND...
    local name="$1" load="$2" round="$3"
    shift 3
    [ "$load" = loaded ] && start_competitors
    echo "$name, $load, round $round" >&2
    "$@" > "$OUT/$name.$load.$round.json"
    [ "$load" = loaded ] && stop_competitors
    return 0
}

echo "model $GGUF, $THREADS threads, $COMPETITORS competing processes; results in $OUT" >&2
for round in $(seq "$ROUNDS"); do
    for load in idle loaded; do
        i=0
        for bin in $BINS; do
            i=$((i + 1))
            measure "affectbench-$i" "$load" "$round" \
                "$bin" --threads "$THREADS" bench --model "$MODEL" --json --repeats "$REPEATS"
        done
        if [ -z "${NO_LLAMACPP:-}" ]; then
            measure llamacpp "$load" "$round" \
                "$VENV/bin/python" benches/peers/peers.py llamacpp "$GGUF" --threads "$THREADS" --repeats "$REPEATS"
        fi
    done
done

python3 - "$OUT" "$BINS" <<'PY'
import glob, json, os, statistics, sys
out, bins = sys.argv[1], sys.argv[2].split()
names = {f"affectbench-{i + 1}": f"affectbench ({b})" for i, b in enumerate(bins)}
names["llamacpp"] = "llama.cpp (llama-cpp-python)"
fields = ["prefill_tok_s", "decode_tok_s", "batch32_decode_tok_s", "questionnaire_items_s"]
def runs(name, load):
    return [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, f"{name}.{load}.*.json")))]
print("| engine | workload | idle | with competitor | loaded / idle |")
print("|---|---|---|---|---|")
for name, label in names.items():
    idle, loaded = runs(name, "idle"), runs(name, "loaded")
    if not idle:
        continue
    for f in fields:
        a = [r[f] for r in idle if r.get(f)]
        b = [r[f] for r in loaded if r.get(f)]
        if not a or not b:
            continue
        a, b = statistics.median(a), statistics.median(b)
        print(f"| {label} | {f} | {a:.1f} | {b:.1f} | {b / a:.0%} |")
PY
