#!/usr/bin/env bash
# The prepared check for a GPU machine, in one command (at most BUDGET_S = 480 s, for a device
# call of 10 minutes):
#   benchmarks/gpu_check.sh OUT_DIR
# builds the extension for sm_90, runs the CUDA tests, every op under compute-sanitizer (memcheck;
# racecheck and synccheck on the attention kernel, the one with shared memory and barriers), the
# op benchmarks and the sampling benchmarks; writes gpu_check.log, tests.xml, info.json,
# ops_bench.json and sampling_bench.{json,md} to OUT_DIR. Each step gets at most its own limit and
# what is left of the budget; the sampling benchmark goes last and writes its results case by
# case, so a run cut short keeps what it measured. Exits 2 without a GPU, 1 when any step failed
# or was skipped for lack of time (the later steps still run).
set -uo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}  # the GPU machine's torch lives in python3
deadline=$((SECONDS + ${BUDGET_S:-480}))
status=0
# step NAME LIMIT_S COMMAND...: runs COMMAND for at most LIMIT_S seconds and the budget left.
step() {
  local name=$1 limit=$2 left=$((deadline - SECONDS))
  shift 2
  if ((left < 15)); then echo "=== SKIPPED (budget spent): $name"; status=1; return; fi
  ((limit > left)) && limit=$left
  echo; echo "=== $name (at most ${limit} s, $(date +%T))"
  timeout "$limit" "$@" || { echo "=== FAILED (rc $?): $name"; status=1; }
}

if ! $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA GPU is visible on this machine; nothing to check."
  exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-16} PYTHONUNBUFFERED=1
SANITIZER=${SANITIZER:-$(command -v compute-sanitizer || echo "$CUDA_HOME/bin/compute-sanitizer")}

step "build (sm_$TORCH_CUDA_ARCH_LIST)" 180 $PY setup.py -q build_ext --inplace
step "build info" 30 sh -c "$PY -m fractal_ext.cli.info --json > '$out/info.json' && $PY -m fractal_ext.cli.info"
step "CUDA tests" 100 $PY -m pytest tests -q -m cuda --maxfail=10 --junitxml="$out/tests.xml"
step "compute-sanitizer memcheck" 90 "$SANITIZER" --tool memcheck --error-exitcode 1 $PY benchmarks/sanitize_ops.py
for tool in racecheck synccheck; do
  step "compute-sanitizer $tool" 45 "$SANITIZER" --tool $tool --error-exitcode 1 \
    $PY benchmarks/sanitize_ops.py --only kv_cache_attention
done
step "op benchmarks" 90 $PY -m pytest benchmarks -q -s -k cuda --ignore=benchmarks/bench_sampling.py \
  --benchmark-json="$out/ops_bench.json"
step "sampling benchmarks" 600 $PY benchmarks/bench_sampling.py --device cuda --json "$out/sampling_bench.json"
echo; echo "gpu_check: done in ${SECONDS} s, status $status; results in $out"
exit $status
