"""Helpers for tests that run superscale as real processes on loopback: the command, a free
port, polling until a condition holds or a server answers, a process tree and its memory."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
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


def descendants(pid: int) -> list[int]:
    """The process ids below `pid` (serve's children: its API and worker processes)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def rss_kb(pid: int) -> int:
    """Resident memory of one process (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kb(pid: int) -> int:
    """Resident memory of `pid` and every process below it."""
    return sum(rss_kb(p) for p in [pid, *descendants(pid)])
