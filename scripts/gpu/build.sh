#!/usr/bin/env bash
# Builds the CUDA binary on a machine without a GPU and packs it for a GPU host:
# dist/affectbench-cuda.xz (about 10 MB). About 19 minutes on 2 cores the first time,
# 11 of them candle's nvcc step; a rebuild after a code change takes a few minutes.
#
#   scripts/gpu/build.sh                 # CUDA compute capability 90 (H100, H200)
#   CUDA_COMPUTE_CAP=80 scripts/gpu/build.sh    # A100
#
# Needs a CUDA toolkit: nvcc on PATH with CUDA_HOME set, or /tmp/cuda13 as made by
# ../shared/tools/cuda13-toolkit.sh (CUDA 13.0 nvcc, headers, cuBLAS, cuRAND and a
# link stub for libcuda from PyPI wheels; no root, no GPU), which this script runs if
# it finds it and no toolkit is set up. The binary is portable x86-64-v3 (never
# target-cpu=native: an AMD-built binary died with SIGILL on an Intel GPU host).
# On the GPU host: `source scripts/gpu/env.sh` (finds libcublas, libcudart, libcurand and the
# driver's libcuda), then `xz -dc affectbench-cuda.xz > affectbench && chmod +x affectbench`.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
if ! command -v nvcc >/dev/null; then
  if [ ! -x /tmp/cuda13/nvidia/cu13/bin/nvcc ]; then
    toolkit=${CUDA_TOOLKIT_SCRIPT:-$root/../shared/tools/cuda13-toolkit.sh}
    [ -f "$toolkit" ] || { echo "build.sh: no nvcc and no toolkit script at $toolkit; install a CUDA toolkit or set CUDA_TOOLKIT_SCRIPT" >&2; exit 1; }
    cargo fetch
    bash "$toolkit"
  fi
  export CUDA_HOME=/tmp/cuda13/nvidia/cu13
  export PATH=$CUDA_HOME/bin:$PATH
  export LIBRARY_PATH=$CUDA_HOME/lib:$CUDA_HOME/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}
fi
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
echo "build.sh: $(nvcc --version | tail -2 | head -1), compute capability $CUDA_COMPUTE_CAP"
start=$(date +%s)
cargo build --release --features cuda --config profile.release.debug=0 --target-dir target/cuda
mkdir -p dist
strip -o dist/affectbench-cuda target/cuda/release/affectbench
xz -T0 -6 -f dist/affectbench-cuda
echo "build.sh: dist/affectbench-cuda.xz ($(du -h dist/affectbench-cuda.xz | cut -f1)) in $(( $(date +%s) - start )) s"
