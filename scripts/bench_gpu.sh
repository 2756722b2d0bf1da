#!/usr/bin/env bash
# The GPU rows of docs/benchmarks.md, in one command, on a machine with a CUDA
# GPU and jax installed with CUDA support:
#
#   scripts/bench_gpu.sh OUT_DIR [CIFAR10_DIR]
#
# OUT_DIR receives, in the order the steps run (the most wanted figures first):
#   bench_sweep.json   scripts/bench.py: matrix peaks (numpy on the host, jax on
#                      the GPU) and a 1,024-config sweep of the notebook's shape
#   train_notebook/    scripts/train.py --device gpu --eval-test (the notebook's
#                      run); needs CIFAR-10 in CIFAR10_DIR (or the default folder)
#   bench_gpu.json     scripts/bench.py: the single run and the notebook's grid,
#                      numpy on the host against jaxnet on the GPU
#   train_best/        the same with --preset best
#   log.txt            everything printed
# The run folders go to $RUNS_DIR instead, if set.
# Every step runs even if one before it failed; the exit status is 1 if any
# failed. PYTHON picks the interpreter (default python3).
set -uo pipefail
if [ $# -lt 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
  sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'
  [ $# -ge 1 ]; exit  # 0 for --help, 1 without arguments
fi
# Paths given relative to the caller's folder, resolved before the cd below
# (-s keeps a virtual environment's python link as it is).
out=$(realpath -m -- "$1")
data=${2:+$(realpath -m -- "$2")}
runs=$(realpath -m -- "${RUNS_DIR:-$out}")
python=${PYTHON:-python3}
if [[ $python == */* ]]; then python=$(realpath -ms -- "$python"); fi
cd "$(dirname "$0")/.." || exit 1
mkdir -p "$out" "$runs"
log="$out/log.txt"
failed=0

step() {
  echo "== $*" | tee -a "$log"
  "$@" 2>&1 | tee -a "$log"
  local status=${PIPESTATUS[0]}
  if [ "$status" != 0 ]; then
    echo "== failed with status $status: $*" | tee -a "$log"
    failed=1
  fi
}

export PYTHONUNBUFFERED=1
step nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
step "$python" scripts/bench.py --device gpu --only peak,sweep --sweep-configs 1024 \
  --json "$out/bench_sweep.json"
step "$python" scripts/train.py --device gpu --eval-test --out "$runs/train_notebook" \
  ${data:+--data-dir "$data"}
step "$python" scripts/bench.py --device gpu --only peak,single,grid --json "$out/bench_gpu.json"
step "$python" scripts/train.py --device gpu --preset best --eval-test --out "$runs/train_best" \
  ${data:+--data-dir "$data"}
exit "$failed"
