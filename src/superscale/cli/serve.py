"""`superscale serve`: the API plus in-process workers, on the embedded defaults (SQLite and a
local directory under `--data-dir`) unless database/storage URLs say otherwise.

With auth on and no key in the store yet, the first start creates one and prints it once, so
the README's single command leaves a newcomer with a working key (`superscale keys` manages
them afterwards).
"""

from __future__ import annotations

import logging
from typing import Any

import click

from superscale.cli import options
from superscale.settings import Settings

log = logging.getLogger("superscale.serve")


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
@options.store_options
@options.public_url_option
@click.option(
    "--no-auth",
    "auth",
    flag_value=False,
    default=None,
    help="Serve without API keys. Only on a trusted machine.",
)
@click.option(
    "--workers", type=int, default=None, help="In-process workers (default 1; 0: API only)."
)
@click.option("--no-worker", is_flag=True, default=False, help="Same as --workers 0.")
@options.model_options
@options.worker_options
@click.option("--ssl-certfile", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--ssl-keyfile", type=click.Path(exists=True, dir_okay=False), default=None)
@options.log_level_option
def serve(
    no_worker: bool,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
    log_level: str,
    **flags: Any,
) -> None:
    """Serve fal's API for fal-ai/aura-sr, with in-process workers.

    SIGTERM or Ctrl-C drains: the API stops, running jobs may finish for `--grace` seconds,
    then go back to the queue; the process exits 0."""
    if bool(ssl_certfile) != bool(ssl_keyfile):
        raise click.UsageError("--ssl-certfile and --ssl-keyfile go together")
    options.setup_logging(log_level)
    if no_worker:
        flags["workers"] = 0
    settings = options.build_settings(**flags)
    if settings.workers < 0:
        raise click.BadParameter("must be 0 or more", param_hint="--workers")
    if (
        ssl_certfile
        and not settings.public_url
        and settings.resolved_public_url().startswith("http://")
    ):
        # Our own URLs (outputs, uploads) must say https when we serve TLS.
        settings.public_url = "https://" + settings.resolved_public_url().removeprefix("http://")

    def serve_api(job_store: Any, file_store: Any) -> None:
        import uvicorn

        from superscale.api import create_app

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
            log.info("%d in-process worker(s) serving %s", settings.workers, settings.checkpoints)
        else:
            log.info("no in-process workers: run `superscale worker` against the same store")
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
        # uvicorn takes SIGTERM/SIGINT while it runs and passes them on to the service's
        # handlers when it returns: the workers then drain (see `options.run_service`).
        uvicorn.Server(config).run()

    options.run_service(settings, workers=settings.workers, serve=serve_api)
