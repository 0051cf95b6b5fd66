"""`superscale serve`: the API and the workers, each in processes of their own
(`processes.py`), on the embedded defaults (SQLite and a local directory under `--data-dir`)
unless database/storage URLs say otherwise.

With auth on and no key in the store yet, the first start creates one and prints it once, so
the README's single command leaves a newcomer with a working key (`superscale keys` manages
them afterwards).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import click

from superscale.cli import options, processes
from superscale.gpus import visible_gpus
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
    "--workers",
    type=int,
    default=None,
    help="Worker threads, in a process of their own (default 1; 0: API only).",
)
@click.option("--no-worker", is_flag=True, default=False, help="Same as --workers 0.")
@click.option(
    "--api-processes",
    type=click.IntRange(min=1),
    default=None,
    help="Processes answering requests, sharing the port (default: 2 with 2 CPUs or more).",
)
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
    """Serve fal's API for fal-ai/aura-sr, with workers in a process of their own.

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

    # Set up in the parent, once: the first key (shown here, once), the playground's link,
    # and the socket every API process serves.
    _, job_store, file_store = options.open_stores(settings)
    try:
        key = ensure_first_key(settings, job_store)
        banner = _playground_banner(settings, job_store)
    finally:
        job_store.close()
        file_store.close()
    if key is not None:
        click.echo(
            "\nNo API key existed, so one was created. It is shown only this once:\n\n"
            f"    FAL_KEY={key}\n\n"
            "Send it as `Authorization: Key <FAL_KEY>` (fal's clients read FAL_KEY). "
            "Manage keys with `superscale keys`.\n"
        )
    if banner:
        click.echo(banner)
    api_processes = settings.resolved_api_processes()
    sockets = listening_sockets(settings.host, settings.port, api_processes)
    parent = os.getpid()
    children = [
        processes.ChildSpec(
            f"api-{i}",
            processes.run_api,
            (settings, sock, log_level, (ssl_certfile, ssl_keyfile), parent),
        )
        for i, sock in enumerate(sockets)
    ]
    workers = worker_processes(settings, log_level, parent)
    children += workers
    scheme = "https" if ssl_certfile else "http"
    log.info(
        "serving on %s://%s:%d: %d API process(es); %s",
        scheme,
        settings.host,
        sockets[0].getsockname()[1],
        api_processes,
        f"{settings.workers} worker(s) for {settings.checkpoints} in a process of their own "
        f"per device ({', '.join(c.args[0].device for c in workers)})"
        if settings.workers
        else "no workers: run `superscale worker` against the same store",
    )
    with processes.shared_metrics(api_processes):
        code = processes.Supervisor(children).run()
    for sock in set(sockets):
        sock.close()
    if code:
        raise SystemExit(code)


def worker_processes(
    settings: Settings, log_level: str, parent: int, gpus: int | None = None
) -> list[processes.ChildSpec]:
    """The worker process, or one per device where `--device` lists several, or one per GPU
    where it is `auto` or `cuda` and there are several (`gpus`: default, those this process
    may use). Each loads its own copy of the weights and keeps its GPU busy alone."""
    devices = settings.devices()
    gpus = visible_gpus() if gpus is None else gpus
    if devices in (["auto"], ["cuda"]) and gpus > 1 and settings.workers > 0:
        devices = [f"cuda:{i}" for i in range(gpus)]
    if len(devices) == 1:
        args = (settings, log_level, parent)
        return [processes.ChildSpec("workers", processes.run_workers, args)]
    return [
        processes.ChildSpec(
            f"workers-{device}",
            processes.run_workers,
            (settings.model_copy(update={"device": device}), log_level, parent),
        )
        for device in devices
    ]


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on one port, bound here so that a port in use fails the
    command at once. Several API processes each get their own (SO_REUSEPORT, where the
    system has it): the kernel then spreads connections evenly between them, where on one
    shared socket whichever process is idle at a burst of connects takes most of them and
    keeps them (200 connections split 172/28 and 200/0 in the load benchmark)."""
    reuse_port = count > 1 and hasattr(socket, "SO_REUSEPORT")
    sockets: list[socket.socket] = []
    try:
        # Without SO_REUSEPORT first: it fails where anything holds the port, a serve sharing
        # its port included, which the sockets after it, made to share, would not.
        sockets.append(_bind(host, port, reuse_port=False))
        if reuse_port:
            port = sockets[0].getsockname()[1]
            sockets[0].close()
            sockets = [_bind(host, port, reuse_port=True) for _ in range(count)]
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None
    for sock in sockets:
        sock.listen(2048)
        sock.set_inheritable(True)
    return sockets if reuse_port else sockets * count


def _bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP: asyncio then turns Nagle off on accepted connections (no 40 ms stalls).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
