"""The job store's statements: `queries.sql` parsed once, rendered for a dialect."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Literal

# The columns of `jobs` that map onto `Job`, and of `webhooks` onto `WebhookDelivery`.
JOB_COLUMNS = (
    "id, endpoint, owner, input, checkpoint, state, version, created_at, started_at, "
    "finished_at, output, error, inference_time, attempts, cancel_requested, worker_id, "
    "lease_expires_at, webhook_url, priority, start_deadline, file_ttl, batch_key, no_retry, "
    "store_io, output_dropped_at"
)
KEY_COLUMNS = (
    "key_id, secret_hash, name, created_at, revoked_at, max_queue, max_rps, upload_bytes_per_day"
)
WEBHOOK_COLUMNS = (
    "id, request_id, url, body, attempts, next_attempt_at, delivered_at, last_error, extra"
)

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
# `:name`, but not the `::` of a PostgreSQL cast.
_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@cache
def _parsed() -> dict[str, str]:
    text = resources.files("superscale.jobs").joinpath("queries.sql").read_text("utf-8")
    parts = _NAME.split(text)[1:]  # [name, body, name, body, …]; the header goes
    statements: dict[str, str] = {}
    for name, body in zip(parts[::2], parts[1::2], strict=True):
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        statements[name] = "\n".join(lines).strip().removesuffix(";")
    return statements


def render(words: dict[str, str], paramstyle: Literal["named", "pyformat"]) -> dict[str, str]:
    """Every statement by name, with the dialect's `words` filled in and its parameter markers."""
    fill = {
        "job_columns": JOB_COLUMNS,
        "key_columns": KEY_COLUMNS,
        "webhook_columns": WEBHOOK_COLUMNS,
        **words,
    }
    rendered = {}
    for name, sql in _parsed().items():
        sql = _PLACEHOLDER.sub(lambda m: fill[m.group(1)], sql)
        if paramstyle == "pyformat":
            sql = _PARAMETER.sub(r"%(\1)s", sql.replace("%", "%%"))
        rendered[name] = sql
    return rendered
