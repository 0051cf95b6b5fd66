"""The SQLite write-lock drill (issue 15.5): another process holds the database's write lock;
submits wait for it, but status polls — reads of a WAL database — must not queue behind them.
They did: the blocked writes used up the request thread pool, and polls waited ~28 s."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from .server import live_server

SUBMIT = "/queue/fal-ai/aura-sr"
INPUT = {"image_url": "data:image/png;base64,iVBORw0KGgo="}


def test_status_polls_do_not_wait_behind_writes_blocked_on_a_lock(tmp_path: Path) -> None:
    with live_server(tmp_path, workers=0, auth=False) as srv, httpx.Client(timeout=60) as c:
        status_url = c.post(f"{srv.url}{SUBMIT}", json=INPUT).json()["status_url"]
        holder = sqlite3.connect(tmp_path / "superscale.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        try:
            blocked = ThreadPoolExecutor(60)
            submits = [
                blocked.submit(httpx.post, f"{srv.url}{SUBMIT}", json=INPUT, timeout=60)
                for _ in range(60)  # more than the default thread pool's 40
            ]
            time.sleep(1.0)  # let them all reach the store and wait on the lock
            assert not any(s.done() for s in submits), "the lock did not hold the writes"
            slowest = 0.0
            for _ in range(5):
                t0 = time.monotonic()
                r = c.get(status_url)
                slowest = max(slowest, time.monotonic() - t0)
                assert r.status_code == 202, r.text
            assert slowest < 1.0, f"a status poll waited {slowest:.1f} s behind blocked writes"
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # Released: every waiting submit goes through.
        assert [s.result().status_code for s in submits] == [200] * 60
        blocked.shutdown()
