"""`superscale login-link`: a one-time link that opens the playground of a running server with
auth on, acting as one of its keys, without the key ever reaching the browser."""

from __future__ import annotations

from pathlib import Path

import click

from superscale.cli.options import build_settings, data_dir_option


@click.command(name="login-link")
@click.argument("key_id", required=False)
@data_dir_option(
    "Data directory of the server (its signing secret; default: SUPERSCALE_DATA_DIR or "
    "./data). With SUPERSCALE_SECRET_KEY set, that secret is used instead."
)
@click.option("--database-url", default=None, help="The server's job store URL.")
@click.option("--public-url", default=None, help="The URL browsers reach the server at.")
def login_link(
    key_id: str | None, data_dir: Path | None, database_url: str | None, public_url: str | None
) -> None:
    """Print a playground login link acting as KEY_ID (default: the newest active key)."""
    from superscale.api.playground import login_banner
    from superscale.jobs import open_job_store

    settings = build_settings(data_dir=data_dir, database_url=database_url, public_url=public_url)
    if not settings.auth:
        raise click.UsageError("auth is off (SUPERSCALE_AUTH=false): the playground needs no login")
    store = open_job_store(settings.resolved_database_url())
    try:
        key = None if key_id is None else store.get_key(key_id)
        if key_id is not None and (key is None or key.revoked_at is not None):
            raise click.BadParameter(f"no active key {key_id}", param_hint="KEY_ID")
        banner = login_banner(settings, store, key_id)
    finally:
        store.close()
    if banner is None:
        raise click.ClickException("no active key: create one with `superscale keys create`")
    click.echo(banner.rsplit("\n", 1)[1].strip())
