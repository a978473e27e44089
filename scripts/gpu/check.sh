#!/usr/bin/env bash
# The device check of the fixed-plan batched path, in one go (under 8 minutes on a GPU
# host with SmolLM2-135M): the smoke study on the device against the packed CPU path,
# two device runs against each other, --batch-size 1 against the default, a resumed
# run against an uninterrupted one, and the bench table, with the device named. Prints
# each figure as it comes and writes OUT/check.json.
#
#   scripts/gpu/check.sh --bin ./affectbench --model SmolLM2-135M-Instruct.Q4_1.gguf
#   scripts/gpu/check.sh --device cpu --model tiny.gguf      # the dry run (tests/cli.rs)
#
# With --device cpu the "device" runs are the same fixed-plan code on the CPU with f32
# weights (--batching fixed-plan --weights dense-f32): what CI can afford, and what
# proves the script before a GPU is at hand. Needs bash and python3 (standard library).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
device=cuda:0
bin=
model=
out=gpu-check
rows=1,32,256
repeats=3
study=$root/scenarios/studies/smoke.toml
while [ $# -gt 0 ]; do
  case $1 in
    --device) device=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --decode-rows) rows=$2; shift 2 ;;
    --repeats) repeats=$2; shift 2 ;;
    --study) study=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$model" ] || { echo "check.sh: --model FILE.gguf is required (the GPU host has no network to fetch one)" >&2; exit 2; }
[ -f "$model" ] || { echo "check.sh: --model $model: no such file" >&2; exit 2; }
if [ -z "$bin" ]; then
  bin=$(command -v affectbench || true)
  [ -n "$bin" ] || bin=$root/target/release/affectbench
fi
[ -x "$bin" ] || { echo "check.sh: no affectbench binary at $bin (give --bin PATH)" >&2; exit 2; }
rm -rf "$out"; mkdir -p "$out"
if [ "$device" = cpu ]; then
  dev_flags=(--device cpu --batching fixed-plan --weights dense-f32)
else
  dev_flags=(--device "$device")
fi
log() { echo "[check $(date +%H:%M:%S)] $*"; }
run() { # NAME FLAGS...: the smoke study into $out/NAME, its seconds into $out/NAME.seconds
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  "$bin" run "$study" --model "$model" --no-report --out "$out/$name" "$@" >"$out/$name.log" 2>&1 \
    || { echo "check.sh: run $name failed:" >&2; tail -20 "$out/$name.log" >&2; exit 1; }
  python3 -c "import sys;print(round($(date +%s.%N)-$t0,2))" >"$out/$name.seconds"
  log "$name: $(tail -1 "$out/$name.log")"
}
compare() { python3 "$here/compare_runs.py" "$out/$1" "$out/$2" --label "$3" --json "$out/compare-$1-$2.json"; }

log "device: $("$bin" --version) on $device"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
run cpu --device cpu
run device "${dev_flags[@]}"
run device-again "${dev_flags[@]}"
run device-batch1 "${dev_flags[@]}" --batch-size 1
# A run stopped part-way (inside a unit) and resumed must equal the uninterrupted one.
run device-resumed "${dev_flags[@]}" --max-trials 7
"$bin" run --resume "$out/device-resumed" --no-report "${dev_flags[@]}" >"$out/device-resumed.resume.log" 2>&1 \
  || { echo "check.sh: the resume failed:" >&2; tail -20 "$out/device-resumed.resume.log" >&2; exit 1; }
compare device cpu "device vs packed CPU"
compare device device-again "device, two runs"
compare device device-batch1 "device, --batch-size default vs 1"
compare device device-resumed "device, uninterrupted vs resumed"
log "bench"
"$bin" bench --model "$model" "${dev_flags[@]}" --json --repeats "$repeats" --decode-rows "$rows" >"$out/bench.json" 2>"$out/bench.log" \
  || { echo "check.sh: bench failed:" >&2; tail -20 "$out/bench.log" >&2; exit 1; }
cat "$out/bench.json"
python3 - "$out" "$device" <<'PY'
import json, sys
out, device = sys.argv[1], sys.argv[2]
def load(name):
    with open(f"{out}/{name}") as f:
        return json.load(f)
checks = {
    "device_vs_cpu": load("compare-device-cpu.json"),
    "two_device_runs": load("compare-device-device-again.json"),
    "batch_size_1_vs_default": load("compare-device-device-batch1.json"),
    "resumed_vs_uninterrupted": load("compare-device-device-resumed.json"),
}
seconds = {n: float(open(f"{out}/{n}.seconds").read()) for n in ["cpu", "device", "device-again", "device-batch1"]}
engine = load("device/run.json")["engine"]
agreement = checks["device_vs_cpu"]["top_option_agreement"]
gap = checks["device_vs_cpu"]["max_probability_gap_median"]
verdict = {
    "two_device_runs_identical": checks["two_device_runs"]["identical"],
    "resumed_identical": checks["resumed_vs_uninterrupted"]["identical"],
    "agreement_at_least_0.97": agreement is not None and agreement >= 0.97,
    "median_gap_at_most_0.03": gap is not None and gap <= 0.03,
}
report = {"device": device, "engine": engine, "seconds": seconds, "checks": checks,
          "bench": load("bench.json"), "verdict": verdict, "passed": all(verdict.values())}
with open(f"{out}/check.json", "w") as f:
    json.dump(report, f, indent=1)
print(json.dumps({"verdict": verdict, "seconds": seconds, "engine": engine}))
sys.exit(0 if report["passed"] else 1)
PY
log "passed; $out/check.json"
