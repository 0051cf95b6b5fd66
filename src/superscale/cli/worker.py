"""`superscale worker`: workers and a webhook dispatcher in their own process, against the same
job store and file store as `superscale serve` (same flags).

Shutdown: the first SIGTERM or Ctrl-C stops claiming and lets the running job finish, for at
most `--grace` seconds; then (or on a second signal) the job goes back to the queue at once, so
that another worker, or the next start, picks it up (see `superscale.worker.service`).
"""

from __future__ import annotations

from typing import Any

import click

from superscale.cli import options


@click.command()
@options.store_options
@options.public_url_option
@options.model_options
@click.option("--worker-id", default=None, help="Name in leases and logs (default host:pid:…).")
@options.worker_options
@options.log_level_option
def worker(worker_id: str | None, log_level: str, **flags: Any) -> None:
    """Run one worker (and webhook delivery) against the shared stores."""
    options.setup_logging(log_level)
    settings = options.build_settings(**flags)
    if len(settings.devices()) > 1:
        raise click.BadParameter(
            "one device per worker: start one `superscale worker --device cuda:N` per GPU "
            "(`superscale serve` takes a list)",
            param_hint="--device",
        )
    options.run_service(settings, workers=1, worker_id=worker_id)
