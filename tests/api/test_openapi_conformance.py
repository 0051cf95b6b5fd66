"""`/openapi.json` says what the API does: schemathesis (`st run --checks all`) generates
requests from it — valid ones, invalid ones, and stateful sequences (submit, then status,
result, cancel) — against the real server with a worker, and fails on any finding: an
undocumented status, a valid request refused, an invalid one accepted, a 5xx, a response that
does not match its schema (issue 15.18). Bounded: a fixed seed and example count. What fal's
protocol answers on purpose (a request's result carries its own outcome) is declared in
schemathesis.toml beside this file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import missing_in_ci
from loopback import SUPERSCALE, free_port, wait_serving

CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.mark.slow
def test_schemathesis_checks_all_find_nothing(tmp_path: Path, small_model_dir: Path) -> None:
    st = Path(sys.executable).with_name("st")
    if not st.exists():
        missing_in_ci("schemathesis is not installed (the dev extra has it)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    env = {
        **os.environ,
        "SUPERSCALE_MODEL_DIR": str(small_model_dir),
        "SUPERSCALE_DEVICE": "cpu",
        "SUPERSCALE_FETCH_TIMEOUT": "2",  # generated URLs point nowhere: fail fast
    }
    with log.open("wb") as out:
        server = subprocess.Popen(
            [*SUPERSCALE, "serve", "--port", str(port), "--data-dir", str(tmp_path / "data")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_serving(url, server, lambda: log.read_text(errors="replace"))
        key = re.search(r"FAL_KEY=(\S+)", log.read_text())
        assert key, log.read_text()[-2000:]
        run = subprocess.run(
            [
                str(st),
                "--config-file",
                str(CONFIG),
                "--no-color",
                "run",
                f"{url}/openapi.json",
                "--checks",
                "all",
                "--header",
                f"Authorization: Key {key.group(1)}",
                "--max-examples",
                "50",
                "--seed",
                "20261206",
                "--request-timeout",
                "20",
            ],
            capture_output=True,
            text=True,
            timeout=480,
            cwd=tmp_path,
        )
    finally:
        server.terminate()
        server.wait(30)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert re.search(r"(\d+) generated, \1 passed", run.stdout), run.stdout[-3000:]
