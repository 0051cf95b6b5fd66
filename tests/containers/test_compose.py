"""`compose.yaml` (one machine) brought up with Debian's docker-compose (v1: what exists here;
the file is version-less, so `docker compose` v2 reads it too) on the project's image: serves a
job, and `stop` drains it to exit code 0. Host networking here: the test drops `ports` and
sets `network_mode: host` in a copy (compose v1 refuses both at once)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import yaml

from loopback import free_port, wait_for

from . import engine
from .test_image import UID, _png

APP = "fal-ai/aura-sr"


def host_networked(source: Path, target: Path) -> Path:
    doc = yaml.safe_load(source.read_text())
    for service in doc["services"].values():
        service.pop("ports", None)
        service["network_mode"] = "host"
    target.write_text(yaml.safe_dump(doc))
    return target


def test_compose_one_machine(image: str, small_model_dir: Path, tmp_path: Path) -> None:
    data, models = tmp_path / "data", tmp_path / "models"
    data.mkdir()
    shutil.copytree(small_model_dir, models)
    engine.run("chown", "-R", str(UID), str(data))
    engine.run("chmod", "-R", "a+rX", str(models))
    port = free_port()
    env = {
        **os.environ,
        "SUPERSCALE_IMAGE": image,
        "SUPERSCALE_PORT": str(port),
        "SUPERSCALE_DEVICE": "cpu",
        "SUPERSCALE_DATA": str(data),
        "SUPERSCALE_MODELS": str(models),
    }
    compose = host_networked(engine.ROOT / "compose.yaml", tmp_path / "compose.yaml")
    project = f"sstest{port}"
    base = ["docker-compose", "-p", project, "-f", str(compose)]
    try:
        engine.run(*base, "up", "-d", "--no-build", env=env)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{url}/health").status_code == 200, 90, "compose's server")
        logs = subprocess.run(
            [*base, "logs"], env=env, capture_output=True, text=True, timeout=60
        ).stdout
        key = re.search(r"FAL_KEY=(\S+)", logs)
        assert key, logs[-2000:]
        uri = "data:image/png;base64," + base64.b64encode(_png(16, 2)).decode()
        with httpx.Client(base_url=url, headers={"Authorization": f"Key {key.group(1)}"}) as c:
            r = c.post(f"/{APP}", json={"image_url": uri}, timeout=120)
            assert r.status_code == 200 and r.json()["image"]["width"] == 64, r.text
        engine.run(*base, "stop", env=env)
        name = engine.run(*base, "ps", "-q", env=env).split()[0]
        state = json.loads(engine.run("docker", "inspect", "-f", "{{json .State}}", name))
        assert state["ExitCode"] == 0 and not state["Running"]
    finally:
        engine.run(*base, "down", "-v", env=env, check=False)
