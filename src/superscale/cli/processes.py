"""`serve`'s processes: the API (one process, or several on one port, each listening on a
socket of its own) apart from the workers (one process: the worker threads and webhook
delivery), so that answering requests never takes the engine's CPU time or GIL, and inference
never delays an answer.

The parent only supervises. It binds the socket (a port in use fails the command at once),
forwards each stop signal to every child — the children run in their own process group, so a
terminal's Ctrl-C reaches the parent alone and is forwarded once, as a SIGTERM: the first
drains, a second hands running jobs back (`superscale.worker.service`) — restarts a child that
dies, and exits 0 once all have stopped after a stop. Children die with the parent: a serve
killed outright (SIGKILL) is gone whole, its port free at once for the next start, and the job
it was running is run again once its lease expires, as before the split.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from superscale.api.metrics import MULTIPROC_ENV
from superscale.cli import options
from superscale.settings import Settings

log = logging.getLogger("superscale.serve")

# spawn, not fork: each child starts clean (no copied threads, locks or connections).
_SPAWN = multiprocessing.get_context("spawn")
RESTART_DELAY = 1.0  # before a child that died is started again
# A child exiting with an error this soon after its start failed to start (its settings, its
# store): starting it again would fail the same way, so serve stops. One killed (the OOM
# killer) or failing later is started again.
START_WINDOW = 10.0
ORPHAN_CHECK = 1.0  # how often a child looks for its parent, where the kernel cannot tell it
PR_SET_PDEATHSIG = 1
API_SWITCH_INTERVAL = 0.0005  # seconds (Python's default: 0.005)
GC_YOUNG_THRESHOLD = 20_000  # allocations between collections of young objects (default 700)
API_NICENESS = 5  # the API processes' nice value beside their workers (0: equal priority)


@dataclass
class ChildSpec:
    name: str
    target: Callable[..., None]
    args: tuple[Any, ...]
    process: BaseProcess | None = None
    started_at: float = 0.0
    restarts: int = field(default=0)


def _child_setup(parent: int, log_level: str) -> None:
    os.setpgid(0, 0)  # out of the terminal's process group: see the module's docstring
    options.setup_logging(log_level)
    if _die_with_parent() and os.getppid() == parent:
        return

    def guard() -> None:  # where the kernel cannot do it (not Linux): look, and stop
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=guard, name="orphan-guard", daemon=True).start()


def _die_with_parent() -> bool:
    """Ask Linux to SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)) == 0
    except (OSError, AttributeError):
        return False


def run_api(
    settings: Settings,
    sock: socket.socket,
    log_level: str,
    ssl: tuple[str | None, str | None],
    parent: int,
) -> None:
    """An API process: the app over its own store connections, serving its listening socket."""
    _child_setup(parent, log_level)
    # Store calls run in threads, some holding the database's write lock: at the default 5 ms
    # a busy event loop keeps the GIL from them that long each time, and every other writer
    # waits behind them.
    sys.setswitchinterval(API_SWITCH_INTERVAL)
    if settings.workers:
        # Inference first: where the worker shares the CPUs, the kernel gives it the time it
        # needs and the API the rest (polls answered a few ms later, if at all; 1,000 polls/s
        # cost a 2-core worker ~22% of its jobs/s at equal priority, ~7% at this one).
        os.nice(API_NICENESS)
    import uvicorn

    from superscale.api import create_app

    _, job_store, file_store = options.open_stores(settings)
    try:
        config = uvicorn.Config(
            create_app(settings, job_store, file_store),
            ssl_certfile=ssl[0],
            ssl_keyfile=ssl[1],
            proxy_headers=True,
            log_level=log_level.lower(),
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        _settle_garbage_collector()
        server.run(sockets=[sock])
    finally:
        job_store.close()
        file_store.close()


def _settle_garbage_collector() -> None:
    """What exists at the start lives as long as the process: out of the collector's sight
    (a full collection over it took ~13 ms, a stall every answer waiting then pays), and
    young objects collected less often (every 700 allocations: thousands of times a
    second under load; ~10% of the polls' throughput)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def run_workers(settings: Settings, log_level: str, parent: int) -> None:
    """The worker process: `settings.workers` worker threads (0: none) and webhook delivery."""
    _child_setup(parent, log_level)
    options.run_service(settings, workers=settings.workers)


@contextlib.contextmanager
def shared_metrics(api_processes: int) -> Iterator[None]:
    """With several API processes, a directory where each keeps its metrics for the others
    (prometheus_client's multiprocess mode: `/metrics` then sums them all), removed after."""
    if api_processes < 2 or os.environ.get(MULTIPROC_ENV):
        yield
        return
    directory = tempfile.mkdtemp(prefix="superscale-metrics-")
    os.environ[MULTIPROC_ENV] = directory  # children inherit it at their start
    try:
        yield
    finally:
        del os.environ[MULTIPROC_ENV]
        shutil.rmtree(directory, ignore_errors=True)


class Supervisor:
    """Starts the children, keeps them running, and stops them on SIGTERM or SIGINT."""

    def __init__(self, children: list[ChildSpec]) -> None:
        self.children = children
        self.stops = 0

    def _start(self, child: ChildSpec) -> None:
        child.process = _SPAWN.Process(target=child.target, args=child.args, name=child.name)
        child.process.start()
        child.started_at = time.monotonic()
        if self.stops and child.process.pid:  # a stop came while it was starting
            os.kill(child.process.pid, signal.SIGTERM)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stops += 1
        if self.stops == 1:
            log.info("stopping: the API stops, running jobs may finish (signal %d)", signum)
        for child in self.children:
            if child.process is not None and child.process.pid and child.process.is_alive():
                os.kill(child.process.pid, signal.SIGTERM)

    def run(self) -> int:
        """Until every child has stopped after a stop signal (0), or one failed to start (1)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for child in self.children:
            if not self.stops:
                self._start(child)
        failed = False
        while True:
            alive = [
                c.process.sentinel for c in self.children if c.process and c.process.is_alive()
            ]
            if not alive:
                break
            wait(alive, timeout=0.5)
            if self.stops:
                continue
            for child in self.children:
                process = child.process
                if process is None or process.is_alive():
                    continue
                exitcode = process.exitcode or 0
                if exitcode > 0 and time.monotonic() - child.started_at < START_WINDOW:
                    log.error(
                        "%s exited (%s) right after it started: stopping",
                        child.name,
                        process.exitcode,
                    )
                    failed = True
                    self._on_signal(signal.SIGTERM, None)
                    break
                child.restarts += 1
                log.error(
                    "%s exited (%s); starting it again (%d restarts)",
                    child.name,
                    process.exitcode,
                    child.restarts,
                )
                time.sleep(RESTART_DELAY)
                if not self.stops:
                    self._start(child)
        return 1 if failed else 0
