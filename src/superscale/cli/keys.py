"""`superscale keys create|list|revoke`: API keys in the configured job store."""

from __future__ import annotations

import datetime
from pathlib import Path

import click

from superscale.cli.options import build_settings, combine, data_dir_option
from superscale.jobs import ApiKey, JobStore


def _store(data_dir: Path | None, database_url: str | None) -> JobStore:
    from superscale.jobs import open_job_store

    settings = build_settings(data_dir=data_dir, database_url=database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return open_job_store(settings.resolved_database_url())


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")


@click.group()
@data_dir_option("Data directory of the server (default: SUPERSCALE_DATA_DIR or ./data).")
@click.option("--database-url", default=None, help="The server's job store URL.")
@click.pass_context
def keys(ctx: click.Context, data_dir: Path | None, database_url: str | None) -> None:
    """Manage API keys (`Authorization: Key key_id:secret`)."""
    ctx.obj = (data_dir, database_url)


# The key's own limits; unset: the server's (SUPERSCALE_KEY_MAX_QUEUE, …).
limit_options = combine(
    click.option(
        "--max-queue",
        type=click.IntRange(min=1),
        default=None,
        help="Jobs this key may have queued at once (more: 429).",
    ),
    click.option(
        "--max-rps",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Requests per second this key may send to each API server (more: 429).",
    ),
    click.option(
        "--upload-bytes-per-day",
        type=click.IntRange(min=0),
        default=None,
        help="Bytes this key may upload per UTC day (more: 429).",
    ),
)


@keys.command()
@click.option("--name", default="", help="A label to recognise the key by.")
@limit_options
@click.pass_obj
def create(
    obj: tuple[Path | None, str | None],
    name: str,
    max_queue: int | None,
    max_rps: float | None,
    upload_bytes_per_day: int | None,
) -> None:
    """Create a key and print it (the secret is shown only now)."""
    from superscale.api.keys import create_key

    store = _store(*obj)
    try:
        key, full = create_key(
            store,
            name,
            max_queue=max_queue,
            max_rps=max_rps,
            upload_bytes_per_day=upload_bytes_per_day,
        )
    finally:
        store.close()
    click.echo(full)
    click.echo(
        f"created key {key.key_id} {name!r}; store it now: it cannot be shown again", err=True
    )


@keys.command(name="list")
@click.pass_obj
def list_(obj: tuple[Path | None, str | None]) -> None:
    """List keys (ids and names, never secrets)."""
    store = _store(*obj)
    try:
        rows = store.list_keys()
    finally:
        store.close()
    click.echo(f"{'KEY_ID':<18} {'CREATED':<17} {'REVOKED':<17} {'LIMITS':<28} NAME")
    for k in rows:
        click.echo(
            f"{k.key_id:<18} {_when(k.created_at):<17} {_when(k.revoked_at):<17} "
            f"{_limits(k):<28} {k.name}"
        )


def _limits(key: ApiKey) -> str:
    own = {
        "queue": key.max_queue,
        "rps": key.max_rps,
        "upload/day": key.upload_bytes_per_day,
    }
    shown = [
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in own.items()
        if v is not None
    ]
    return " ".join(shown) or "server's"


@keys.command()
@click.argument("key_id")
@limit_options
@click.option("--reset", is_flag=True, help="Back to the server's limits, then apply the rest.")
@click.pass_obj
def limits(
    obj: tuple[Path | None, str | None],
    key_id: str,
    max_queue: int | None,
    max_rps: float | None,
    upload_bytes_per_day: int | None,
    reset: bool,
) -> None:
    """Change a key's own limits (those not given stay as they are). Running API servers
    apply them within SUPERSCALE_KEY_CACHE_SECONDS (2 s)."""
    store = _store(*obj)
    try:
        key = store.get_key(key_id)
        if key is None:
            raise click.ClickException(f"no key {key_id!r}")
        if reset:
            key.max_queue = key.max_rps = key.upload_bytes_per_day = None
        if max_queue is not None:
            key.max_queue = max_queue
        if max_rps is not None:
            key.max_rps = max_rps
        if upload_bytes_per_day is not None:
            key.upload_bytes_per_day = upload_bytes_per_day
        store.set_key_limits(key_id, key.max_queue, key.max_rps, key.upload_bytes_per_day)
    finally:
        store.close()
    click.echo(f"{key_id}: {_limits(key)}")


@keys.command()
@click.argument("key_id")
@click.pass_obj
def revoke(obj: tuple[Path | None, str | None], key_id: str) -> None:
    """Revoke a key: its requests are refused from now on (running API servers: within
    SUPERSCALE_KEY_CACHE_SECONDS, 2 s)."""
    store = _store(*obj)
    try:
        ok = store.revoke_key(key_id)
    finally:
        store.close()
    if not ok:
        raise click.ClickException(f"no active key {key_id!r}")
    click.echo(f"revoked {key_id}")
