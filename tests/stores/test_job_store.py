"""One suite for every `JobStore`: SQLite and PostgreSQL must behave alike."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from superscale.jobs import (
    ApiKey,
    CancelOutcome,
    Job,
    JobError,
    JobStore,
    NewJob,
    QueueFull,
    open_job_store,
)

EP = "fal-ai/aura-sr"


def new_job(checkpoint: str = "v1", **kw: object) -> NewJob:
    fields: dict = {"endpoint": EP, "owner": "k1", "input": {"image_url": "data:,x"}}
    fields.update(kw)
    return NewJob(checkpoint=checkpoint, **fields)


def boom() -> JobError:
    return JobError(status_code=500, message="boom", error_type="internal_error")


# --- jobs ---------------------------------------------------------------------------------


def test_submit_then_get_round_trips_every_field(store: JobStore) -> None:
    job = store.submit(
        new_job(
            "v2",
            input={"image_url": "https://x/y.png", "seed": 3},
            webhook_url="https://hook",
            priority=-1,
            start_deadline=time.time() + 60,
            file_ttl=120.0,
            request_id="req-1",
        )
    )
    assert job.id == "req-1" and job.state == "IN_QUEUE" and job.version == 1
    got = store.get("req-1")
    assert got == job
    assert got.input == {"image_url": "https://x/y.png", "seed": 3}
    assert (got.checkpoint, got.webhook_url, got.priority, got.file_ttl) == (
        "v2",
        "https://hook",
        -1,
        120.0,
    )
    assert store.get("nope") is None
    generated = store.submit(new_job())
    assert generated.id and generated.id != "req-1"
    with pytest.raises(ValueError, match="already exists"):
        store.submit(new_job(request_id="req-1"))
    # The same submit again (the API retrying after a lost commit answer) is the same job.
    again = store.submit(
        new_job("v2", input={"image_url": "https://x/y.png", "seed": 3}, request_id="req-1")
    )
    assert again == store.get("req-1")


def test_claim_is_fifo_within_a_priority(store: JobStore) -> None:
    ids = [store.submit(new_job()).id for _ in range(3)]
    claimed = [store.claim("w", 30) for _ in range(4)]
    assert [j.id if j else None for j in claimed] == [*ids, None]
    first = claimed[0]
    assert first is not None
    assert first.state == "IN_PROGRESS" and first.worker_id == "w" and first.attempts == 1
    assert first.lease_expires_at is not None and first.lease_expires_at > time.time() + 25
    assert first.started_at is not None and first.version == 2


def test_claim_prefers_higher_priority_and_filters_checkpoints(store: JobStore) -> None:
    low = store.submit(new_job(priority=-1)).id
    normal_v2 = store.submit(new_job("v2")).id
    normal = store.submit(new_job()).id
    assert store.claim("w", 30, checkpoints=["v1"]).id == normal  # type: ignore[union-attr]
    assert store.claim("w", 30, checkpoints=["v1"]).id == low  # type: ignore[union-attr]
    assert store.claim("w", 30, checkpoints=["v1"]) is None
    assert store.claim("w", 30, checkpoints=[]) is None
    assert store.claim("w", 30).id == normal_v2  # type: ignore[union-attr]


def test_claim_batch_takes_the_head_then_queued_jobs_of_its_key(store: JobStore) -> None:
    head = store.submit(new_job(batch_key="v1:seed=0", priority=1)).id
    other = store.submit(new_job(batch_key="v1:seed=7")).id
    same = [store.submit(new_job(batch_key="v1:seed=0")).id for _ in range(3)]
    loner = store.submit(new_job()).id  # no key: never batched
    assert store.get(head).batch_key == "v1:seed=0"  # type: ignore[union-attr]
    batch = store.claim_batch("w", 30, ["v1"], max_jobs=3)
    assert [j.id for j in batch] == [head, *same[:2]]
    assert all(j.state == "IN_PROGRESS" and j.worker_id == "w" for j in batch)
    # The next batch starts at the queue's head again: the older job of another key.
    assert [j.id for j in store.claim_batch("w", 30, ["v1"], max_jobs=3)] == [other]
    assert [j.id for j in store.claim_batch("w", 30, ["v1"], max_jobs=3)] == [same[2]]
    assert [j.id for j in store.claim_batch("w", 30, ["v1"], max_jobs=3)] == [loner]
    assert store.claim_batch("w", 30, ["v1"], max_jobs=3) == []


def test_claim_by_batch_key_respects_checkpoints_and_state(store: JobStore) -> None:
    v2 = store.submit(new_job("v2", batch_key="k")).id
    cancelled = store.submit(new_job(batch_key="k")).id
    store.cancel(cancelled)
    assert store.claim("w", 30, ["v1"], batch_key="k") is None
    assert store.claim("w", 30, ["v2"], batch_key="other") is None
    assert store.claim("w", 30, ["v2"], batch_key="k").id == v2  # type: ignore[union-attr]
    assert store.claim_batch("w", 30, ["v1"], max_jobs=4) == []


def test_a_version_1_database_gains_batch_keys_in_place(
    job_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Databases made before cross-job batching are migrated on open; their jobs have no key
    and are claimed alone."""
    from superscale.jobs import migrate

    every = migrate.migrations
    monkeypatch.setattr(migrate, "migrations", lambda dialect: every(dialect)[:1])
    open_job_store(job_store_url).close()
    insert = (
        "INSERT INTO jobs (id, endpoint, owner, input, checkpoint, state, version, created_at) "
        "VALUES ('old', 'e', '', '{}', 'v1', 'IN_QUEUE', 1, 1.0)"
    )
    if job_store_url.startswith("sqlite"):
        with closing(sqlite3.connect(job_store_url.removeprefix("sqlite:///"))) as conn:
            conn.execute(insert)
            conn.commit()
    else:
        import psycopg

        with psycopg.connect(job_store_url, autocommit=True) as pg:
            pg.execute(insert)
    monkeypatch.undo()
    store = open_job_store(job_store_url)
    try:
        old = store.get("old")
        assert old is not None and old.batch_key is None
        new = store.submit(new_job(batch_key="v1:seed=0")).id
        assert [j.id for j in store.claim_batch("w", 30, None, 4)] == ["old"]
        assert [j.id for j in store.claim_batch("w", 30, None, 4)] == [new]
    finally:
        store.close()


def _columns(job_store_url: str, table: str) -> set[str]:
    if job_store_url.startswith("sqlite"):
        with closing(sqlite3.connect(job_store_url.removeprefix("sqlite:///"))) as conn:
            return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    import psycopg

    with psycopg.connect(job_store_url, autocommit=True) as pg:
        rows = pg.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s",
            (table,),
        ).fetchall()
    return {row[0] for row in rows}


def test_migrated_tables_have_exactly_the_fields_of_their_records(
    store: JobStore, job_store_url: str
) -> None:
    """Each dialect's migrations, run in full, end with the columns the code reads: those of
    `Job` (plus `seq`, the submission order), `ApiKey` and `WebhookDelivery`."""
    from dataclasses import fields

    from superscale.jobs import WebhookDelivery
    from superscale.jobs.statements import JOB_COLUMNS, WEBHOOK_COLUMNS

    job_fields = {f.name for f in fields(Job)}
    assert _columns(job_store_url, "jobs") == job_fields | {"seq"}
    assert set(JOB_COLUMNS.split(", ")) == job_fields
    webhook_fields = {f.name for f in fields(WebhookDelivery)}
    assert _columns(job_store_url, "webhooks") == webhook_fields
    assert set(WEBHOOK_COLUMNS.split(", ")) == webhook_fields
    assert _columns(job_store_url, "api_keys") == {f.name for f in fields(ApiKey)}
    assert _columns(job_store_url, "job_logs") == {
        "id",
        "request_id",
        "message",
        "level",
        "timestamp",
    }


def test_concurrent_claimers_never_share_a_job(open_store: Callable[[], JobStore]) -> None:
    stores = [open_store(), open_store()]  # two "servers", four threads each
    ids = {stores[0].submit(new_job()).id for _ in range(60)}
    got: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def claimer(store: JobStore, name: str) -> None:
        start.wait()
        while (job := store.claim(name, 30)) is not None:
            with lock:
                got.append(job.id)

    threads = [threading.Thread(target=claimer, args=(stores[i % 2], f"w{i}")) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert Counter(got).most_common(1)[0][1] == 1
    assert set(got) == ids


def test_concurrent_batch_claimers_never_share_a_job(open_store: Callable[[], JobStore]) -> None:
    stores = [open_store(), open_store()]
    ids = {stores[0].submit(new_job(batch_key=f"v1:seed={i % 3}")).id for i in range(60)}
    batches: list[list[Job]] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def claimer(store: JobStore, name: str) -> None:
        start.wait()
        while batch := store.claim_batch(name, 30, ["v1"], max_jobs=4):
            with lock:
                batches.append(batch)

    threads = [threading.Thread(target=claimer, args=(stores[i % 2], f"w{i}")) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for batch in batches:  # one key, one worker, at most max_jobs
        assert len({(job.batch_key, job.worker_id) for job in batch}) == 1 and len(batch) <= 4
    got = [job.id for batch in batches for job in batch]
    assert Counter(got).most_common(1)[0][1] == 1
    assert set(got) == ids


def test_worker_processes_never_share_a_job(store: JobStore, job_store_url: str) -> None:
    """As with `superscale worker` processes: separate processes claiming from one store."""
    ids = {store.submit(new_job()).id for _ in range(40)}
    script = (
        "import sys, time\n"
        "from superscale.jobs import open_job_store\n"
        "s = open_job_store(sys.argv[1])\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # start together\n"
        "while (job := s.claim(sys.argv[3], 30)) is not None:\n"
        "    print(job.id, flush=True)\n"
        "    s.complete(job.id, sys.argv[3], {}, 0.0)\n"
        "s.close()\n"
    )
    start = str(time.time() + 1.5)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, job_store_url, start, f"p{i}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    claimed = [rid for out in outputs for rid in out]
    assert sorted(claimed) == sorted(ids)  # each job exactly once
    assert store.counts() == {"IN_QUEUE": 0, "IN_PROGRESS": 0, "COMPLETED": 40}


def test_queue_position_counts_runnable_jobs_ahead(store: JobStore) -> None:
    a, b, c = (store.submit(new_job()).id for _ in range(3))
    assert [store.queue_position(x) for x in (a, b, c)] == [0, 1, 2]
    store.claim("w", 30)
    assert [store.queue_position(x) for x in (a, b, c)] == [0, 0, 1]
    urgent = store.submit(new_job(priority=5)).id
    low = store.submit(new_job(priority=-1)).id
    assert [store.queue_position(x) for x in (urgent, b, c, low)] == [0, 1, 2, 3]
    store.cancel(b)
    assert [store.queue_position(x) for x in (urgent, c, low)] == [0, 1, 2]
    assert store.queue_position("nope") == 0


def test_queue_full_is_per_endpoint_and_frees_up(store: JobStore) -> None:
    store.submit(new_job(), max_unfinished=2)
    store.submit(new_job(), max_unfinished=2)
    with pytest.raises(QueueFull) as info:
        store.submit(new_job(), max_unfinished=2)
    assert 1 <= info.value.retry_after <= 60
    store.submit(new_job(endpoint="other/app"), max_unfinished=2)
    job = store.claim("w", 30)
    assert job is not None
    with pytest.raises(QueueFull):  # running jobs are unfinished too
        store.submit(new_job(), max_unfinished=2)
    store.complete(job.id, "w", {"ok": True}, 0.1)
    store.submit(new_job(), max_unfinished=2)
    assert store.counts() == {"IN_QUEUE": 3, "IN_PROGRESS": 0, "COMPLETED": 1}


def test_queue_full_is_atomic_under_concurrent_submits(
    open_store: Callable[[], JobStore],
) -> None:
    stores = [open_store(), open_store()]
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(10)

    def submitter(store: JobStore) -> None:
        start.wait()
        try:
            store.submit(new_job(), max_unfinished=4)
            result = "ok"
        except QueueFull:
            result = "full"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=submitter, args=(stores[i % 2],)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["full"] * 6 + ["ok"] * 4
    assert stores[0].counts()["IN_QUEUE"] == 4


def test_cancel_in_each_state(store: JobStore) -> None:
    queued = store.submit(new_job()).id
    assert store.cancel(queued) is CancelOutcome.CANCELLED
    job = store.get(queued)
    assert job is not None and job.state == "COMPLETED" and job.version == 2
    assert job.error is not None and job.error.error_type == "client_cancelled"
    assert job.error.to_body()["error_type"] == "client_cancelled"
    assert store.claim("w", 30) is None  # a cancelled job is never run

    running = store.submit(new_job()).id
    assert store.claim("w", 30).id == running  # type: ignore[union-attr]
    before = store.get(running).version  # type: ignore[union-attr]
    assert store.cancel(running) is CancelOutcome.REQUESTED
    job = store.get(running)
    assert job is not None and job.state == "IN_PROGRESS"
    assert job.cancel_requested and job.version == before + 1
    # The worker still holds it (so it can report the cancellation) and sees the request.
    assert store.heartbeat(running, "w", 30)
    assert store.get(running).cancel_requested  # type: ignore[union-attr]
    assert store.fail(running, "w", JobError(400, "cancelled", "cancelled"))

    assert store.cancel(running) is CancelOutcome.ALREADY_COMPLETED
    assert store.cancel(queued) is CancelOutcome.ALREADY_COMPLETED
    assert store.cancel("nope") is CancelOutcome.NOT_FOUND


def test_lease_expiry_requeues_then_gives_up(store: JobStore) -> None:
    rid = store.submit(new_job()).id
    assert store.claim("w1", 30).id == rid  # type: ignore[union-attr]
    assert store.recover_expired(max_attempts=2) == []  # lease still valid
    assert store.heartbeat(rid, "w1", -1)  # the lease runs out (as when a worker lets go)
    assert store.recover_expired(max_attempts=2) == [rid]
    job = store.get(rid)
    assert job is not None and job.state == "IN_QUEUE" and job.worker_id is None
    # The first worker lost it: its heartbeat and its result are refused.
    assert not store.heartbeat(rid, "w1", 30)
    assert not store.complete(rid, "w1", {"late": True}, 1.0)
    assert not store.fail(rid, "w1", boom())

    again = store.claim("w2", 0.05)
    assert again is not None and again.id == rid and again.attempts == 2
    time.sleep(0.1)
    assert store.recover_expired(max_attempts=2) == [rid]
    job = store.get(rid)
    assert job is not None and job.state == "COMPLETED" and job.error is not None
    assert job.error.status_code == 500 and "2 time" in job.error.message
    assert not store.complete(rid, "w2", {"late": True}, 1.0)


def test_heartbeat_keeps_the_lease(store: JobStore) -> None:
    rid = store.submit(new_job()).id
    store.claim("w", 0.05)
    version = store.get(rid).version  # type: ignore[union-attr]
    time.sleep(0.1)  # expired, but nobody recovered it yet: the worker still holds it
    assert store.heartbeat(rid, "w", 30)
    assert store.recover_expired(max_attempts=3) == []  # renewed for 30 s
    assert not store.heartbeat(rid, "other", 30)
    assert store.get(rid).version == version  # type: ignore[union-attr]  # renewals are quiet


def test_release_requeues_without_charging_an_attempt(store: JobStore) -> None:
    rid = store.submit(new_job()).id
    claimed = store.claim("w", 30)
    assert claimed is not None and claimed.attempts == 1
    assert not store.release(rid, "other")  # only its holder hands it back
    assert store.release(rid, "w")
    job = store.get(rid)
    assert job is not None and job.state == "IN_QUEUE" and job.worker_id is None
    assert job.attempts == 0 and job.version == claimed.version + 1
    assert not store.release(rid, "w")  # no longer held
    again = store.claim("w2", 30)
    assert again is not None and again.id == rid and again.attempts == 1


def test_cancel_requested_job_whose_worker_died_ends_cancelled(store: JobStore) -> None:
    rid = store.submit(new_job()).id
    store.claim("w", 0.05)
    store.cancel(rid)
    time.sleep(0.1)
    assert store.recover_expired(max_attempts=3) == [rid]
    job = store.get(rid)
    assert job is not None and job.state == "COMPLETED"
    assert job.error is not None and job.error.error_type == "client_cancelled"


def test_complete_after_the_lease_moved_on_is_refused(store: JobStore) -> None:
    rid = store.submit(new_job()).id
    store.claim("w1", 0.05)
    time.sleep(0.1)
    store.recover_expired(max_attempts=3)
    store.claim("w2", 30)
    assert not store.complete(rid, "w1", {"from": "w1"}, 1.0)
    assert store.complete(rid, "w2", {"from": "w2"}, 0.25)
    job = store.get(rid)
    assert job is not None and job.state == "COMPLETED" and job.error is None
    assert job.output == {"from": "w2"} and job.inference_time == 0.25
    assert job.finished_at is not None and job.worker_id is None
    assert not store.complete(rid, "w2", {"twice": True}, 0.25)


def test_fail_without_worker_and_twice(store: JobStore) -> None:
    rid = store.submit(new_job()).id
    assert store.fail(rid, None, JobError(422, "bad image", "input_error", detail=[{"x": 1}]))
    job = store.get(rid)
    assert job is not None and job.state == "COMPLETED"
    assert job.error == JobError(422, "bad image", "input_error", detail=[{"x": 1}])
    assert job.error.to_body() == {"detail": [{"x": 1}], "error_type": "input_error"}
    assert not store.fail(rid, None, boom())
    assert not store.fail("nope", None, boom())


def test_logs_keep_order_and_bump_the_version(store: JobStore) -> None:
    rid = store.submit(new_job()).id
    store.append_log(rid, "tiles 1/4")
    store.append_log(rid, "tiles 4/4", level="DEBUG")
    logs = store.logs(rid)
    assert [(x.message, x.level) for x in logs] == [("tiles 1/4", "INFO"), ("tiles 4/4", "DEBUG")]
    assert logs[0].timestamp <= logs[1].timestamp and logs[0].timestamp > time.time() - 60
    assert store.get(rid).version == 3  # type: ignore[union-attr]
    store.append_log("nope", "lost")  # no job: nothing to attach it to, and no error
    assert store.logs("nope") == []


def test_wait_for_change_wakes_on_another_threads_write(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from superscale.jobs import postgres, sqlite

    # Re-reads far slower than the 1.5 s bound below: only a wake-up by the write passes it
    # (SQLite's usual 0.2 s poll would pass it without one).
    monkeypatch.setattr(sqlite, "POLL_INTERVAL", 5.0)
    monkeypatch.setattr(postgres, "POLL_INTERVAL", 5.0)
    monkeypatch.setattr(postgres, "LISTENING_POLL", 5.0)
    rid = store.submit(new_job()).id
    threading.Timer(0.1, store.append_log, args=(rid, "hello")).start()
    t0 = time.monotonic()
    assert store.wait_for_change(rid, 1, timeout=5) == 2
    assert time.monotonic() - t0 < 1.5
    # Nothing changes: it returns the same version at the timeout.
    t0 = time.monotonic()
    assert store.wait_for_change(rid, 2, timeout=0.3) == 2
    assert 0.25 <= time.monotonic() - t0 < 2
    # Already behind: returns at once.
    assert store.wait_for_change(rid, 1, timeout=5) == 2
    assert store.wait_for_change("nope", 0, timeout=0.1) == -1


def test_wait_for_change_sees_another_stores_write(open_store: Callable[[], JobStore]) -> None:
    api, worker = open_store(), open_store()
    rid = api.submit(new_job()).id
    threading.Timer(0.1, worker.claim, args=("w", 30)).start()
    t0 = time.monotonic()
    assert api.wait_for_change(rid, 1, timeout=5) == 2
    # SQLite: seen by the 0.2 s version poll; PostgreSQL: woken by NOTIFY (its fallback
    # poll while listening is 2 s, so this fails if notifications do not arrive).
    assert time.monotonic() - t0 < 1.5


def test_wait_for_change_sees_another_process(
    store: JobStore, job_store_url: str, tmp_path: Path
) -> None:
    rid = store.submit(new_job()).id
    script = (
        "import sys, time\n"
        "from superscale.jobs import open_job_store\n"
        "s = open_job_store(sys.argv[1])\n"
        "time.sleep(0.3)\n"
        "s.append_log(sys.argv[2], 'from another process')\n"
        "s.close()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, job_store_url, rid])
    try:
        assert store.wait_for_change(rid, 1, timeout=20) == 2
        assert [x.message for x in store.logs(rid)] == ["from another process"]
    finally:
        assert proc.wait(20) == 0


def test_expire_deadlines_fails_late_queued_jobs(store: JobStore) -> None:
    now = time.time()
    late = store.submit(new_job(start_deadline=now - 1)).id
    fine = store.submit(new_job(start_deadline=now + 600)).id
    running = store.submit(new_job(start_deadline=now + 0.05, priority=9)).id
    assert store.claim("w", 30).id == running  # type: ignore[union-attr]
    assert store.queue_position(fine) == 0  # the late one is not runnable, so not ahead
    assert store.expire_deadlines(now=now + 1) == [late]
    job = store.get(late)
    assert job is not None and job.state == "COMPLETED"
    assert job.error is not None and (job.error.status_code, job.error.error_type) == (
        504,
        "request_timeout",
    )
    assert store.get(fine).state == "IN_QUEUE"  # type: ignore[union-attr]
    assert store.get(running).state == "IN_PROGRESS"  # type: ignore[union-attr]
    assert store.expire_deadlines() == []


def test_a_late_job_is_never_claimed(store: JobStore) -> None:
    store.submit(new_job(start_deadline=time.time() - 1))
    assert store.claim("w", 30) is None


def test_counts(store: JobStore) -> None:
    assert store.counts() == {"IN_QUEUE": 0, "IN_PROGRESS": 0, "COMPLETED": 0}
    for _ in range(3):
        store.submit(new_job())
    store.claim("w", 30)
    store.fail(store.claim("w", 30).id, "w", boom())  # type: ignore[union-attr]
    assert store.counts() == {"IN_QUEUE": 1, "IN_PROGRESS": 1, "COMPLETED": 1}


def test_jobs_survive_reopening(open_store: Callable[[], JobStore]) -> None:
    first = open_store()
    rid = first.submit(new_job()).id
    first.append_log(rid, "kept")
    first.close()
    second = open_store()  # migrations already applied: opening again is a no-op
    assert second.get(rid).state == "IN_QUEUE"  # type: ignore[union-attr]
    assert [x.message for x in second.logs(rid)] == ["kept"]


def test_stores_opened_at_once_migrate_safely(job_store_url: str) -> None:
    errors: list[BaseException] = []
    stores: list[JobStore] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def opener() -> None:
        start.wait()
        try:
            s = open_job_store(job_store_url)
            with lock:
                stores.append(s)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert errors == [] and len(stores) == 4
        rid = stores[0].submit(new_job()).id
        assert all(s.get(rid) is not None for s in stores)
    finally:
        for s in stores:
            s.close()


# --- keys ---------------------------------------------------------------------------------


def test_keys(store: JobStore) -> None:
    a = ApiKey(key_id="a", secret_hash="h1", name="alice", created_at=100.0)
    b = ApiKey(key_id="b", secret_hash="h2", name="bob", created_at=200.0)
    store.add_key(b)
    store.add_key(a)
    assert store.get_key("a") == a and store.get_key("zzz") is None
    assert store.list_keys() == [a, b]
    with pytest.raises(ValueError, match="exists"):
        store.add_key(a)
    assert store.revoke_key("a")
    revoked = store.get_key("a")
    assert revoked is not None and revoked.revoked_at is not None
    assert not store.revoke_key("a") and not store.revoke_key("zzz")
    assert store.get_key("b").revoked_at is None  # type: ignore[union-attr]


# --- webhooks -----------------------------------------------------------------------------


def test_webhook_delivery_retry_and_success(store: JobStore) -> None:
    store.add_webhook("r1", "https://hook/1", b'{"status":"OK"}')
    (due,) = store.claim_due_webhooks(limit=10, lease_seconds=30)
    assert (due.request_id, due.url, due.body, due.attempts) == (
        "r1",
        "https://hook/1",
        b'{"status":"OK"}',
        0,
    )
    assert store.claim_due_webhooks(10, 30) == []  # leased to whoever claimed it
    store.webhook_result(due.id, delivered=False, error="HTTP 503", next_attempt_at=time.time())
    (retry,) = store.claim_due_webhooks(10, 30)
    assert retry.id == due.id and retry.attempts == 1 and retry.last_error == "HTTP 503"
    store.webhook_result(retry.id, delivered=True, error=None, next_attempt_at=None)
    assert store.claim_due_webhooks(10, 0) == []
    (done,) = store.webhooks("r1")
    assert done.delivered_at is not None and done.attempts == 2 and done.next_attempt_at is None


def test_webhook_scheduling_limit_and_giving_up(store: JobStore) -> None:
    for i in range(3):
        store.add_webhook(f"r{i}", f"https://hook/{i}", b"{}")
    first_two = store.claim_due_webhooks(limit=2, lease_seconds=0)
    assert [d.request_id for d in first_two] == ["r0", "r1"]
    later, give_up = first_two
    store.webhook_result(later.id, False, "timeout", next_attempt_at=time.time() + 600)
    store.webhook_result(give_up.id, False, "HTTP 410", next_attempt_at=None)
    assert [d.request_id for d in store.claim_due_webhooks(10, 30)] == ["r2"]
    (gone,) = store.webhooks("r1")
    assert gone.delivered_at is None and gone.next_attempt_at is None
    assert gone.last_error == "HTTP 410" and gone.attempts == 1
    (waiting,) = store.webhooks("r0")
    assert waiting.next_attempt_at is not None and waiting.next_attempt_at > time.time() + 500
    assert store.webhooks("none") == []


def test_concurrent_webhook_claims_never_share(open_store: Callable[[], JobStore]) -> None:
    stores = [open_store(), open_store()]
    for i in range(30):
        stores[0].add_webhook(f"r{i}", "https://hook", b"{}")
    got: list[int] = []
    lock = threading.Lock()

    def claimer(store: JobStore) -> None:
        while batch := store.claim_due_webhooks(limit=3, lease_seconds=60):
            with lock:
                got.extend(d.id for d in batch)

    threads = [threading.Thread(target=claimer, args=(stores[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == 30 and len(set(got)) == 30


# --- opening ------------------------------------------------------------------------------


def test_open_job_store_urls(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b" / "jobs.db"
    store = open_job_store(f"sqlite:///{nested}")
    try:
        assert nested.exists()
    finally:
        store.close()
    for bad in ("mysql://x", "sqlite:///", "jobs.db"):
        with pytest.raises(ValueError):
            open_job_store(bad)


def test_postgres_waiters_survive_a_lost_listener(pg_schema_url: str) -> None:
    import psycopg

    from superscale.jobs.postgres import PostgresJobStore

    api, worker = PostgresJobStore(pg_schema_url), PostgresJobStore(pg_schema_url)
    try:
        rid = api.submit(new_job()).id
        deadline = time.monotonic() + 5
        while api.listener_pid is None and time.monotonic() < deadline:
            time.sleep(0.01)
        old_pid = api.listener_pid
        assert old_pid is not None, "the listener never connected"  # else nothing is lost below
        with psycopg.connect(pg_schema_url, autocommit=True) as admin:
            killed = admin.execute("SELECT pg_terminate_backend(%s)", (old_pid,)).fetchone()
        assert killed == (True,)
        # Changes made while the listener is down are still seen (by polling) …
        threading.Timer(0.05, worker.append_log, args=(rid, "while down")).start()
        assert api.wait_for_change(rid, 1, timeout=5) == 2
        # … and it reconnects, after which wake-ups are immediate again.
        while api.listener_pid == old_pid and time.monotonic() < deadline + 10:
            time.sleep(0.05)
        assert api.listener_pid != old_pid
        time.sleep(0.2)
        threading.Timer(0.05, worker.append_log, args=(rid, "back")).start()
        t0 = time.monotonic()
        assert api.wait_for_change(rid, 2, timeout=5) == 3
        assert time.monotonic() - t0 < 1.5  # not the 2 s fallback poll
    finally:
        api.close()
        worker.close()


def test_postgres_pool_survives_dropped_connections(pg_schema_url: str) -> None:
    import uuid

    import psycopg

    from superscale.jobs.postgres import PostgresJobStore

    name = f"pool-{uuid.uuid4().hex[:8]}"
    store = PostgresJobStore(f"{pg_schema_url}&application_name={name}")
    try:
        rid = store.submit(new_job()).id
        with psycopg.connect(pg_schema_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (name,),
            ).fetchall()
        assert killed  # the pool's connections are gone, as after a database restart
        assert store.get(rid).state == "IN_QUEUE"  # type: ignore[union-attr]
        assert store.claim("w", 30).id == rid  # type: ignore[union-attr]
    finally:
        store.close()


def test_postgres_unreachable_is_a_clear_error() -> None:
    import socket

    from superscale.jobs.postgres import PostgresJobStore

    with socket.socket() as closed:  # a loopback port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=r"postgres:\*\*\*@127\.0\.0\.1"):
        PostgresJobStore(f"postgresql://postgres:hunter2@127.0.0.1:{port}/x", connect_timeout=1)
    assert time.monotonic() - t0 < 10


def test_delete_finished_forgets_old_jobs_only(store: JobStore) -> None:
    done = store.submit(new_job()).id
    store.append_log(done, "old line")
    store.fail(done, None, boom())
    store.add_webhook(done, "https://hook", b"{}")
    (delivery,) = store.claim_due_webhooks(1, 30)
    store.webhook_result(delivery.id, True, None, None)
    pending = store.submit(new_job()).id
    store.fail(pending, None, boom())
    store.add_webhook(pending, "https://hook", b"{}")  # not delivered yet: must survive
    queued = store.submit(new_job()).id
    assert store.delete_finished(before=time.time() - 60) == 0
    assert store.delete_finished(before=time.time() + 1) == 2
    assert store.get(done) is None and store.get(pending) is None
    assert store.logs(done) == [] and store.webhooks(done) == []
    assert len(store.webhooks(pending)) == 1
    assert store.get(queued) is not None
    assert store.counts() == {"IN_QUEUE": 1, "IN_PROGRESS": 0, "COMPLETED": 0}


# --- webhooks queued with the write that finishes the job --------------------------------------


def test_complete_and_fail_queue_their_webhook_in_the_same_write(store: JobStore) -> None:
    hook = "https://hook/a"
    done = store.submit(new_job(webhook_url=hook)).id
    assert store.claim("w", 30).id == done  # type: ignore[union-attr]
    # Not the lease holder: the job is not finished, and no webhook is queued.
    assert not store.complete(done, "other", {"x": 1}, 0.1, webhook=(hook, b"late"))
    assert store.webhooks(done) == []
    # A webhook that cannot be written (no body) rolls the completion back with it.
    with pytest.raises(Exception):  # noqa: B017 - each database names its own constraint error
        store.complete(done, "w", {"x": 1}, 0.1, webhook=(hook, None))  # type: ignore[arg-type]
    assert store.get(done).state == "IN_PROGRESS"  # type: ignore[union-attr]
    assert store.complete(done, "w", {"x": 1}, 0.1, webhook=(hook, b'{"ok":1}'))
    assert not store.complete(done, "w", {"x": 2}, 0.1, webhook=(hook, b"again"))
    (delivery,) = store.webhooks(done)
    assert (delivery.url, delivery.body, delivery.attempts) == (hook, b'{"ok":1}', 0)

    failed = store.submit(new_job(webhook_url=hook)).id
    assert store.claim("w", 30).id == failed  # type: ignore[union-attr]
    assert not store.fail(failed, "other", boom(), webhook=(hook, b"late"))
    assert store.webhooks(failed) == []
    with pytest.raises(Exception):  # noqa: B017
        store.fail(failed, "w", boom(), webhook=(hook, None))  # type: ignore[arg-type]
    assert store.get(failed).state == "IN_PROGRESS"  # type: ignore[union-attr]
    assert store.fail(failed, "w", boom(), webhook=(hook, b'{"err":1}'))
    assert not store.fail(failed, None, boom(), webhook=(hook, b"again"))
    assert [d.body for d in store.webhooks(failed)] == [b'{"err":1}']
    due = store.claim_due_webhooks(10, 30)
    assert sorted(d.request_id for d in due) == sorted([done, failed])


def _error_webhook(store: JobStore, request_id: str) -> tuple[int, str]:
    """The one webhook queued for a job the store ended: (status code, error_type)."""
    import json

    (delivery,) = store.webhooks(request_id)
    assert delivery.url == "https://hook/x" and delivery.next_attempt_at is not None
    body = json.loads(delivery.body)
    assert body["request_id"] == body["gateway_request_id"] == request_id
    assert body["status"] == "ERROR"
    code = int(body["error"].removeprefix("Invalid status code: "))
    return code, body["payload"]["error_type"]


def test_the_stores_own_finishes_queue_the_webhook(store: JobStore) -> None:
    hook = "https://hook/x"
    # Cancel of a queued job.
    cancelled = store.submit(new_job(webhook_url=hook)).id
    silent = store.submit(new_job()).id  # no webhook URL: nothing to queue
    assert store.cancel(cancelled) is CancelOutcome.CANCELLED
    assert store.cancel(silent) is CancelOutcome.CANCELLED
    assert store.cancel(cancelled) is CancelOutcome.ALREADY_COMPLETED
    assert _error_webhook(store, cancelled) == (499, "client_cancelled")
    # Start deadline passed.
    late = store.submit(new_job(webhook_url=hook, start_deadline=time.time() - 1)).id
    assert store.expire_deadlines() == [late]
    assert store.expire_deadlines() == []
    assert _error_webhook(store, late) == (504, "request_timeout")
    # Leases run out: attempts exhausted, cancel requested, or requeued (not finished).
    exhausted = store.submit(new_job(webhook_url=hook)).id
    assert store.claim("dead", 0.01).id == exhausted  # type: ignore[union-attr]
    time.sleep(0.05)
    assert store.recover_expired(max_attempts=2) == [exhausted]  # requeued: attempt 1 of 2
    assert store.webhooks(exhausted) == []
    assert store.claim("dead", 0.01).id == exhausted  # type: ignore[union-attr]
    requeued = store.submit(new_job(webhook_url=hook)).id
    assert store.claim("dead", 0.01).id == requeued  # type: ignore[union-attr]
    asked = store.submit(new_job(webhook_url=hook)).id
    assert store.claim("dead", 0.01).id == asked  # type: ignore[union-attr]
    assert store.cancel(asked) is CancelOutcome.REQUESTED
    assert store.webhooks(asked) == []  # still running: its worker may yet finish it
    time.sleep(0.05)
    assert sorted(store.recover_expired(max_attempts=2)) == sorted([exhausted, requeued, asked])
    assert _error_webhook(store, exhausted) == (500, "runner_disconnected")
    assert _error_webhook(store, asked) == (499, "client_cancelled")
    assert store.webhooks(requeued) == [] and store.webhooks(silent) == []
    assert store.get(requeued).state == "IN_QUEUE"  # type: ignore[union-attr]


def test_sqlite_lock_held_past_the_busy_timeout_is_store_unavailable(tmp_path: Path) -> None:
    import sqlite3

    from superscale.jobs import StoreUnavailable
    from superscale.jobs.sqlite import SqliteJobStore

    store = SqliteJobStore(tmp_path / "jobs.db", busy_timeout=0.2)
    try:
        rid = store.submit(new_job()).id
        other = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
        with pytest.raises(StoreUnavailable, match="database is locked"):
            store.submit(new_job())
        assert store.get(rid) is not None  # WAL: reads go on
        other.execute("ROLLBACK")
        other.close()
        store.submit(new_job())  # and writes resume once the lock is gone
        with pytest.raises(ValueError):  # a duplicate id is still the caller's error
            store.submit(new_job(request_id=rid, input={"image_url": "data:,other"}))
    finally:
        store.close()


# --- one-time capabilities ----------------------------------------------------------------


def test_a_capability_is_spent_once_across_stores_and_threads(
    open_store: Callable[[], JobStore],
) -> None:
    stores = [open_store(), open_store()]  # two servers of a cluster
    later = time.time() + 60
    results: list[bool] = []
    barrier = threading.Barrier(20)

    def spend(i: int) -> None:
        barrier.wait()
        results.append(stores[i % 2].spend("put:abc", later))

    threads = [threading.Thread(target=spend, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 19 + [True]
    assert stores[1].is_spent("put:abc") and not stores[1].is_spent("put:other")
    stores[0].unspend("put:abc")  # the guarded action failed: the use is given back
    assert stores[1].spend("put:abc", later)


def test_spent_capabilities_are_forgotten_once_expired(store: JobStore) -> None:
    assert store.spend("login:old", time.time() - 1)
    assert store.spend("login:live", time.time() + 60)
    assert store.forget_spent() == 1
    assert not store.is_spent("login:old") and store.is_spent("login:live")


def test_postgres_database_not_in_utf8_is_refused_in_words() -> None:
    """A database created without UTF8 (SQL_ASCII: initdb without a locale) hands text back as
    bytes and refuses non-ASCII text; a key id as bytes broke `serve` at start. Refused at
    open, saying what to do."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    psycopg = pytest.importorskip("psycopg")
    from conftest import PG_URL, pg_unreachable
    from superscale.jobs.postgres import PostgresJobStore

    name = f"ascii_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_URL, autocommit=True)
    except psycopg.OperationalError as exc:
        pg_unreachable(exc)
    with admin:
        admin.execute(f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' TEMPLATE template0")
        try:
            url = urlunsplit(urlsplit(PG_URL)._replace(path=f"/{name}"))
            with pytest.raises(ValueError, match="SQL_ASCII encoding; superscale needs UTF8"):
                PostgresJobStore(url)
        finally:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
