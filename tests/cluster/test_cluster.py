"""The scale-out deployment on one machine: 2 API servers (`superscale serve --no-worker`) and 3
`superscale worker` processes on a fresh PostgreSQL database and a real S3 bucket, configured by
URL from the environment only. 60 jobs go in across both servers; one worker is killed with
SIGKILL in the middle of a job. Every job must complete exactly once, none may be lost, every
output must download from either server, and status streams on both servers must see every
state change of the jobs they follow."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import PG_URL, pg_unreachable
from fixture_http import FixtureServer, Reply
from s3server import SeaweedS3
from superscale import webhooks
from superscale.jobs import JobStore, open_job_store

from .harness import QUEUE, Cluster, fresh_database, png_data_uri, wait_for

JOBS = 60
LEASE_SECONDS = 2.0
STREAMED = 3  # jobs per server whose stream is followed on both servers


@pytest.fixture
def database_url() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    try:
        with fresh_database(PG_URL) as url:
            yield url
    except psycopg.OperationalError as exc:
        pg_unreachable(exc)


@pytest.fixture
def bucket(s3_server: SeaweedS3) -> str:
    name = f"cluster-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def receiver() -> Iterator[FixtureServer]:
    """A loopback webhook receiver."""
    server = FixtureServer()
    server.routes["/hook"] = Reply(200)
    yield server
    server.close()


class Stream(threading.Thread):
    """Follows one job's status stream (with logs) on one server, recording every event."""

    def __init__(self, base_url: str, key: str, request_id: str) -> None:
        super().__init__(daemon=True)
        self.url = f"{base_url}{QUEUE}/requests/{request_id}/status/stream?logs=1"
        self.headers = {"Authorization": f"Key {key}"}
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.opened = threading.Event()

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, headers=self.headers, timeout=180) as r:
                r.raise_for_status()
                self.opened.set()
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        self.events.append(json.loads(line[6:]))
        except BaseException as exc:  # reported by the test, not lost in a thread
            self.error = exc
        finally:
            self.opened.set()

    def states(self) -> list[str]:
        """The distinct states in the order they were seen."""
        seen: list[str] = []
        for event in self.events:
            if not seen or seen[-1] != event["status"]:
                seen.append(event["status"])
        return seen

    def log_messages(self) -> list[str]:
        return [entry["message"] for event in self.events for entry in event.get("logs") or []]


@pytest.mark.slow
def test_two_servers_three_workers_one_killed(
    tmp_path: Path,
    small_model_dir: Path,
    database_url: str,
    s3_server: SeaweedS3,
    bucket: str,
    receiver: FixtureServer,
) -> None:
    env = {
        **s3_server.env(),
        "SUPERSCALE_LEASE_SECONDS": str(LEASE_SECONDS),
        "SUPERSCALE_SSRF_GUARD": "false",  # the webhook receiver is on loopback
    }
    storage_url = f"s3://{bucket}/outputs"
    # One webhook signing key for every process (SUPERSCALE_WEBHOOK_KEY, set by the harness),
    # as docs/deployment.md tells operators; each process keeps its own data directory.
    with Cluster(tmp_path / "cluster", small_model_dir, database_url, storage_url, env) as cluster:
        # All five start at once on an empty database: migrations must not trip over each other.
        a, b = cluster.start_server(), cluster.start_server()
        for _ in range(3):
            cluster.start_worker()
        cluster.wait_ready()
        key = cluster.cli("keys", "create", "--name", "cluster test").strip()
        auth = {"Authorization": f"Key {key}"}
        servers = [a, b]

        def submit(server_url: str, image_url: str, hook: bool = False, **extra: Any) -> str:
            r = httpx.post(
                f"{server_url}{QUEUE}",
                json={"image_url": image_url, **extra},
                params={"fal_webhook": f"{receiver.url}/hook"} if hook else None,
                # Followed jobs go last (fal's low priority): they run after the others.
                headers={**auth, "x-fal-queue-priority": "low"} if hook else auth,
            )
            assert r.status_code == 200, r.text
            return str(r.json()["request_id"])

        # The workers are paused (SIGSTOP; idle, they hold no lease) while the jobs go in and
        # the streams open, so every followed job is certainly still queued when its streams
        # open, however fast the workers would otherwise drain the queue.
        for worker in cluster.workers:
            worker.popen.send_signal(signal.SIGSTOP)
        # The victim: a long job (64 + 81 tiles) that is certain to be mid-run when its worker
        # dies. Then 59 small ones, alternating servers; the last few are followed by streams.
        long_job = submit(a.url, png_data_uri(512, 512), overlapping_tiles=True)
        submitted: dict[str, str] = {long_job: a.url}
        for i in range(1, JOBS - 2 * STREAMED):
            server = servers[i % 2]
            submitted[submit(server.url, png_data_uri(32, 32, seed=i))] = server.url
        streams: list[Stream] = []
        streamed: list[str] = []
        for i in range(2 * STREAMED):
            server = servers[i % 2]
            # 16 tiles: IN_PROGRESS lasts long enough for a stream to see it even on a busy CPU.
            rid = submit(server.url, png_data_uri(256, 256, seed=i), hook=True)
            submitted[rid] = server.url
            streamed.append(rid)
            for other in servers:  # the same job followed on both servers
                streams.append(Stream(other.url, key, rid))
                streams[-1].start()
        assert len(submitted) == JOBS
        try:
            for stream in streams:
                assert stream.opened.wait(30)
        finally:
            for worker in cluster.workers:
                worker.popen.send_signal(signal.SIGCONT)

        store = open_job_store(database_url)
        try:
            holder = wait_for(
                lambda: _running_on(store, long_job), 120, f"the long job to run\n{cluster.logs()}"
            )
            victim = next(w for w in cluster.workers if w.name == holder)
            victim.kill()

            def all_done() -> bool:
                return all(_state(store, rid) == "COMPLETED" for rid in submitted)

            wait_for(all_done, 180, f"every job to complete\n{cluster.logs()}")
            wait_for(lambda: len(receiver.requests) >= len(streamed), 60, "the webhooks")
            jobs = {rid: store.get(rid) for rid in submitted}
            logs = {rid: [r.message for r in store.logs(rid)] for rid in submitted}
        finally:
            store.close()

        for stream in streams:
            stream.join(30)

        # None lost, none failed; the long job was retried on a worker that is still alive.
        for rid, job in jobs.items():
            assert job is not None and job.error is None, (rid, job)
        long = jobs[long_job]
        assert long is not None
        assert long.attempts >= 2, long
        assert f"running {long_job} (attempt 1)" in victim.log_text()
        ran_on = [w.name for w in cluster.workers if f"running {long_job}" in w.log_text()]
        assert holder in ran_on and len(ran_on) >= 2, cluster.logs()  # retried elsewhere
        assert any(m.startswith("tiles ") for m in logs[long_job])
        print(f"killed {holder} mid-job; the long job ran on {ran_on}, {long.attempts} attempts")

        # Exactly once: one "done" line per job (a second run to completion would log another)
        # and exactly one output object per job in the bucket, each the one its result names.
        for rid, messages in logs.items():
            assert sum(m.startswith("done: ") for m in messages) == 1, (rid, messages)
        objects = _list_keys(s3_server, bucket, "outputs/files/")
        results = {}
        for rid, origin in submitted.items():
            elsewhere = b.url if origin == a.url else a.url  # not the server it went in by
            r = httpx.get(f"{elsewhere}{QUEUE}/requests/{rid}", headers=auth, timeout=30)
            assert r.status_code == 200, (rid, r.text)
            results[rid] = r.json()["image"]
        named = sorted(image["url"].split("/files/", 1)[1] for image in results.values())
        assert sorted(k.removeprefix("outputs/files/") for k in objects) == named
        assert len(set(named)) == JOBS

        # Every output downloads from either server, byte for byte the same.
        with httpx.Client(timeout=60) as client:
            for rid, image in results.items():
                path = "/files/" + image["url"].split("/files/", 1)[1]
                bodies = [client.get(f"{server.url}{path}") for server in servers]
                for r in bodies:
                    assert r.status_code == 200, (rid, r.status_code)
                    assert r.content[:8] == b"\x89PNG\r\n\x1a\n"
                assert bodies[0].content == bodies[1].content
                assert len(bodies[0].content) == image["file_size"]
        assert (results[long_job]["width"], results[long_job]["height"]) == (2048, 2048)

        # Streams on both servers saw the whole life of each followed job, with its logs.
        for stream in streams:
            assert stream.error is None, stream.error
            assert stream.states() == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"], stream.events
            messages = stream.log_messages()
            assert any(m.startswith("tiles ") for m in messages), messages
            assert sum(m.startswith("done: ") for m in messages) == 1, messages

        # Webhooks of the followed jobs: one each, sent by whichever process finished the job,
        # and verifiable against the JWKS of either server (they all share one signing key).
        time.sleep(1.0)  # room for a duplicate delivery to show up
        delivered = sorted(d.headers["X-Fal-Webhook-Request-Id"] for d in receiver.requests)
        assert delivered == sorted(streamed)
        for server in servers:
            jwks = httpx.get(f"{server.url}/.well-known/jwks.json").json()
            for delivery in receiver.requests:
                assert webhooks.verify(jwks, delivery.headers, delivery.body), server.name
                assert json.loads(delivery.body)["status"] == "OK"
        # The key came from the environment: no process made one in its data directory.
        assert not list(cluster.workdir.glob(f"*/{webhooks.KEY_FILE}"))


def _state(store: JobStore, request_id: str) -> str | None:
    job = store.get(request_id)
    return job.state if job else None


def _running_on(store: JobStore, request_id: str) -> str | None:
    """The worker running the job, once it has finished at least one tile batch."""
    job = store.get(request_id)
    if job is None or job.state != "IN_PROGRESS":
        return None
    if not any(r.message.startswith("tiles ") for r in store.logs(request_id)):
        return None
    return job.worker_id


def _list_keys(s3_server: SeaweedS3, bucket: str, prefix: str) -> list[str]:
    client = s3_server.client()
    keys: list[str] = []
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys
