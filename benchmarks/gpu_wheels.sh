#!/bin/sh
# The wheels benchmarks/gpu.py needs on a GPU machine that has PyTorch, NumPy, Pillow,
# safetensors, httpx, click and lazy_loader (fpng imports it) but no package index: this
# package's other runtime dependencies (those `superscale worker` imports) and the reference
# `aura-sr` (the oracle), for CPython 3.12 on x86-64 Linux, into .whl/ (git ignores it). Run
# here, where the index is reachable; carry .whl to the GPU machine, where gpu_run.sh installs it.
# WHEELS and PYTHON_VERSION pick another folder and Python (gpu_dryrun.sh uses them).
set -eu
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.whl}
mkdir -p "$WHEELS"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_34_x86_64 -d "$WHEELS" \
    pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 annotated-types==0.8.0 \
    typing-inspection==0.4.5 python-dotenv==1.2.4 fpng==0.1.0 cryptography==51.0.1 \
    cffi==2.1.1 pycparser==3.12 httpx-sse==0.4.3 aura-sr==0.0.4 typing-extensions==4.16.0
ls "$WHEELS"
