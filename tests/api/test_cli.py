"""`superscale serve` and `superscale keys` as a user runs them: real processes on loopback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loopback import SUPERSCALE, free_port, wait_serving

from .test_routes_queue import INPUT


def wait_ready(url: str, proc: subprocess.Popen[str]) -> None:
    """Until the server answers /ready (its output, piped for the test to read, is shown only
    if it died)."""
    wait_serving(
        url, proc, lambda: proc.stdout.read() if proc.poll() is not None and proc.stdout else ""
    )


@pytest.fixture
def api_only(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    port = free_port()
    proc = subprocess.Popen(
        [*SUPERSCALE, "serve", "--workers", "0", "--port", str(port), "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url, proc, tmp_path
    finally:
        proc.terminate()
        proc.wait(10)


def test_first_serve_prints_a_working_key_and_never_loads_torch(api_only) -> None:
    url, proc, data_dir = api_only
    maps = Path(f"/proc/{proc.pid}/maps").read_text()
    assert "libtorch" not in maps  # --workers 0 serves without the model stack
    r = httpx.post(f"{url}/queue/fal-ai/aura-sr", json=INPUT)
    assert r.status_code == 401
    assert r.json()["detail"][0]["loc"] == ["header", "authorization"]

    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    match = re.search(r"FAL_KEY=(\S+)", out)
    assert match, out
    key = match.group(1)
    assert key.count(":") == 1

    # The key works against the same store, and a restart does not print another one.
    port = free_port()
    proc2 = subprocess.Popen(
        [*SUPERSCALE, "serve", "--no-worker", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url2 = f"http://127.0.0.1:{port}"
        wait_ready(url2, proc2)
        r = httpx.post(
            f"{url2}/queue/fal-ai/aura-sr", json=INPUT, headers={"Authorization": f"Key {key}"}
        )
        assert r.status_code == 200, r.text
        assert r.json()["status_url"].startswith(url2)
    finally:
        proc2.terminate()
        out2, _ = proc2.communicate(timeout=10)
    assert "FAL_KEY=" not in out2
    # Each start offers the playground a login link (auth on).
    assert f"http://127.0.0.1:{port}/playground/login?token=" in out2


def run_keys(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`superscale keys --data-dir DATA_DIR ARGS…`, its output captured."""
    return subprocess.run(
        [*SUPERSCALE, "keys", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_keys_cli_create_list_revoke(tmp_path: Path) -> None:
    def keys(*args: str) -> subprocess.CompletedProcess[str]:
        return run_keys(tmp_path, *args)

    created = keys("create", "--name", "ci")
    assert created.returncode == 0, created.stderr
    full = created.stdout.strip()
    key_id, secret = full.split(":")
    listed = keys("list")
    assert key_id in listed.stdout and "ci" in listed.stdout
    assert secret not in listed.stdout  # secrets are never shown again
    assert secret not in (tmp_path / "superscale.db").read_bytes().decode("latin-1")

    from superscale.api.keys import verify_key
    from superscale.jobs import open_job_store

    store = open_job_store(f"sqlite:///{tmp_path / 'superscale.db'}")
    try:
        assert verify_key(store.get_key, full).key_id == key_id  # type: ignore[union-attr]
        assert verify_key(store.get_key, f"{key_id}:{'0' * 64}") is None
        assert keys("revoke", key_id).returncode == 0
        assert verify_key(store.get_key, full) is None
    finally:
        store.close()
    assert keys("revoke", "nope").returncode != 0


def test_keys_cli_sets_and_shows_a_keys_own_limits(tmp_path: Path) -> None:
    def keys(*args: str) -> subprocess.CompletedProcess[str]:
        return run_keys(tmp_path, *args)

    created = keys("create", "--name", "busy", "--max-queue", "7", "--max-rps", "2.5")
    assert created.returncode == 0, created.stderr
    key_id = created.stdout.strip().split(":")[0]
    row = next(line for line in keys("list").stdout.splitlines() if line.startswith(key_id))
    assert "queue=7 rps=2.5" in row and "upload/day" not in row
    changed = keys("limits", key_id, "--upload-bytes-per-day", "0")
    assert changed.returncode == 0 and changed.stdout.strip().endswith(
        "queue=7 rps=2.5 upload/day=0"
    )
    assert keys("limits", key_id, "--reset", "--max-rps", "9").stdout.strip().endswith("rps=9")
    assert keys("limits", key_id, "--reset").stdout.strip().endswith("server's")
    assert keys("limits", "nope", "--max-queue", "1").returncode != 0
    assert keys("create", "--max-queue", "0").returncode != 0  # a queue of none: refused

    from superscale.jobs import open_job_store

    store = open_job_store(f"sqlite:///{tmp_path / 'superscale.db'}")
    try:
        key = store.get_key(key_id)
        assert key is not None and (key.max_queue, key.max_rps, key.upload_bytes_per_day) == (
            None,
            None,
            None,
        )
    finally:
        store.close()


def test_no_auth_warns_loudly(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            *SUPERSCALE,
            "serve",
            "--workers",
            "0",
            "--no-auth",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        r = httpx.post(f"http://127.0.0.1:{port}/queue/fal-ai/aura-sr", json=INPUT)
        assert r.status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert "AUTH IS OFF" in out
    assert "FAL_KEY=" not in out


def test_api_package_does_not_import_torch() -> None:
    code = (
        "import sys, superscale.api, superscale.api.app, superscale.cli.serve;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_unknown_checkpoint_or_bad_setting_is_a_usage_error(command: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    bad_checkpoint = subprocess.run(
        [*SUPERSCALE, command, "--checkpoint", "v9", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad_checkpoint.returncode == 2
    assert "unknown checkpoint(s) ['v9']" in bad_checkpoint.stderr
    bad_port = subprocess.run(
        [*SUPERSCALE, command, "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SUPERSCALE_PORT": "abc"},
    )
    assert bad_port.returncode == 2 and "invalid setting" in bad_port.stderr
    assert "Traceback" not in bad_port.stderr
    assert not data.exists()  # refused before anything was created


def test_ssrf_guard_off_warns_as_loudly_as_no_auth(tmp_path: Path) -> None:
    """SUPERSCALE_SSRF_GUARD=false turned the guard off without a word."""
    port = free_port()
    env = {**os.environ, "SUPERSCALE_SSRF_GUARD": "false"}
    proc = subprocess.Popen(
        [*SUPERSCALE, "serve", "--workers", "0", "--port", str(port), "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "SSRF GUARD IS OFF" in out
