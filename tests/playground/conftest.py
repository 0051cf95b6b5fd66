"""Fixtures for the playground tests: the real server (`superscale serve`) on loopback with a
small random-weight model, and Debian's Chromium driven headless through Playwright."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import missing_in_ci
from loopback import SUPERSCALE, free_port, wait_serving

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "playground"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
# Required: without the background-networking flags Chromium keeps calling home, and this
# machine's network is closed.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    data_dir: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(
    data_dir: Path, model_dir: Path | None, *extra: str, port: int | None = None
) -> Server:
    """Runs `superscale serve` in a subprocess on loopback (a free port unless given); waits
    for /health."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "serve.log"
    env = {**os.environ, "SUPERSCALE_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"}
    if model_dir is not None:
        env["SUPERSCALE_MODEL_DIR"] = str(model_dir)
    cmd = [*SUPERSCALE, "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--data-dir", str(data_dir), *extra]
    with log.open("ab") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://127.0.0.1:{port}", process, log, data_dir)
    try:
        wait_serving(server.url, process, server.output, path="/health")
    except AssertionError:
        stop_server(server)
        raise
    return server


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="module")
def open_server(
    tmp_path_factory: pytest.TempPathFactory, small_model_dir: Path
) -> Iterator[Server]:
    """A server with auth off and one in-process worker on the small model."""
    server = start_server(tmp_path_factory.mktemp("serve-open"), small_model_dir, "--no-auth")
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with auth on and no worker (API only: nothing here needs the model)."""
    server = start_server(tmp_path_factory.mktemp("serve-auth"), None, "--workers", "0")
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def chromium_path() -> str:
    for path in CHROMIUM_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("chromium")
    if found:
        return found
    missing_in_ci(  # a skip in CI would hide that the browser tests never ran
        "Chromium not found (Debian: apt-get install chromium; scripts/services.sh does it "
        "when CI is set or SUPERSCALE_TEST_BROWSER=1)"
    )


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where the screenshots go; emptied once per run so that none is left from an old one."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    return ARTIFACTS
