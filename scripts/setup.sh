#!/usr/bin/env bash
# Creates .venv and installs superscale into it. Usage: scripts/setup.sh [--dev]
# Where no NVIDIA GPU is present, the CPU build of torch goes in first, so that the
# package's own `torch>=2.3` requirement is already met and no multi-GB CUDA build is pulled.
# Re-runs install nothing unless pyproject.toml or this script changed (a stamp in .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mode=${1:-}
stamp=.venv/.superscale-setup${mode:+-dev}
wanted=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    exit 0
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip -q --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        "${PIP[@]}" install "torch>=2.3"
    else
        # Override with SUPERSCALE_TORCH_SPEC (and PIP_INDEX_URL / PIP_EXTRA_INDEX_URL) on machines
        # where this release's CPU wheel is not the one pip finds.
        "${PIP[@]}" install "${SUPERSCALE_TORCH_SPEC:-torch==2.13.0}"
    fi
fi
if [ "$mode" = "--dev" ]; then
    "${PIP[@]}" install -e ".[dev]"
    # The reference implementation, only as a test oracle (CC BY-SA: never imported by src/).
    # --no-deps: its torchvision requirement would replace our torch build.
    "${PIP[@]}" install --no-deps "aura-sr==0.0.4"
else
    "${PIP[@]}" install -e .
fi
echo "$wanted" > "$stamp"
