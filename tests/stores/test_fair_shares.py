"""Fair shares between keys in the job store (SQLite and PostgreSQL alike): claims go round
the keys, positions predict the claims' order, and each key's queue and upload limits."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

from superscale.jobs import ApiKey, JobError, JobStore, NewJob, QueueFull
from superscale.jobs.positions import QueuedJob, QueueOrder

EP = "fal-ai/aura-sr"


def job(owner: str, priority: int = 0) -> NewJob:
    return NewJob(EP, owner, {"image_url": "data:,x"}, "v1", priority=priority)


def replay(jobs: list[QueuedJob], turns: dict[str, float]) -> list[str]:
    """The claim order by its definition, one claim at a time (the oracle)."""
    turns, queue, order, clock = dict(turns), list(jobs), [], 1e12
    while queue:
        head = min(queue, key=lambda j: (-j.priority, turns.get(j.owner, 0.0), j.seq))
        order.append(head.id)
        queue.remove(head)
        clock += 1
        turns[head.owner] = clock
    return order


def test_queue_order_matches_one_claim_at_a_time() -> None:
    rng = random.Random(7)
    for _ in range(500):
        owners = [f"k{i}" for i in range(rng.randint(1, 4))]
        jobs = [
            QueuedJob(f"j{i}", rng.choice(owners), rng.choice([-1, 0, 0, 1]), i)
            for i in range(rng.randint(0, 20))
        ]
        turns = {o: float(rng.randint(0, 3)) for o in owners if rng.random() < 0.7}
        order = QueueOrder(jobs, turns)
        assert sorted(order.positions, key=order.positions.__getitem__) == replay(jobs, turns)
        late = QueuedJob("late", rng.choice([*owners, "new"]), rng.choice([-1, 0, 1]), 99)
        assert order.position(late) == replay([*jobs, late], turns).index("late")
        if order.append(late):  # taken in place only when it goes last
            assert order.positions["late"] == len(jobs)


def test_claims_go_round_the_keys(store: JobStore) -> None:
    noisy = [store.submit(job("noisy")).id for _ in range(6)]
    quiet = [store.submit(job("quiet")).id for _ in range(2)]
    urgent = store.submit(job("noisy", priority=1)).id
    expected = [urgent, quiet[0], noisy[0], quiet[1], *noisy[1:]]
    # Positions predict the order claims take, before any claim.
    assert sorted([*noisy, *quiet, urgent], key=store.queue_position) == expected
    claimed = []
    while (claimed_job := store.claim("w", 30)) is not None:
        claimed.append(claimed_job.id)
    assert claimed == expected


def test_a_key_that_was_served_waits_behind_one_that_was_not(store: JobStore) -> None:
    first = store.submit(job("a")).id
    assert store.claim("w", 30).id == first  # type: ignore[union-attr]
    a_next = store.submit(job("a")).id
    b_first = store.submit(job("b")).id
    assert [store.queue_position(x) for x in (b_first, a_next)] == [0, 1]
    assert store.claim("w", 30).id == b_first  # type: ignore[union-attr]


def test_positions_seen_by_another_server_follow_within_their_age(
    open_store: Callable[[], JobStore],
) -> None:
    api, worker = open_store(), open_store()
    ids = [api.submit(job("a")).id for _ in range(3)]
    assert api.queue_position(ids[2]) == 2
    worker.claim("w", 30)  # another process's claim: seen once the snapshot is old enough
    time.sleep(0.15)
    assert api.queue_position(ids[2]) == 1


def test_a_key_at_its_queue_limit_is_refused_and_others_are_not(store: JobStore) -> None:
    for _ in range(2):
        store.submit(job("a"), max_owner_waiting=2)
    with pytest.raises(QueueFull) as refused:
        store.submit(job("a"), max_owner_waiting=2)
    assert refused.value.limit == "key" and refused.value.retry_after >= 1
    store.submit(job("b"), max_owner_waiting=2)  # another key is unaffected
    store.claim("w", 30)  # a's first job runs: a has room again
    store.submit(job("a"), max_owner_waiting=2)


def test_upload_bytes_are_counted_per_key_and_refused_past_the_limit(store: JobStore) -> None:
    assert store.add_upload_bytes("a", 600, 1000) == 600
    assert store.add_upload_bytes("a", 500, 1000) is None  # would make 1,100: nothing counted
    assert store.add_upload_bytes("a", 400, 1000) == 1000
    assert store.add_upload_bytes("b", 1000, 1000) == 1000
    assert store.add_upload_bytes("a", 5, None) == 1005  # no limit: counted all the same


def test_key_limits_round_trip_and_move_the_change_counter(store: JobStore) -> None:
    store.add_key(ApiKey("k", "sha256$x", "n", 1.0, max_queue=3))
    key = store.get_key("k")
    assert key is not None and (key.max_queue, key.max_rps, key.upload_bytes_per_day) == (
        3,
        None,
        None,
    )
    seen = store.keys_changed
    assert store.set_key_limits("k", None, 2.5, 10)
    assert store.keys_changed > seen
    key = store.get_key("k")
    assert key is not None and (key.max_queue, key.max_rps, key.upload_bytes_per_day) == (
        None,
        2.5,
        10,
    )
    assert not store.set_key_limits("nope", 1, None, None)


def test_kept_counts_match_the_jobs_through_every_move(store: JobStore) -> None:
    """The counts submits check (kept by triggers) against a count of the jobs themselves,
    after submits, claims, releases, requeues, cancels, failures, completions and deletes."""

    def kept() -> dict[tuple[str, str], int]:
        with store._read() as db:
            rows = db.conn.execute("SELECT owner, state, n FROM job_counts").fetchall()
        return {(r["owner"], r["state"]): int(r["n"]) for r in rows if int(r["n"])}

    def counted() -> dict[tuple[str, str], int]:
        with store._read() as db:
            rows = db.conn.execute(
                "SELECT owner, state, COUNT(*) AS n FROM jobs WHERE state != 'COMPLETED' "
                "GROUP BY owner, state"
            ).fetchall()
        return {(r["owner"], r["state"]): int(r["n"]) for r in rows}

    rng = random.Random(3)
    for step in range(60):
        move = rng.choice(["submit", "submit", "claim", "release", "cancel", "finish", "expire"])
        if move == "submit":
            store.submit(job(rng.choice("abc")))
        elif move == "claim":
            store.claim("w", 30 if rng.random() < 0.7 else -1)  # some leases already expired
        else:
            with store._read() as db:
                rows = db.conn.execute("SELECT id, state, worker_id FROM jobs").fetchall()
            if not rows:
                continue
            row = rng.choice(rows)
            if move == "release" and row["worker_id"]:
                store.release(row["id"], row["worker_id"])
            elif move == "cancel":
                store.cancel(row["id"])
            elif move == "finish" and row["worker_id"]:
                if rng.random() < 0.5:
                    store.complete(row["id"], row["worker_id"], {"ok": True}, 0.1)
                else:
                    store.fail(row["id"], None, JobError(500, "boom", "internal_error"))
            elif move == "expire":
                store.recover_expired(max_attempts=2)
        assert kept() == counted(), (step, move)
    store.delete_finished(time.time() + 1)
    assert kept() == counted()
