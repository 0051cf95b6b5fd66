"""`serve` and `worker` make OpenMP's threads sleep rather than spin while waiting (unless the
user chose): that only works if torch is not loaded before they set it."""

from __future__ import annotations

import os
import subprocess
import sys

CODE = (
    "import os, sys\n"
    "from superscale.cli import options, serve, worker\n"
    "assert 'torch' not in sys.modules, 'torch loaded before the wait policy is chosen'\n"
    "options.sleep_while_waiting()\n"
    "print(os.environ['OMP_WAIT_POLICY'])\n"
)


def _policy(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run(
        [sys.executable, "-c", CODE], env={**base, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_service_sleeps_unless_told_otherwise() -> None:
    assert _policy() == "PASSIVE"
    assert _policy(OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"
