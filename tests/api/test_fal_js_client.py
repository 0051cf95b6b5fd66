"""fal's official JS client (`@fal-ai/client` 1.10.1, Node) against our server, end to end:
storage upload, subscribe by polling and by streaming with logs, a validation error, cancel,
and the browser proxy route with a proxy session. `scripts/services.sh` installs it."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from conftest import missing_in_ci

from .server import LiveServer
from .test_fal_client import png_bytes

JS_DIR = Path(__file__).parent / "js"
NODE = shutil.which("node")
MISSING = NODE is None or not (JS_DIR / "node_modules" / "@fal-ai" / "client").is_dir()
REASON = "needs node and tests/api/js/node_modules (scripts/services.sh installs them)"


@pytest.fixture(autouse=True)
def _js_client_installed() -> None:
    if MISSING:
        missing_in_ci(REASON)


def node_env(server: LiveServer, image: bytes, **extra: str) -> dict[str, str]:
    """What the scripts in tests/api/js read: the server, a key, an image (and `extra`)."""
    return {
        **os.environ,
        "HOST": server.url,
        "FAL_KEY": server.key,
        "PNG_BASE64": base64.b64encode(image).decode(),
        **extra,
    }


def run_node(script: str, env: dict[str, str], timeout: float = 180) -> dict:
    """Run a script of tests/api/js to its end; the JSON object its last line prints."""
    assert NODE is not None
    proc = subprocess.run(
        [NODE, script], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_fal_js_client(worker_server: LiveServer) -> None:
    image = png_bytes(12, 5)
    out = run_node("fal_js_client.mjs", node_env(worker_server, image))

    assert httpx.get(out["upload"]).content == image  # upload via initiate + signed PUT
    for mode in ("polling", "streaming"):
        data = out[mode]["data"]
        assert (data["image"]["width"], data["image"]["height"]) == (48, 48), mode
        assert httpx.get(data["image"]["url"]).status_code == 200
        updates = out["updates"][mode]
        assert updates[-1]["status"] == "COMPLETED"
        logs = updates[-1]["logs"]
        assert any("tiles" in m for m in logs), logs
        assert len(logs) == len(set(logs)), f"{mode}: log lines repeated: {logs}"
    assert out["error"]["name"] == "ValidationError" and out["error"]["status"] == 422
    assert out["error"]["body"]["detail"][0]["loc"] == ["body", "image_url"]
    assert out["cancel"] == "ok" and out["afterCancel"] == "COMPLETED"
    assert out["proxy"]["image"]["width"] == 48
