"""`superscale run IMAGE… -o DIR`: upscale local images on a running server.

Each image is uploaded and submitted (several at once), its queue position and then its tile
progress (from the job's logs, pushed over the status stream) shown in a bar; the 4× results are
downloaded to DIR as `{stem}_4x.{ext}`. Talks to the server only through `superscale.client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from superscale.client import AsyncClient, Completed, InProgress, Queued, Status, SuperscaleError
from superscale.schemas import ENDPOINT_ID

EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
# The worker logs `tiles 3/16`; accept spacing and wording around it.
_TILES = re.compile(r"tiles?\D{0,10}?(\d+)\s*/\s*(\d+)", re.IGNORECASE)


def tile_progress(logs: list[dict[str, Any]] | None) -> tuple[int, int] | None:
    """(done, total) from the latest progress line in a job's logs, if there is one."""
    for entry in reversed(logs or []):
        match = _TILES.search(str(entry.get("message", "")))
        if match:
            done, total = int(match.group(1)), int(match.group(2))
            if 0 <= done <= total and total > 0:
                return done, total
    return None


def output_path(image: Path, out_dir: Path, fmt: str) -> Path:
    return out_dir / f"{image.stem}_4x.{EXTENSIONS[fmt]}"


@dataclass
class _Job:
    image: Path
    target: Path
    bar: tqdm[Any] | None = None
    started: bool = False  # the tile count is known and the bar restarted


class _Runner:
    """Runs one image at a time per slot; slots bound the concurrency and place the bars."""

    def __init__(
        self, client: AsyncClient, arguments: dict[str, Any], concurrency: int, overall: tqdm[Any]
    ) -> None:
        self.client = client
        self.arguments = arguments
        self.slots: asyncio.Queue[int] = asyncio.Queue()
        for slot in range(1, concurrency + 1):
            self.slots.put_nowait(slot)
        self.overall = overall
        self.failures: list[tuple[Path, str]] = []

    async def run(self, job: _Job) -> None:
        slot = await self.slots.get()
        job.bar = tqdm(
            total=1, desc=f"{job.image.name}: uploading", position=slot, leave=False, unit="tile"
        )
        try:
            await self._upscale(job)
        except SuperscaleError as exc:
            self.failures.append((job.image, str(exc)))
            self.overall.write(f"error: {job.image}: {exc}", file=sys.stderr)
        else:
            self.overall.write(f"{job.image} -> {job.target}")
        finally:
            job.bar.close()
            self.slots.put_nowait(slot)
        self.overall.update(1)  # not reached when interrupted

    async def _upscale(self, job: _Job) -> None:
        assert job.bar is not None
        handle = await self.client.submit(ENDPOINT_ID, {**self.arguments, "image_url": job.image})
        try:
            async for status in handle.stream(with_logs=True):
                self._show(job, status)
            result = await handle.result()
        except asyncio.CancelledError:
            # Interrupted (Ctrl-C): do not leave the server working for nobody.
            with contextlib.suppress(SuperscaleError):
                await handle.cancel()
            raise
        job.bar.set_description_str(f"{job.image.name}: downloading")
        await result.image.adownload(job.target)

    @staticmethod
    def _show(job: _Job, status: Status) -> None:
        bar = job.bar
        assert bar is not None
        name = job.image.name
        if isinstance(status, Queued):
            bar.set_description_str(f"{name}: queued, {status.position} ahead")
            return
        if not isinstance(status, (InProgress, Completed)):
            return
        progress = tile_progress(status.logs)
        if progress is not None:
            if not job.started:
                bar.reset(total=progress[1])  # time and rate from the first tile, not the queue
                job.started = True
            bar.total, bar.n = progress[1], progress[0]
        label = "upscaling" if isinstance(status, InProgress) else "done"
        bar.set_description_str(f"{name}: {label}", refresh=False)
        bar.refresh()


async def run_all(
    images: list[Path],
    out_dir: Path,
    arguments: dict[str, Any],
    *,
    base_url: str | None,
    key: str | None,
    concurrency: int,
    fmt: str,
) -> list[tuple[Path, str]]:
    """Upscale every image; returns the failures as (image, message)."""
    jobs = [_Job(image, output_path(image, out_dir, fmt)) for image in images]
    async with AsyncClient(base_url, key) as client:
        with tqdm(total=len(jobs), desc="images", position=0, unit="img") as overall:
            runner = _Runner(client, arguments, concurrency, overall)
            await asyncio.gather(*(runner.run(job) for job in jobs))
    return runner.failures


@click.command()
@click.argument(
    "images",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option(
    "-o",
    "--output-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the 4x images ({stem}_4x.png); created if missing.",
)
@click.option("--server", default=None, help="Server URL [default: $SUPERSCALE_URL or local].")
@click.option("--key", default=None, help="API key id:secret [default: $FAL_KEY].")
@click.option(
    "--checkpoint",
    default="v1",
    show_default=True,
    help="v1, v2, or a name the server serves for a checkpoint of its own.",
)
@click.option("--overlapping-tiles", is_flag=True, help="Blend a second tile pass: no seams.")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Style noise seed.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(sorted(EXTENSIONS)),
    default="png",
    show_default=True,
    help="Output encoding.",
)
@click.option(
    "-j",
    "--concurrency",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Images in flight at once.",
)
def run(
    images: tuple[Path, ...],
    output_dir: Path,
    server: str | None,
    key: str | None,
    checkpoint: str,
    overlapping_tiles: bool,
    seed: int | None,
    fmt: str,
    concurrency: int,
) -> None:
    """Upscale IMAGES 4x on a running superscale server."""
    targets = [output_path(image, output_dir, fmt) for image in images]
    if len(set(targets)) != len(targets):
        raise click.UsageError("two inputs have the same file stem: their outputs would collide")
    output_dir.mkdir(parents=True, exist_ok=True)
    arguments: dict[str, Any] = {
        "checkpoint": checkpoint,
        "overlapping_tiles": overlapping_tiles,
        "output_format": fmt,
    }
    if seed is not None:
        arguments["seed"] = seed
    try:
        failures = asyncio.run(
            run_all(
                list(images),
                output_dir,
                arguments,
                base_url=server,
                key=key,
                concurrency=concurrency,
                fmt=fmt,
            )
        )
    except ValueError as exc:  # a malformed --server URL
        raise click.UsageError(str(exc)) from exc
    if failures:
        click.echo(f"{len(failures)} of {len(images)} images failed", err=True)
        sys.exit(1)
