"""Helpers for tests that run superscale as real processes on loopback: the command, a free
port, polling until a condition holds or a server answers."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

SUPERSCALE = [sys.executable, "-m", "superscale"]


def free_port() -> int:
    """A loopback TCP port nothing listens on right now (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll `condition` until it returns something true, and return that; transport errors
    count as false. Raises TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except httpx.TransportError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def wait_serving(
    url: str,
    process: subprocess.Popen[Any],
    output: Callable[[], str],
    path: str = "/ready",
    timeout: float = 60.0,
) -> None:
    """Until `GET {url}{path}` answers 200. Fails at once, with `output()` (the process's log),
    if the process exits first, and with it too on timeout."""

    def serving() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{output()}")
        return httpx.get(f"{url}{path}", timeout=2).status_code == 200

    try:
        wait_for(serving, timeout, f"{url}{path}", interval=0.1)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{output()}") from None
