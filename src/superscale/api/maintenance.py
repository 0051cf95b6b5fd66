"""The app's housekeeping: requeue jobs whose worker vanished, fail jobs whose start deadline
passed (504), delete expired files. Idempotent, so every API server may run it."""

from __future__ import annotations

import asyncio
import logging

from superscale import webhooks
from superscale.api.context import ApiContext

log = logging.getLogger(__name__)

INTERVAL = 1.0  # x-fal-request-timeout is honoured to about this precision


def sweep(ctx: ApiContext) -> None:
    """One pass. Blocking."""
    recovered = ctx.job_store.recover_expired(ctx.settings.max_attempts)
    expired = ctx.job_store.expire_deadlines()
    for request_id in (*recovered, *expired):
        webhooks.enqueue(ctx.job_store, request_id)  # only those that ended for good
    deleted = ctx.file_store.delete_expired()
    if recovered or expired or deleted:
        log.info(
            "maintenance: %d lease(s) recovered, %d deadline(s) expired, %d file(s) deleted",
            len(recovered),
            len(expired),
            deleted,
        )


async def run_forever(ctx: ApiContext, interval: float = INTERVAL) -> None:
    while True:
        try:
            await ctx.call(sweep, ctx)
        except Exception:  # a store hiccup must not end housekeeping for good
            log.exception("maintenance pass failed")
        await asyncio.sleep(interval)
