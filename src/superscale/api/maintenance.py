"""The app's housekeeping: requeue jobs whose worker vanished, fail jobs whose start deadline
passed (504), delete expired files, finished jobs past their retention and the unread outputs
of jobs that may not keep them. Idempotent, so every
API server may run it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from superscale.api.context import ApiContext

log = logging.getLogger(__name__)

INTERVAL = 1.0  # x-fal-request-timeout is honoured to about this precision
# Deleting expired files walks the whole store (a directory tree, a bucket listing), and
# retention deletes finished jobs (and spent capabilities) in bulk: rarely.
# Readers never see an expired file meanwhile (stores check expiry on read).
FILE_INTERVAL = 60.0


def sweep_jobs(ctx: ApiContext) -> None:
    """One pass over the jobs. Blocking."""
    # Jobs these end for good get their webhooks queued by the store, in the same transaction.
    recovered = ctx.job_store.recover_expired(ctx.settings.max_attempts)
    expired = ctx.job_store.expire_deadlines()
    if recovered or expired:
        log.info(
            "maintenance: %d lease(s) recovered, %d start deadline(s) expired",
            len(recovered),
            len(expired),
        )


def sweep_files(ctx: ApiContext) -> None:
    deleted = ctx.file_store.delete_expired()
    if deleted:
        log.info("maintenance: %d expired file(s) deleted", deleted)


def sweep_finished(ctx: ApiContext, now: float | None = None) -> int:
    """Delete jobs finished more than `job_retention_seconds` ago (0: keep them). Blocking."""
    retention = ctx.settings.job_retention_seconds
    if retention <= 0:
        return 0
    now = time.time() if now is None else now
    deleted = ctx.job_store.delete_finished(before=now - retention)
    if deleted:
        log.info("maintenance: %d finished job(s) past retention deleted", deleted)
    return deleted


def sweep_unread_outputs(ctx: ApiContext, now: float | None = None) -> int:
    """Drop outputs that X-Fal-Store-IO: 0 jobs never had read, `unstored_output_seconds`
    after those jobs ended. Blocking."""
    now = time.time() if now is None else now
    before = now - ctx.settings.unstored_output_seconds
    dropped = ctx.job_store.drop_unread_outputs(before=before)
    if dropped:
        log.info("maintenance: %d unread output(s) of X-Fal-Store-IO: 0 jobs dropped", dropped)
    return dropped


def sweep_spent(ctx: ApiContext) -> None:
    """Forget uses of one-time capabilities that have expired (they are dead anyway)."""
    ctx.job_store.forget_spent()


async def run_forever(
    ctx: ApiContext, interval: float = INTERVAL, file_interval: float = FILE_INTERVAL
) -> None:
    next_files = 0.0
    while True:
        sweeps: list[Callable[[ApiContext], object]] = [sweep_jobs]
        if time.monotonic() >= next_files:
            next_files = time.monotonic() + file_interval
            sweeps += [sweep_files, sweep_finished, sweep_unread_outputs, sweep_spent]
        for sweep in sweeps:  # each on its own: a file store outage must not stop the others
            try:
                await ctx.write(sweep, ctx)
            except Exception:  # a store hiccup must not end housekeeping for good
                log.exception("maintenance: %s failed", sweep.__name__)
        await asyncio.sleep(interval)
