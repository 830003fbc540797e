#!/usr/bin/env bash
# The prepared check for a GPU machine, in one command (about 6 minutes on one H200):
#   benchmarks/gpu_check.sh OUT_DIR
# builds the extension for sm_90, runs the CUDA tests, each op once under compute-sanitizer
# memcheck, the op benchmarks and the sampling benchmarks; writes gpu_check.log, tests.xml,
# ops_bench.json, sampling_bench.json and info.json to OUT_DIR. Exits non-zero without a GPU
# or when any step fails (the later steps still run).
set -uo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
status=0
step() { echo; echo "=== $1 ($(date +%T))"; shift; "$@" || { echo "=== FAILED: $*"; status=1; }; }

if ! $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA GPU is visible on this machine; nothing to check."
  exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-16}

step "build (sm_$TORCH_CUDA_ARCH_LIST)" timeout 240 $PY setup.py -q build_ext --inplace
step "build info" sh -c "$PY -m fractal_ext.info --json > '$out/info.json' && $PY -m fractal_ext.info"
step "CUDA tests" timeout 120 $PY -m pytest tests -q -m cuda -x --junitxml="$out/tests.xml"
SANITIZER=${SANITIZER:-$(command -v compute-sanitizer || echo "$CUDA_HOME/bin/compute-sanitizer")}
step "compute-sanitizer memcheck" timeout 120 "$SANITIZER" --tool memcheck --error-exitcode 1 \
  $PY benchmarks/sanitize_ops.py
step "op benchmarks" timeout 120 $PY -m pytest benchmarks -q -s -k cuda --benchmark-json="$out/ops_bench.json" \
  --ignore=benchmarks/bench_sampling.py
step "sampling benchmarks" timeout 240 $PY benchmarks/bench_sampling.py --device cuda --json "$out/sampling_bench.json"
echo; echo "gpu_check: done, status $status; results in $out"
exit $status
