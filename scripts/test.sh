#!/usr/bin/env bash
# Lint, type-check and run the whole test suite in .venv (made by scripts/setup.sh --dev).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh  # exports SUPERSCALE_TEST_PG_URL
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest -q -ra "$@"
