"""One settings object, from `SUPERSCALE_*` environment variables and CLI flags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from superscale.registry import parse_served
from superscale.scaling import MAX_TILE_OVERLAP

if TYPE_CHECKING:
    from superscale.engine.options import EngineOptions


class Settings(BaseSettings):
    # An empty variable counts as unset (`export SUPERSCALE_SECRET_KEY=` sets no secret).
    model_config = SettingsConfigDict(
        env_prefix="SUPERSCALE_", extra="ignore", env_ignore_empty=True
    )

    # Where the embedded defaults keep their data (SQLite file, local file store, keys).
    data_dir: Path = Path("./data")
    # sqlite:///path (default: {data_dir}/superscale.db) or postgresql://…
    database_url: str | None = None
    # file:///path (default: {data_dir}/files) or s3://bucket/prefix
    storage_url: str | None = None
    # Make the S3 bucket of storage_url at start when it does not exist (a fresh cluster).
    s3_create_bucket: bool = False
    # The S3 endpoint of a non-AWS store (unset: AWS itself). AWS_ENDPOINT_URL also works.
    s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "s3_endpoint_url", "SUPERSCALE_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"
        ),
    )

    # Secrets: SecretStr, so that no repr, log line or dump shows them.
    # Signs upload tokens, upload URLs and proxy sessions; the same on every API server of a
    # cluster. Unset: created once as {data_dir}/secret.key.
    secret_key: SecretStr | None = None
    # The Ed25519 webhook signing key: PEM text, or the path of a PEM file; the same on every
    # server and worker of a cluster. Unset: created once as {data_dir}/webhook-ed25519.pem.
    webhook_key: SecretStr | None = None

    host: str = "127.0.0.1"
    port: int = 8000
    # The URL clients reach this server at; used in response_url, file URLs… Default: from host.
    public_url: str | None = None
    auth: bool = True

    # Model and engine.
    model_dir: Path | None = None
    # Names of the checkpoints served: published ones (v1, v2) and `name=path` for one's own;
    # a comma-separated list in SUPERSCALE_CHECKPOINTS. Validation leaves the names here and
    # the paths of one's own in `checkpoint_paths`.
    checkpoints: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["v1", "v2"])
    checkpoint_paths: dict[str, str] = Field(default_factory=dict)
    device: str = "auto"
    dtype: str = "auto"
    # Engine knobs (None: chosen by device; see `superscale.engine.EngineOptions`).
    batch_size: int | None = Field(default=None, ge=1)
    prepack: bool | None = None
    winograd: bool | None = None
    channels_last: bool | None = None
    compile: bool | None = None  # SUPERSCALE_COMPILE=false: eager on CUDA too
    cuda_graphs: bool | None = None
    fold_cache_size: int = Field(default=2, ge=1)
    # Compiled CPU kernels live in {cache_dir}/kernels (default: ~/.cache/superscale).
    cache_dir: Path | None = None
    workers: int = 1  # worker threads `serve` starts in its worker process (0: API only)
    # `serve`'s processes answering requests, sharing its port. None: 2 where 2 CPUs or more
    # are usable (about 2x the requests/s of one; benchmarks/api.py), else 1.
    api_processes: int | None = Field(default=None, ge=1)
    # Queued jobs of one checkpoint and seed a worker claims together and runs through shared
    # tile batches. None: 8 on a GPU, 1 on a CPU (one tile per forward there: no gain).
    max_batch_jobs: int | None = Field(default=None, ge=1)
    # Workers claim, fetch and decode the next jobs and encode and store finished ones in
    # threads beside the inference. None: where the device is not the CPU (on a CPU the
    # inference already takes every core; those threads would take theirs).
    pipeline: bool | None = None
    # Workers load, fold and (on CUDA) compile their checkpoints' default-seed networks before
    # claiming the first job, so that it does not wait for that. None: where the device is not
    # the CPU (there loading all served checkpoints up front would hold memory for nothing).
    warm_up: bool | None = None
    # Seconds running jobs may take to finish once `serve` or `worker` is told to stop
    # (SIGTERM, Ctrl-C); what still runs then goes back to the queue, not charged an attempt.
    shutdown_grace: float = Field(default=30.0, ge=0)

    # Limits.
    max_queue: int = 1000  # unfinished jobs per endpoint before submit answers 429
    # Per key, unless the key sets its own (`superscale keys create --max-queue …`); None: no
    # limit. Half the queue by default, so that no one key can lock the others out with 429s.
    key_max_queue: int | None = Field(default=500, ge=1)
    key_max_rps: float | None = Field(default=None, gt=0)  # requests/s, per API server
    key_upload_bytes_per_day: int | None = Field(default=None, ge=0)  # per UTC day
    # How long an API server trusts what it read of a key (its secret's hash, revocation,
    # limits): a key revoked elsewhere stops working within this many seconds (at once on the
    # server that revoked it).
    key_cache_seconds: float = Field(default=2.0, ge=0)
    # How long a request waits out an unreachable job store or a full queue before it answers
    # 503 or 429: fal's Python client never retries our 503, and fal's JS client gives up on a
    # 429 after about 7 s, so outages and bursts shorter than this are never seen by callers.
    busy_hold: float = Field(default=10.0, ge=0)
    max_body_bytes: int = 64 * 1024 * 1024
    max_input_bytes: int = 64 * 1024 * 1024  # fetched or uploaded image size
    max_input_pixels: int = 16_777_216  # 4096²: bigger inputs are refused before decoding
    # tile_overlap of requests that do not set it (nor overlapping_tiles): 8 input px hide the
    # seams for ~1.34x the tiles of plain tiling (benchmarks/seams.py); 0 is fal's plain tiling.
    tile_overlap: int = Field(default=8, ge=0, le=MAX_TILE_OVERLAP)
    # The largest image an upscale may make (the model's output before any resize down):
    # 16384², a 4096² input at 4×. Bigger asks are refused (422), never run out of memory.
    max_output_pixels: int = Field(default=16384 * 16384, ge=1)
    fetch_timeout: float = 30.0
    # Below this much free space on the local file store's disk, /ready says not ready.
    min_free_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    ssrf_guard: bool = True  # off only for tests that fetch from a loopback fixture server

    # Jobs.
    lease_seconds: float = 30.0
    max_attempts: int = 3
    file_ttl_seconds: float = 7 * 24 * 3600.0
    webhook_max_attempts: int = 10
    # Finished jobs (with their logs and settled webhooks) are deleted this long after they
    # finish; 0 keeps them forever. Their output files live by file_ttl_seconds, separately.
    job_retention_seconds: float = Field(default=7 * 24 * 3600.0, ge=0)
    # X-Fal-Store-IO: 0 jobs: an output never read is dropped this long after the job ends.
    unstored_output_seconds: float = Field(default=3600.0, ge=0)

    @field_validator("s3_endpoint_url", "secret_key", "webhook_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # An empty flag (`--webhook-key ""`) sets nothing, as an empty variable does.
        return None if value == "" else value

    @field_validator("checkpoints", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part for part in text.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _served(self) -> Settings:
        # Names already known by their path (a Settings validated before) stay known.
        entries = [
            f"{name}={self.checkpoint_paths[name]}" if name in self.checkpoint_paths else name
            for name in self.checkpoints
        ]
        served = parse_served(entries)
        self.checkpoints = list(served)
        # Absolute: the processes `serve` starts, and logs, see the same folder.
        self.checkpoint_paths = {
            name: str(Path(path).expanduser().absolute()) for name, path in served.items() if path
        }
        return self

    def checkpoint_source(self, name: str) -> str:
        """What loads a served checkpoint: its path, or the published name."""
        return self.checkpoint_paths.get(name, name)

    def devices(self) -> list[str]:
        """The devices in `device`: `serve` starts one worker process per device in a
        comma-separated list (`cuda:0,cuda:1`: one per GPU); other commands take one."""
        return [d.strip() for d in self.device.split(",") if d.strip()] or ["auto"]

    def engine_options(self) -> EngineOptions:
        from superscale.engine.options import EngineOptions  # torch: only where it runs

        return EngineOptions(
            device=self.device,
            dtype=self.dtype,
            batch_size=self.batch_size,
            prepack=self.prepack,
            winograd=self.winograd,
            channels_last=self.channels_last,
            compile=self.compile,
            cuda_graphs=self.cuda_graphs,
            fold_cache_size=self.fold_cache_size,
            kernel_cache_dir=self.cache_dir,
        )

    def resolved_api_processes(self) -> int:
        from superscale.cpus import usable_cpus

        return self.api_processes or min(2, usable_cpus())

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'superscale.db'}"

    def resolved_storage_url(self) -> str:
        return self.storage_url or f"file://{(self.data_dir / 'files').resolve()}"

    def resolved_public_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"
