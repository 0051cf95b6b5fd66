"""What the service commands share: their settings, their common flags, their logging.

`serve` and `worker` must agree on the stores, the webhook key, the model and how workers stop,
so each of those flags is declared once here and applied to both. A flag's name is the
`Settings` field it sets: commands hand their flags to `build_settings` whole.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from superscale.settings import Settings

if TYPE_CHECKING:
    from superscale.files import FileStore
    from superscale.jobs import JobStore
    from superscale.webhooks import WebhookSigner

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("superscale")

DATA_DIR_HELP = "Where SQLite, files and secrets live (default ./data)."


def build_settings(**flags: Any) -> Settings:
    """Settings from SUPERSCALE_* with the flags that were given on top; a bad value or an
    unknown checkpoint is a usage error, not a traceback."""
    from pydantic import ValidationError

    given: dict[str, Any] = {
        k: (list(v) or None) if isinstance(v, tuple) else v for k, v in flags.items()
    }
    try:
        settings = Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        for error in exc.errors():
            if not error["loc"]:  # the served checkpoints' own check (`registry.parse_served`)
                message = str(error["ctx"]["error"]) if "ctx" in error else error["msg"]
                raise click.BadParameter(message, param_hint="--checkpoint") from None
        raise click.UsageError(f"invalid setting: {exc}") from None
    for name, path in settings.checkpoint_paths.items():
        if not _holds_checkpoint(Path(path)):
            raise click.BadParameter(
                f"checkpoint {name!r}: {path} holds no model.safetensors with config.json "
                "(what `superscale train` writes)",
                param_hint="--checkpoint",
            )
    return settings


def _holds_checkpoint(path: Path) -> bool:
    """A checkpoint folder, or a weights file with config.json beside it (torch-free)."""
    if path.is_dir():
        return (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    return path.is_file() and (path.parent / "config.json").is_file()


def load_webhook_signer(settings: Settings) -> WebhookSigner:
    """The configured webhook key; a bad one is a usage error, not a traceback."""
    from superscale.webhooks import WebhookSigner

    try:
        return WebhookSigner.from_settings(settings)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--webhook-key") from None


def open_stores(settings: Settings) -> tuple[WebhookSigner, JobStore, FileStore]:
    """The webhook key (checked first: a bad one stops the command before any store opens)
    and the job and file stores `settings` names; the data directory is created if missing.
    The caller closes the stores."""
    from superscale.files import open_file_store
    from superscale.jobs import open_job_store

    # Private: it holds users' images and the capability URLs of their outputs.
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    signer = load_webhook_signer(settings)
    job_store = open_job_store(settings.resolved_database_url())
    try:
        file_store = open_file_store(
            settings.resolved_storage_url(),
            s3_endpoint_url=settings.s3_endpoint_url,
            create_bucket=settings.s3_create_bucket,
        )
    except BaseException:
        job_store.close()
        raise
    return signer, job_store, file_store


def sleep_while_waiting() -> None:
    """OpenMP's threads sleep rather than spin while they wait for each other, unless the
    user chose (OMP_WAIT_POLICY set). A service shares its CPUs — with its own API, other
    processes, a container's quota — and spinning threads then take the time the busy ones
    need: with one of 2 cores busy elsewhere the engine kept 20% of its quiet tiles/s spinning,
    63% sleeping, for ~13% less when quiet (benchmarks/contention.py). Effective only before
    torch loads, which the service commands do lazily."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def run_service(
    settings: Settings,
    *,
    workers: int,
    worker_id: str | None = None,
) -> None:
    """Open the stores, start the workers and webhook delivery, wait for a stop signal, stop
    them the one way (`WorkerService`) and close the stores."""
    sleep_while_waiting()  # before torch loads (below)
    from superscale.worker.service import WorkerService

    signer, job_store, file_store = open_stores(settings)
    service = WorkerService(
        settings, job_store, file_store, signer, workers=workers, worker_id=worker_id
    )
    try:
        service.handle_signals()
        service.start()
        for worker in service.workers:
            log.info(
                "worker %s serving %s on %s",
                worker.worker_id,
                settings.checkpoints,
                settings.device,
            )
        while not service.stopping.wait(0.5):  # a timed wait: signal handlers run meanwhile
            pass
        service.wait()
    finally:
        service.stop()
        job_store.close()
        file_store.close()


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def combine(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Several click options as one decorator, listed in --help in the order given."""

    def apply(f: F) -> F:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


def data_dir_option(help: str = DATA_DIR_HELP) -> Callable[[F], F]:
    return click.option("--data-dir", type=click.Path(path_type=Path), default=None, help=help)


# --data-dir, --database-url, --storage-url, --s3-endpoint-url, --webhook-key.
store_options = combine(
    data_dir_option(),
    click.option("--database-url", default=None, help="sqlite:///path or postgresql://…"),
    click.option("--storage-url", default=None, help="file:///dir or s3://bucket/prefix"),
    click.option("--s3-endpoint-url", default=None, help="S3 endpoint of a non-AWS bucket."),
    click.option(
        "--webhook-key",
        default=None,
        help="Ed25519 PEM file signing webhooks, the same on every machine "
        "(default: {data-dir}/webhook-ed25519.pem).",
    ),
)

public_url_option = click.option(
    "--public-url", default=None, help="URL clients reach the API at, if not the one they use."
)

# Where checkpoints live as {dir}/{name}/: what servers load, `upscale` reads, `pull` fills.
model_dir_option = click.option(
    "--model-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Directory holding the checkpoints as v1/ and v2/ (default: SUPERSCALE_MODEL_DIR, "
    "else the Hugging Face cache).",
)

# --model-dir, --checkpoint (as `checkpoints`), --device, --dtype.
model_options = combine(
    model_dir_option,
    click.option(
        "--checkpoint",
        "checkpoints",
        multiple=True,
        help="Checkpoint to serve: v1, v2, or NAME=PATH for one of your own (a folder "
        "`superscale train` wrote); repeat for several (default: v1 and v2).",
    ),
    click.option(
        "--device",
        default=None,
        help="auto, cpu, cuda, cuda:1, mps … (serve: a comma list, cuda:0,cuda:1, starts one "
        "worker process per device)",
    ),
    click.option("--dtype", default=None, help="auto, float32, float16, bfloat16"),
)

# --max-batch-jobs, --grace (as `shutdown_grace`).
worker_options = combine(
    click.option(
        "--max-batch-jobs",
        type=click.IntRange(min=1),
        default=None,
        help="Queued jobs of one checkpoint and seed run together in shared tile batches "
        "(default: 8 on a GPU, 1 on a CPU).",
    ),
    click.option(
        "--grace",
        "shutdown_grace",
        type=click.FloatRange(min=0),
        default=None,
        help="Seconds running jobs may take to finish after SIGTERM or Ctrl-C before they go "
        "back to the queue (default 30).",
    ),
)

log_level_option = click.option("--log-level", default="info", show_default=True)
