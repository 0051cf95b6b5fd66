"""`compose.cluster.yaml` brought up for real: PostgreSQL, SeaweedFS, two API servers behind
nginx and two CPU workers (the small random-weight checkpoint mounted in place of the weights).
20 jobs through both API servers, one worker container killed mid-job: every job completes
exactly once, and its output downloads from either API server.

The public images it names (postgres, seaweedfs, nginx) cannot be pulled here: local stand-ins
with the same interface take their place (`images/`). Host networking here: the test drops
`ports`, sets `network_mode: host`, names the services in /etc/hosts and picks free ports, in a
copy of the file (compose v1 refuses `ports` with host networking)."""

from __future__ import annotations

import base64
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loopback import free_port, wait_for
from s3server import WEED_PORT_FLAGS

from . import engine
from .test_image import _png

APP = "fal-ai/aura-sr"
JOBS = 20
NAMES = ("postgres", "s3", "api-1", "api-2")
# weed mini's other listeners (the S3 port is the compose file's), each given a free port.
WEED_PORTS = [flag for flag in WEED_PORT_FLAGS if flag != "s3.port"]


def _host_networked(source: Path, tmp: Path, ports: dict[str, int]) -> Path:
    """A copy of the cluster file for host networking on the ports picked here."""
    doc: dict[str, Any] = yaml.safe_load(source.read_text())
    services = doc["services"]
    for service in services.values():
        service.pop("ports", None)
        service["network_mode"] = "host"
        service["extra_hosts"] = [f"{name}:127.0.0.1" for name in NAMES]
    for api in ("api-1", "api-2"):
        port = ports[api]
        services[api]["command"] = ["serve", "--no-worker", "--port", str(port)]
        services[api]["healthcheck"]["test"][-1] = f"http://127.0.0.1:{port}/ready"
    services["s3"]["command"] += [
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{flag}={free_port()}" for flag in WEED_PORTS),
    ]
    conf = (source.parent / "docker/nginx.conf").read_text()
    conf = conf.replace("api-1:8001", f"api-1:{ports['api-1']}")
    conf = conf.replace("api-2:8002", f"api-2:{ports['api-2']}")
    conf = conf.replace("listen 8000;", f"listen 127.0.0.1:{ports['proxy']};")
    (tmp / "nginx.conf").write_text(conf)
    (tmp / "s3.json").write_text((source.parent / "docker/s3.json").read_text())
    services["proxy"]["volumes"] = [f"{tmp / 'nginx.conf'}:/etc/nginx/nginx.conf:ro"]
    services["s3"]["volumes"] = ["s3-data:/data", f"{tmp / 's3.json'}:/etc/seaweedfs/s3.json:ro"]
    target = tmp / "compose.cluster.yaml"
    target.write_text(yaml.safe_dump(doc, sort_keys=False))
    return target


def test_cluster_survives_a_worker_killed_mid_job(
    image: str, stand_ins: dict[str, str], small_model_dir: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(small_model_dir, models)
    engine.run("chmod", "-R", "a+rX", str(models))
    ports = {name: free_port() for name in ("api-1", "api-2", "proxy", "postgres", "s3")}
    compose = _host_networked(engine.ROOT / "compose.cluster.yaml", tmp_path, ports)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    proxy = f"http://127.0.0.1:{ports['proxy']}"
    env = {
        **os.environ,
        "SUPERSCALE_IMAGE": image,
        "POSTGRES_IMAGE": stand_ins["postgres"],
        "S3_IMAGE": stand_ins["seaweedfs"],
        "NGINX_IMAGE": stand_ins["nginx"],
        "POSTGRES_PASSWORD": "pw-for-tests",
        "PG_PORT": str(ports["postgres"]),
        "S3_PORT": str(ports["s3"]),
        "S3_ACCESS_KEY": "change-me",  # docker/s3.json's
        "S3_SECRET_KEY": "change-me-too",
        "SUPERSCALE_SECRET_KEY": "a" * 64,
        "SUPERSCALE_WEBHOOK_KEY": pem.decode(),
        "SUPERSCALE_MODELS": str(models),
        "PUBLIC_URL": proxy,
        "WORKER_0_DEVICE": "cpu",
        "WORKER_1_DEVICE": "cpu",
        "SUPERSCALE_LEASE_SECONDS": "4",
    }
    base = ["docker-compose", "-p", f"sscluster{ports['proxy']}", "-f", str(compose)]
    try:
        engine.run(*base, "up", "-d", "--no-build", env=env, timeout=300)
        wait_for(lambda: httpx.get(f"{proxy}/ready").status_code == 200, 180, "the cluster")
        made = engine.run(
            *base, "exec", "-T", "api-1", "superscale", "keys", "create", "--name", "t", env=env
        )
        key = re.search(r"([0-9a-f]{16}:[0-9a-f]{64})", made)
        assert key, made
        headers = {"Authorization": f"Key {key.group(1)}"}
        apis = [f"http://127.0.0.1:{ports['api-1']}", f"http://127.0.0.1:{ports['api-2']}"]
        uri = "data:image/png;base64," + base64.b64encode(_png(320, 3)).decode()  # 25 tiles
        ids = []
        for i in range(JOBS):  # alternately through each API server
            r = httpx.post(f"{apis[i % 2]}/queue/{APP}", json={"image_url": uri}, headers=headers)
            assert r.status_code == 200, r.text
            ids.append(r.json()["request_id"])

        def running() -> bool:
            status = httpx.get(f"{proxy}/queue/{APP}/requests/{ids[-1]}/status", headers=headers)
            return status.json()["status"] != "COMPLETED" and any(
                httpx.get(f"{proxy}/queue/{APP}/requests/{i}/status", headers=headers).json()[
                    "status"
                ]
                == "IN_PROGRESS"
                for i in ids
            )

        wait_for(running, 120, "jobs running", interval=0.2)
        engine.run(*base, "kill", "-s", "SIGKILL", "worker-0", env=env)  # mid-job, no goodbye

        def all_done() -> bool:
            return all(
                httpx.get(f"{proxy}/queue/{APP}/requests/{i}/status", headers=headers).json()[
                    "status"
                ]
                == "COMPLETED"
                for i in ids
            )

        wait_for(all_done, 300, "every job", interval=1)
        for i, request_id in enumerate(ids):
            result = httpx.get(
                f"{apis[(i + 1) % 2]}/queue/{APP}/requests/{request_id}", headers=headers
            )
            assert result.status_code == 200, result.text
            url = result.json()["image"]["url"]
            assert url.startswith(f"{proxy}/files/")
            bodies = [httpx.get(url.replace(proxy, api)).content for api in apis]
            assert bodies[0] == bodies[1] and bodies[0].startswith(b"\x89PNG")
        # Exactly once: one row per job, each completed with one output, none failed.
        dsn = f"postgresql://superscale:pw-for-tests@127.0.0.1:{ports['postgres']}/superscale"
        with psycopg.connect(dsn) as db:
            rows = db.execute("SELECT id, state, error, attempts FROM jobs").fetchall()
        assert sorted(r[0] for r in rows) == sorted(ids)
        assert all(r[1] == "COMPLETED" and r[2] is None for r in rows), rows
        assert max(r[3] for r in rows) == 2  # the killed worker's job, run again elsewhere
    finally:
        logs = engine.run(*base, "logs", "--tail", "60", env=env, check=False)
        engine.run(*base, "down", "-v", env=env, check=False, timeout=300)
        print(logs[-6000:])
        time.sleep(0)
