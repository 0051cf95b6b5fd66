#!/bin/sh
# Every GPU check in one call on a lent GPU machine (no index there): the GPU test suite, then
# benchmarks/gpu.py. Its log, JSON and the worker logs land in $OUT. Before the call, here:
#   benchmarks/gpu_wheels.sh
# then the call, with `.whl` carried:  sh benchmarks/gpu_run.sh   (timeout 590 s)
# Arguments go to gpu.py. WHEELS and SITE pick other folders (gpu_dryrun.sh uses them).
set -u
cd "$(dirname "$0")/.."
SITE=${SITE:-/tmp/site}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "${WHEELS:-.whl}"/*.whl || exit 1
export PYTHONPATH="$SITE:src" PYTHONUNBUFFERED=1 OUT="${OUT:-/tmp/gpu-out}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu-smi.txt"
timeout 150 python3 -m pytest -q -p no:cacheprovider --confcutdir=tests/gpu tests/gpu -rs \
    2>&1 | tee "$OUT/gpu-tests.log" | tail -25
timeout 420 python3 benchmarks/gpu.py "$@"
