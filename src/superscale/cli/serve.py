"""`superscale serve`: the API plus in-process workers, on the embedded defaults (SQLite and a
local directory under `--data-dir`) unless database/storage URLs say otherwise.

With auth on and no key in the store yet, the first start creates one and prints it once, so
the README's single command leaves a newcomer with a working key (`superscale keys` manages
them afterwards).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import click

from superscale.cli.options import (
    build_settings,
    log_level_option,
    model_options,
    open_stores,
    setup_logging,
    store_options,
)
from superscale.settings import Settings

log = logging.getLogger("superscale.serve")

# Seconds a stopping worker may spend finishing its job before it is told to abandon it (its
# lease then expires and another worker, or the next start, retries it).
WORKER_GRACE = 10.0


def ensure_first_key(settings: Settings, job_store: Any) -> str | None:
    """Create and return a key when auth is on and the store has none (first start)."""
    from superscale.api.keys import active_keys, create_key

    if not settings.auth or active_keys(job_store):
        return None
    return create_key(job_store, "first key (created by serve)")[1]


def _playground_banner(settings: Settings, job_store: Any) -> str | None:
    """The playground's login link for this start (None when it needs none or is absent)."""
    try:
        from superscale.api.playground import login_banner
    except ImportError:
        return None
    return login_banner(settings, job_store)


@click.command()
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8000).")
@store_options
@click.option(
    "--public-url", default=None, help="URL clients reach this server at, if not the one they use."
)
@click.option(
    "--no-auth",
    "no_auth",
    is_flag=True,
    default=False,
    help="Serve without API keys. Only on a trusted machine.",
)
@click.option(
    "--workers", type=int, default=None, help="In-process workers (default 1; 0: API only)."
)
@click.option("--no-worker", is_flag=True, default=False, help="Same as --workers 0.")
@model_options
@click.option("--ssl-certfile", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--ssl-keyfile", type=click.Path(exists=True, dir_okay=False), default=None)
@log_level_option
def serve(
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    database_url: str | None,
    storage_url: str | None,
    s3_endpoint_url: str | None,
    webhook_key: str | None,
    public_url: str | None,
    no_auth: bool,
    workers: int | None,
    no_worker: bool,
    model_dir: Path | None,
    checkpoints: tuple[str, ...],
    device: str | None,
    dtype: str | None,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
    log_level: str,
) -> None:
    """Serve fal's API for fal-ai/aura-sr, with in-process workers."""
    import uvicorn

    from superscale.api import create_app
    from superscale.webhooks import WebhookDispatcher

    if bool(ssl_certfile) != bool(ssl_keyfile):
        raise click.UsageError("--ssl-certfile and --ssl-keyfile go together")
    setup_logging(log_level)
    settings = build_settings(
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        storage_url=storage_url,
        s3_endpoint_url=s3_endpoint_url,
        webhook_key=webhook_key,
        public_url=public_url,
        auth=False if no_auth else None,
        workers=0 if no_worker else workers,
        model_dir=model_dir,
        checkpoints=list(checkpoints) or None,
        device=device,
        dtype=dtype,
    )
    if settings.workers < 0:
        raise click.BadParameter("must be 0 or more", param_hint="--workers")
    if (
        ssl_certfile
        and not settings.public_url
        and settings.resolved_public_url().startswith("http://")
    ):
        # Our own URLs (outputs, uploads) must say https when we serve TLS.
        settings.public_url = "https://" + settings.resolved_public_url().removeprefix("http://")
    signer, job_store, file_store = open_stores(settings)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    worker_objs: list[Any] = []
    dispatcher = WebhookDispatcher(settings, job_store, signer)
    try:
        key = ensure_first_key(settings, job_store)
        if key is not None:
            click.echo(
                "\nNo API key existed, so one was created. It is shown only this once:\n\n"
                f"    FAL_KEY={key}\n\n"
                "Send it as `Authorization: Key <FAL_KEY>` (fal's clients read FAL_KEY). "
                "Manage keys with `superscale keys`.\n"
            )
        app = create_app(settings, job_store, file_store)
        banner = _playground_banner(settings, job_store)
        if banner:
            click.echo(banner)
        if settings.workers:
            from superscale.worker import Worker  # imports torch: only when there are workers

            for i in range(settings.workers):
                worker = Worker(settings, job_store, file_store)
                thread = threading.Thread(
                    target=worker.run_forever, args=(stop,), name=f"worker-{i}", daemon=True
                )
                worker_objs.append(worker)
                threads.append(thread)
                thread.start()
            log.info("%d in-process worker(s) serving %s", settings.workers, settings.checkpoints)
        else:
            log.info("no in-process workers: run `superscale worker` against the same store")
        dispatcher.start()
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
            proxy_headers=True,
            log_level=log_level.lower(),
            timeout_graceful_shutdown=5,
        )
        uvicorn.Server(config).run()
    finally:
        stop.set()
        for thread in threads:
            thread.join(WORKER_GRACE)
        for worker in worker_objs:
            worker.abort.set()
        for thread in threads:
            thread.join(5)
        dispatcher.stop(5)
        job_store.close()
        file_store.close()
