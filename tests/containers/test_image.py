"""The container image, built from the real `Dockerfile` on this machine and run as users run
it (host networking here, loopback ports): healthy, driven by fal's official Python client, and
stopped with SIGTERM mid-job without losing or repeating an accepted job.

Runs under CI or with SUPERSCALE_TEST_CONTAINERS=1 (`engine.py` says how the engine and the
images are made); skipped with the reason otherwise."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fal_client
import fal_client.client as fal_module
import httpx
import numpy as np
import pytest
from PIL import Image

from hubstandin import HubFile, hub_stand_in
from loopback import free_port, wait_for
from superscale.jobs import open_job_store

from . import engine

pytestmark = pytest.mark.skipif(
    not engine.enabled(), reason="container tests run under CI or SUPERSCALE_TEST_CONTAINERS=1"
)
APP = "fal-ai/aura-sr"
UID = 10001  # the image's user, who must own the data volume


@dataclass
class Container:
    name: str
    url: str
    data: Path

    def logs(self) -> str:
        """Its stdout and stderr, interleaved."""
        proc = subprocess.run(
            ["docker", "logs", self.name],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
        )
        return proc.stdout

    def key(self) -> str:
        found = re.search(r"FAL_KEY=(\S+)", self.logs())
        assert found, self.logs()[-2000:]
        return found.group(1)


def _start(image: str, data: Path, models: Path, port: int, name: str, **env: str) -> Container:
    data.mkdir(exist_ok=True)
    engine.run("chown", "-R", str(UID), str(data))
    readable = data.parent / "models"  # pytest's own folders are private to root
    if not readable.exists():
        shutil.copytree(models, readable)
        engine.run("chmod", "-R", "a+rX", str(readable))
    models = readable
    settings = {"SUPERSCALE_PORT": str(port), "SUPERSCALE_DEVICE": "cpu", **env}
    args = ["docker", "run", "-d", "--name", name, "--network", "host"]
    for key, value in settings.items():
        args += ["-e", f"{key}={value}"]
    args += ["-v", f"{models}:/models:ro", "-v", f"{data}:/data", image]
    engine.run(*args)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{url}/health").status_code == 200, 60, "the container's /health")
    return Container(name, url, data)


@pytest.fixture
def containers() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        engine.run("docker", "rm", "-f", name, check=False)


def _png(size: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def test_the_image_serves_fals_python_client(
    image: str,
    small_model_dir: Path,
    tmp_path: Path,
    containers: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    containers.append(name := f"superscale-test-{port}")
    box = _start(image, tmp_path / "data", small_model_dir, port, name)
    for global_name in ("REST_URL", "CDN_URL"):
        monkeypatch.setattr(fal_module, global_name, box.url)
    monkeypatch.setattr(fal_module, "RUN_URL_FORMAT", f"{box.url}/")
    monkeypatch.setattr(fal_module, "QUEUE_URL_FORMAT", f"{box.url}/queue/")
    fal = fal_client.SyncClient(key=box.key())
    source = tmp_path / "in.png"
    source.write_bytes(_png(24))
    url = fal.upload_file(source)
    output = fal.subscribe(APP, {"image_url": url}, with_logs=True)
    assert (output["image"]["width"], output["image"]["height"]) == (96, 96)
    result = httpx.get(output["image"]["url"])
    assert Image.open(io.BytesIO(result.content)).size == (96, 96)
    # The image's HEALTHCHECK sees it healthy; it runs as its own user, not root.
    wait_for(
        lambda: (
            engine.run("docker", "inspect", "-f", "{{.State.Health.Status}}", name).strip()
            == "healthy"
        ),
        60,
        "docker's health status",
        interval=1,
    )
    assert engine.run("docker", "exec", name, "id", "-u").strip() == str(UID)


def test_sigterm_mid_job_then_restart_completes_every_job_once(
    image: str, small_model_dir: Path, tmp_path: Path, containers: list[str]
) -> None:
    port = free_port()
    containers.append(name := f"superscale-test-{port}")
    data = tmp_path / "data"
    # A short grace: the running job goes back to the queue rather than finishing.
    box = _start(image, data, small_model_dir, port, name, SUPERSCALE_SHUTDOWN_GRACE="1")
    key = box.key()
    headers = {"Authorization": f"Key {key}"}
    uri = "data:image/png;base64," + base64.b64encode(_png(640, 1)).decode()  # 100 tiles
    ids = []
    with httpx.Client(base_url=box.url, headers=headers, timeout=30) as c:
        for _ in range(3):
            r = c.post(f"/queue/{APP}", json={"image_url": uri})
            assert r.status_code == 200, r.text
            ids.append(r.json()["request_id"])
        wait_for(
            lambda: any(
                c.get(f"/queue/{APP}/requests/{i}/status").json()["status"] == "IN_PROGRESS"
                for i in ids
            ),
            60,
            "a job running",
        )
    t0 = time.monotonic()
    engine.run("docker", "stop", "-t", "30", name)  # SIGTERM, then SIGKILL after 30 s
    stopped_in = time.monotonic() - t0
    state = json.loads(engine.run("docker", "inspect", "-f", "{{json .State}}", name))
    assert state["ExitCode"] == 0, box.logs()[-3000:]
    assert stopped_in < 15, stopped_in  # drained within the grace, not killed at 30 s

    engine.run("docker", "start", name)  # the same container, the same data volume
    wait_for(lambda: httpx.get(f"{box.url}/health").status_code == 200, 60, "the restart")
    with httpx.Client(base_url=box.url, headers=headers, timeout=30) as c:
        for request_id in ids:
            wait_for(
                lambda rid=request_id: (
                    c.get(f"/queue/{APP}/requests/{rid}/status").json()["status"] == "COMPLETED"
                ),
                180,
                f"{request_id} to complete",
                interval=0.5,
            )
            result = c.get(f"/queue/{APP}/requests/{request_id}")
            assert result.status_code == 200 and result.json()["image"]["width"] == 2560
    store = open_job_store(f"sqlite:///{data / 'superscale.db'}")
    try:
        for request_id in ids:
            job = store.get(request_id)
            assert job is not None and job.attempts == 1, job  # handed back, not charged
        assert store.counts()["COMPLETED"] == 3
    finally:
        store.close()


def test_weights_baked_in_at_build_time(
    docker: engine.Engine, image: str, image_context: Path, small_model_dir: Path
) -> None:
    """`--build-arg PULL=v1`: `superscale pull` runs in the build (here against a stand-in of
    the hub's file routes on loopback), and the image holds the checked checkpoint."""
    weights = (small_model_dir / "v1" / "model.safetensors").read_bytes()
    with hub_stand_in() as hub:
        hub.files[("fal/AuraSR", "model.safetensors")] = HubFile(weights)
        config = (small_model_dir / "v1" / "config.json").read_bytes()
        hub.files[("fal/AuraSR", "config.json")] = HubFile(config, lfs=False)
        baked = docker.build_image(
            image_context,
            tag="local/superscale:baked",
            extra=(
                "--network",
                "host",
                "--build-arg",
                "PULL=v1",
                "--build-arg",
                f"HF_ENDPOINT={hub.url}",
            ),
        )
    try:
        listing = engine.run(
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "sha256sum",
            baked,
            "/models/v1/model.safetensors",
            "/models/v1/config.json",
        )
        assert hashlib.sha256(weights).hexdigest() in listing
        assert hashlib.sha256(config).hexdigest() in listing
    finally:
        engine.run("docker", "rmi", baked, check=False)
