#!/bin/sh
# gpu_run.sh rehearsed on this CPU before device time is spent on it: under the GPU machine's
# PyTorch (2.11.0, its CUDA build, which runs on a CPU) with only the packages that machine's
# image holds for us, plus the carried wheels (fetched for this Python), `gpu.py --device cpu
# --quick`. A missing import or an API that torch lacks shows here. Needs the package index
# (a few GB of CUDA libraries the first time; the venv is kept for the next run).
set -eu
cd "$(dirname "$0")/.."
VENV=${VENV:-/tmp/superscale-gpu-dryrun}
[ -x "$VENV/bin/python3" ] || python3 -m venv "$VENV"
"$VENV/bin/python3" -m pip install -q torch==2.11.0 torchvision==0.26.0 numpy pillow \
    safetensors httpx click huggingface-hub tqdm prometheus-client uvloop einops pytest \
    psutil nvidia-ml-py lazy_loader
PYTHON_VERSION=$("$VENV/bin/python3" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
WHEELS="$VENV/wheels" PYTHON_VERSION="$PYTHON_VERSION" sh benchmarks/gpu_wheels.sh
rm -rf "$VENV/site"
PATH="$VENV/bin:$PATH" WHEELS="$VENV/wheels" SITE="$VENV/site" OUT="${OUT:-$VENV/out}" \
    sh benchmarks/gpu_run.sh --device cpu --quick
