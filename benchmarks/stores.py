"""Job store throughput and wake-up latency, SQLite vs PostgreSQL.

    .venv/bin/python benchmarks/stores.py [--jobs 500] [--pg postgresql://…]

Prints operations per second for submit, status (get + queue_position) and claim + complete
(1 and 4 threads), and how long a change made through one store object takes to wake a waiter
on another (SQLite: the version poll; PostgreSQL: LISTEN/NOTIFY).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import quote

from superscale.jobs import JobStore, NewJob, open_job_store


def _job() -> NewJob:
    return NewJob(endpoint="fal-ai/aura-sr", owner="k", input={"image_url": "x"}, checkpoint="v1")


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:8.0f}/s"


def _timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench(open_store: Callable[[], JobStore], jobs: int) -> dict[str, str]:
    store, other = open_store(), open_store()
    try:
        ids: list[str] = []
        out = {
            "submit": _rate(
                jobs, _timed(lambda: ids.extend(store.submit(_job()).id for _ in range(jobs)))
            )
        }

        def status() -> None:
            for rid in ids:
                store.get(rid)
                store.queue_position(rid)

        out["status"] = _rate(jobs, _timed(status))

        def drain(threads: int) -> None:
            def work() -> None:
                while (job := store.claim(threading.current_thread().name, 30)) is not None:
                    store.complete(job.id, threading.current_thread().name, {"ok": 1}, 0.0)

            pool = [threading.Thread(target=work, name=f"w{i}") for i in range(threads)]
            for t in pool:
                t.start()
            for t in pool:
                t.join()

        out["claim+complete x1"] = _rate(jobs, _timed(lambda: drain(1)))
        for _ in range(jobs):
            store.submit(_job())
        out["claim+complete x4"] = _rate(jobs, _timed(lambda: drain(4)))

        rid = store.submit(_job()).id
        delays = []
        for _ in range(20):
            seen = store.get(rid).version  # type: ignore[union-attr]
            fired = [0.0]

            def write(rid: str = rid, fired: list[float] = fired) -> None:
                fired[0] = time.perf_counter()
                other.append_log(rid, "x")

            threading.Timer(0.05, write).start()
            store.wait_for_change(rid, seen, timeout=5)
            delays.append(time.perf_counter() - fired[0])
        out["wake (other store) p50"] = f"{statistics.median(delays) * 1000:8.1f} ms"
        out["wake (other store) max"] = f"{max(delays) * 1000:8.1f} ms"
        return out
    finally:
        store.close()
        other.close()


@contextmanager
def pg_schema(url: str) -> Iterator[str]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            sep = "&" if "?" in url else "?"
            yield f"{url}{sep}options={quote(f'-csearch_path={schema}')}"
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--pg", default="postgresql://superscale@127.0.0.1:55432/test")
    args = parser.parse_args()
    results: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/jobs.db"
        results["sqlite"] = bench(lambda: open_job_store(url), args.jobs)
    with pg_schema(args.pg) as url:
        results["postgresql"] = bench(lambda: open_job_store(url), args.jobs)
    print(f"{'':26}{'sqlite':>14}{'postgresql':>14}")
    for row in results["sqlite"]:
        print(f"{row:26}{results['sqlite'][row]:>14}{results['postgresql'][row]:>14}")


if __name__ == "__main__":
    main()
