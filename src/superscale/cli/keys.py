"""`superscale keys create|list|revoke`: API keys in the configured job store."""

from __future__ import annotations

import datetime
from pathlib import Path

import click

from superscale.cli.options import build_settings, data_dir_option
from superscale.jobs import JobStore


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


@keys.command()
@click.option("--name", default="", help="A label to recognise the key by.")
@click.pass_obj
def create(obj: tuple[Path | None, str | None], name: str) -> None:
    """Create a key and print it (the secret is shown only now)."""
    from superscale.api.keys import create_key

    store = _store(*obj)
    try:
        key, full = create_key(store, name)
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
    click.echo(f"{'KEY_ID':<18} {'CREATED':<17} {'REVOKED':<17} NAME")
    for k in rows:
        click.echo(f"{k.key_id:<18} {_when(k.created_at):<17} {_when(k.revoked_at):<17} {k.name}")


@keys.command()
@click.argument("key_id")
@click.pass_obj
def revoke(obj: tuple[Path | None, str | None], key_id: str) -> None:
    """Revoke a key: its requests are refused from now on."""
    store = _store(*obj)
    try:
        ok = store.revoke_key(key_id)
    finally:
        store.close()
    if not ok:
        raise click.ClickException(f"no active key {key_id!r}")
    click.echo(f"revoked {key_id}")
