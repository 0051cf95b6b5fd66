"""Real `superscale serve` processes on loopback for the client tests.

`server`: one in-process worker and the small random-weight model.
`idle_server`: no worker and a queue of one job, so jobs stay queued (cancel, timeout) and a
second submit is refused with 429.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from loopback import SUPERSCALE, free_port, wait_serving
from superscale.client import AsyncClient, RetryPolicy, SyncClient

KEY_PATTERN = re.compile(r"\b([0-9a-f]{8,}:[0-9a-f]{32,})\b")
# Tests must not sit out long backoffs: the policy's shape is the same, its delays tiny.
FAST_RETRY = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.05, max_retry_after=0.2)


@dataclass
class ServerProc:
    url: str
    key: str
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes]

    def client(self, **kwargs: object) -> SyncClient:
        kwargs.setdefault("retry", FAST_RETRY)
        return SyncClient(self.url, self.key, **kwargs)  # type: ignore[arg-type]

    def async_client(self, **kwargs: object) -> AsyncClient:
        kwargs.setdefault("retry", FAST_RETRY)
        return AsyncClient(self.url, self.key, **kwargs)  # type: ignore[arg-type]


def _start(tmp: Path, model_dir: Path, **settings: object) -> Iterator[ServerProc]:
    port = free_port()
    data_dir = tmp / "data"
    env = {
        **os.environ,
        "SUPERSCALE_DATA_DIR": str(data_dir),
        "SUPERSCALE_MODEL_DIR": str(model_dir),
        "SUPERSCALE_HOST": "127.0.0.1",
        "SUPERSCALE_PORT": str(port),
        "SUPERSCALE_DEVICE": "cpu",
        **{f"SUPERSCALE_{name.upper()}": str(value) for name, value in settings.items()},
    }
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "SUPERSCALE_URL"):
        env.pop(name, None)
    made = subprocess.run(
        [*SUPERSCALE, "keys", "create", "--name", "client-tests"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = KEY_PATTERN.search(made.stdout)
    assert made.returncode == 0 and match, f"keys create failed: {made.stdout}{made.stderr}"
    log = tmp / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*SUPERSCALE, "serve"], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    proc = ServerProc(url, match.group(1), data_dir, log, process)
    try:
        wait_serving(url, process, proc.log.read_text, timeout=120.0)
        yield proc
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, small_model_dir: Path) -> Iterator[ServerProc]:
    tmp = tmp_path_factory.mktemp("client-server")
    yield from _start(tmp, _with_broken_v2(small_model_dir, tmp / "models"), workers=1)


def _with_broken_v2(model_dir: Path, target: Path) -> Path:
    """v1 as given; v2 with a truncated weights file — a deployment fault that makes every v2
    job fail inside the server (an honest 5xx for the error tests)."""
    shutil.copytree(model_dir / "v1", target / "v1")
    (target / "v2").mkdir(parents=True)
    shutil.copy(model_dir / "v2" / "config.json", target / "v2" / "config.json")
    weights = (model_dir / "v2" / "model.safetensors").read_bytes()
    (target / "v2" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    return target


@pytest.fixture(scope="session")
def idle_server(
    tmp_path_factory: pytest.TempPathFactory, small_model_dir: Path
) -> Iterator[ServerProc]:
    # No hold: these tests are about how our client meets the server's 429s and 503s.
    yield from _start(
        tmp_path_factory.mktemp("client-idle"),
        small_model_dir,
        workers=0,
        max_queue=1,
        busy_hold=0,
    )


@pytest.fixture
def client(server: ServerProc) -> Iterator[SyncClient]:
    with server.client() as sync_client:
        yield sync_client


def make_image(width: int = 24, height: int = 16, mode: str = "RGB", seed: int = 1) -> Image.Image:
    """A small noisy image (noise so PNG cannot shrink it to nothing)."""
    data = bytes((i * 73 + seed * 31) % 251 for i in range(width * height * len(mode)))
    return Image.frombytes(mode, (width, height), data)


@pytest.fixture
def image_factory() -> Callable[..., Image.Image]:
    return make_image


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "input.png"
    make_image().save(path)
    return path
