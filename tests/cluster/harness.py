"""A superscale cluster on one machine, as real processes: `superscale serve --workers 0` API
servers and `superscale worker` processes sharing a fresh PostgreSQL database and an S3 bucket.

Used by `tests/cluster/test_cluster.py` and `benchmarks/cluster.py`. Every process gets its own
data directory (as on separate machines); what they share comes from the environment only:
`SUPERSCALE_DATABASE_URL`, `SUPERSCALE_STORAGE_URL`, the AWS variables for the bucket,
`SUPERSCALE_SECRET_KEY` for the API servers' signed URLs, and `SUPERSCALE_WEBHOOK_KEY` (one
Ed25519 key per cluster) for webhook signatures every server's JWKS verifies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
from PIL import Image

from loopback import SUPERSCALE, free_port, wait_for
from pngs import data_uri, encode
from testkeys import ed25519_pem

QUEUE = "/queue/fal-ai/aura-sr"


def png_data_uri(width: int, height: int, seed: int = 0) -> str:
    """A small PNG with some structure (a gradient shifted by `seed`), as a data: URI."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    return data_uri(encode(image.point(lambda v: (v + 37 * seed) % 256)))


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one run (dropped afterwards, even if still in use);
    yields its URL. `admin_url` is any database on the server we may CREATE DATABASE from."""
    import psycopg

    name = f"superscale_cluster_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    parts = urlsplit(admin_url)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@dataclass
class Proc:
    """One superscale process and its log file."""

    name: str
    args: list[str]
    log: Path
    popen: subprocess.Popen[bytes]
    url: str = ""  # API servers only

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a machine loses power."""
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)


@dataclass
class Cluster:
    """Starts and stops the processes of one cluster. Use as a context manager."""

    workdir: Path
    model_dir: Path
    database_url: str
    storage_url: str
    env: dict[str, str]  # extra environment: S3 endpoint and keys, lease length …
    # The cluster's webhook signing key (PEM), given to every process as SUPERSCALE_WEBHOOK_KEY.
    webhook_key: str = field(default_factory=ed25519_pem)
    servers: list[Proc] = field(default_factory=list)
    workers: list[Proc] = field(default_factory=list)

    def __enter__(self) -> Cluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _env(self, name: str) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            # One torch thread per worker: several workers share 2 cores here, and torch's
            # default (a thread per core in every process) oversubscribes them badly.
            "OMP_NUM_THREADS": "1",
            "SUPERSCALE_DATA_DIR": str(self.workdir / name),
            "SUPERSCALE_DATABASE_URL": self.database_url,
            "SUPERSCALE_STORAGE_URL": self.storage_url,
            "SUPERSCALE_MODEL_DIR": str(self.model_dir),
            "SUPERSCALE_DEVICE": "cpu",
            "SUPERSCALE_SECRET_KEY": "cluster-shared-secret",
            "SUPERSCALE_WEBHOOK_KEY": self.webhook_key,
            **self.env,
        }

    def _spawn(self, name: str, args: list[str]) -> Proc:
        data_dir = self.workdir / name
        data_dir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [*SUPERSCALE, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env(name),
            )
        return Proc(name, args, log, popen)

    def cli(self, *args: str) -> str:
        """Run a one-shot command (e.g. `keys create`) against the shared stores."""
        done = subprocess.run(
            [*SUPERSCALE, *args],
            env=self._env("cli"),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"superscale {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout

    def start_server(self, *flags: str) -> Proc:
        """`superscale serve --no-worker` on a free loopback port."""
        port = free_port()
        name = f"server{len(self.servers)}"
        args = ["serve", "--no-worker", "--port", str(port), "--log-level", "warning", *flags]
        proc = self._spawn(name, args)
        proc.url = f"http://127.0.0.1:{port}"
        self.servers.append(proc)
        return proc

    def start_worker(self, *flags: str) -> Proc:
        """`superscale worker` named `worker<n>` (its id in leases, logs and the store)."""
        name = f"worker{len(self.workers)}"
        proc = self._spawn(name, ["worker", "--worker-id", name, *flags])
        self.workers.append(proc)
        return proc

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Every API server answers /ready, and every worker has logged that it is serving."""
        for server in self.servers:
            wait_for(partial(self._server_ready, server), timeout, f"{server.name} to be ready")
        for worker in self.workers:
            wait_for(partial(self._worker_ready, worker), timeout, f"{worker.name} to start")

    def _server_ready(self, proc: Proc) -> bool:
        return self._check(proc) and httpx.get(f"{proc.url}/ready").status_code == 200

    def _worker_ready(self, proc: Proc) -> bool:
        return self._check(proc) and f"worker {proc.name} serving" in proc.log_text()

    @staticmethod
    def _check(proc: Proc) -> bool:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.log_text()[-3000:]}")
        return True

    def stop_worker(self, proc: Proc, timeout: float = 30.0) -> None:
        """SIGTERM: finish (or release) the running job and exit."""
        if proc.alive():
            proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(10)
        self.workers.remove(proc)

    def stop(self) -> None:
        procs = [*self.workers, *self.servers]
        for proc in procs:
            if proc.alive():
                proc.popen.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.popen.wait(20)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(10)
        self.workers.clear()
        self.servers.clear()

    def logs(self) -> str:
        """The tail of every process's log, for failure messages."""
        procs = [*self.servers, *self.workers]
        return "\n".join(f"--- {p.name}\n{p.log_text()[-1500:]}" for p in procs)
