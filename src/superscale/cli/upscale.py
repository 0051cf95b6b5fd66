"""`superscale upscale IN [IN…] -o OUT`: upscale local images 4× on this machine, no server.

Inputs are files or folders (their images, not recursing). OUT is a directory that receives
`{stem}_{factor}x.{ext}`, or, for a single input file, the output file itself when it has an image
suffix. One progress bar counts the tiles of all images. An input that cannot be read is
reported and skipped; the exit code is 1 when any input failed.

torch loads only when the command runs, so that `superscale --help` stays fast.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
from PIL import Image
from tqdm import tqdm

from superscale import images
from superscale.cli.options import model_dir_option
from superscale.scaling import (
    MAX_SCALE,
    MAX_TILE_OVERLAP,
    MIN_SCALE,
    Scale,
    Target,
    check_output_size,
    model_passes,
    resolve,
)
from superscale.schemas import CHECKPOINTS
from superscale.settings import Settings

if TYPE_CHECKING:  # torch loads only when the command runs
    from superscale.engine import Upscaler

# Suffixes that make OUT a file (and give its format) when there is one input.
OUTPUT_SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


@dataclass
class Item:
    """One input image and where its upscale goes."""

    source: Path
    target: Path
    tiles: int = 0  # planned from the header; corrected by the engine's first progress call


def collect_inputs(paths: Iterable[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files named (whatever their suffix), plus the images inside folders named (by suffix);
    and the paths that gave nothing."""
    # Suffixes Pillow registers for the formats `images.decode` accepts.
    suffixes = {
        ext for ext, fmt in Image.registered_extensions().items() if fmt in images.INPUT_FORMATS
    }
    found: list[Path] = []
    problems: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for path in paths:
        if path.is_dir():
            members = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes
            )
            if not members:
                problems.append((path, "folder holds no image files"))
        elif path.exists():
            members = [path]
        else:
            problems.append((path, "no such file or folder"))
            members = []
        for member in members:
            key = member.resolve()
            if key not in seen:
                seen.add(key)
                found.append(member)
    return found, problems


def plan_targets(sources: Sequence[Path], out_dir: Path, fmt: str, label: str = "4x") -> list[Path]:
    """`{stem}_{label}.{ext}` in `out_dir` (`label`: the factor, `2.5x`, or the target size,
    `640x480`, `640x`); inputs sharing a stem get `{stem}_2_4x.{ext}`, …"""
    ext = images.extension(fmt)
    taken: set[str] = set()
    targets = []
    for source in sources:
        name, n = f"{source.stem}_{label}.{ext}", 1
        while name in taken:
            n += 1
            name = f"{source.stem}_{n}_{label}.{ext}"
        taken.add(name)
        targets.append(out_dir / name)
    return targets


def write_atomically(path: Path, data: bytes) -> None:
    """Write through a temporary file in the same folder, so no half-written output remains.
    (Not `tempfile.mkstemp`: its 0600 mode would outlive the rename.)"""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _check_checkpoint(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A published name, a name SUPERSCALE_CHECKPOINTS gives a folder, or a folder."""
    if value in CHECKPOINTS or Path(value).is_dir():
        return value
    try:
        own = Settings().checkpoint_paths
    except ValueError:  # a bad SUPERSCALE_* is reported where it is used, not here
        own = {}
    if value in own:
        return own[value]
    yours = "".join(f", {name}" for name in own)
    raise click.BadParameter(f"use {' or '.join(CHECKPOINTS)}{yours}, or a checkpoint folder")


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Output folder (created if needed), or output file for a single input.",
)
@click.option(
    "--checkpoint",
    default="v2",
    show_default=True,
    callback=_check_checkpoint,
    help="v1, v2, a name SUPERSCALE_CHECKPOINTS gives (NAME=PATH), or a folder holding "
    "model.safetensors and config.json (what `superscale train` writes).",
)
@model_dir_option
@click.option(
    "--overlapping-tiles",
    is_flag=True,
    default=False,
    help="Blend an offset second pass of tiles: no seams, about twice the time.",
)
@click.option(
    "--scale",
    type=click.FloatRange(MIN_SCALE, MAX_SCALE),
    default=4.0,
    show_default=True,
    help="Factor, 1 to 16 (fractions allowed): above 4 the model runs twice; the result is "
    "resized to round(width·scale) × round(height·scale).",
)
@click.option(
    "--width",
    type=click.IntRange(1),
    default=None,
    help="Output width instead of --scale (alone: aspect kept).",
)
@click.option(
    "--height",
    type=click.IntRange(1),
    default=None,
    help="Output height instead of --scale (alone: aspect kept).",
)
@click.option(
    "--tile-overlap",
    type=click.IntRange(0, MAX_TILE_OVERLAP),
    default=None,
    help="Input px neighbouring tiles share, blended: no seams for ~1.34x the tiles at 8 "
    "(default: SUPERSCALE_TILE_OVERLAP, 8; 0 with --overlapping-tiles).",
)
@click.option(
    "--quality", type=click.IntRange(1, 100), default=None, help="jpeg/webp quality (default 90)."
)
@click.option("--lossless", is_flag=True, default=False, help="Lossless webp.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None, help="Style noise seed.")
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:N or mps (default auto).")
@click.option("--dtype", default=None, help="auto, fp32, bf16 or fp16 (default auto).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(images.OUTPUT_FORMATS),
    default=None,
    help="Output format (default png, or the output file's suffix).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show the tile progress bar (default: when stderr is a terminal).",
)
def upscale(
    inputs: tuple[Path, ...],
    output: Path,
    checkpoint: str,
    model_dir: Path | None,
    overlapping_tiles: bool,
    scale: float,
    width: int | None,
    height: int | None,
    tile_overlap: int | None,
    quality: int | None,
    lossless: bool,
    seed: int | None,
    device: str | None,
    dtype: str | None,
    fmt: str | None,
    progress: bool | None,
) -> None:
    """Upscale images (4x unless --scale) with AuraSR on this machine, writing
    OUTPUT/{stem}_4x.{ext}."""
    settings = Settings()
    sources, problems = collect_inputs(inputs)
    single_file = len(inputs) == 1 and inputs[0].is_file()
    out_is_file = single_file and output.suffix.lower() in OUTPUT_SUFFIXES and not output.is_dir()
    if out_is_file:
        implied = OUTPUT_SUFFIXES[output.suffix.lower()]
        if fmt is not None and fmt != implied:
            raise click.UsageError(f"--format {fmt} does not match the output file {output.name}")
        fmt = implied
    fmt = fmt or "png"
    out_dir = output.parent if out_is_file else output
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.UsageError(f"cannot create the output folder {out_dir}: {exc}") from None
    if (quality is not None or lossless) and fmt == "png":
        raise click.UsageError("--quality and --lossless apply to jpeg and webp (png is lossless)")
    if lossless and fmt != "webp":
        raise click.UsageError("--lossless applies to webp")
    target = Target(width, height) if width or height else None
    label = f"{width or ''}x{height or ''}" if target else f"{scale:g}x"
    targets = [output] if out_is_file else plan_targets(sources, out_dir, fmt, label)
    items = [Item(s, t) for s, t in zip(sources, targets, strict=True)]

    for path, message in problems:
        _report(path, message)
    if items:
        upscaler = _load(checkpoint, model_dir or settings.model_dir, device, dtype, settings)
        show = sys.stderr.isatty() if progress is None else progress
        if tile_overlap is None:
            tile_overlap = 0 if overlapping_tiles else settings.tile_overlap
        how = How(fmt, overlapping_tiles, target or scale, seed, tile_overlap, quality, lossless)
        failures = _run(upscaler, items, how, settings, show)
    else:
        failures = 0
    failed = failures + len(problems)
    if failed:
        total = len(items) + len(problems)
        click.echo(f"{failed} of {total} inputs failed", err=True)
        sys.exit(1)


def _load(
    checkpoint: str, model_dir: Path | None, device: str | None, dtype: str | None, s: Settings
) -> Upscaler:
    from superscale.engine import Upscaler, resolve_device, resolve_dtype
    from superscale.model import CheckpointError

    try:
        dev = resolve_device(device or s.device)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--device") from None
    try:
        resolve_dtype(dtype or s.dtype, dev)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--dtype") from None
    options = dataclasses.replace(s.engine_options(), device=str(dev), dtype=dtype or s.dtype)
    try:
        return Upscaler.from_options(checkpoint, options, model_dir)
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from None


@dataclass(frozen=True)
class How:
    """What every image of a run is upscaled with."""

    fmt: str
    overlapping_tiles: bool
    scale: Scale
    seed: int | None
    tile_overlap: int = 0
    quality: int | None = None
    lossless: bool = False


def _planned_tiles(path: Path, how: How, upscaler: Upscaler) -> int:
    """Tiles an image will take (both passes above 4×), from its header only (0 when the
    header cannot be read)."""
    from superscale.engine.tiling import TilePlan

    try:
        with Image.open(path) as im:
            width, height = im.size
    except Exception:
        return 0
    c, total = upscaler.config, 0
    try:
        factor, _ = resolve(width, height, how.scale)
    except ValueError:
        return 0  # reported when the image runs
    for _ in range(model_passes(factor, c.scale)):
        plan = TilePlan(
            height, width, c.input_image_size, c.scale, how.overlapping_tiles, how.tile_overlap
        )
        total += plan.total
        width, height = width * c.scale, height * c.scale
    return total


def _run(upscaler: Upscaler, items: list[Item], how: How, settings: Settings, show: bool) -> int:
    """Upscale every item under one bar; return how many failed."""
    for item in items:
        item.tiles = _planned_tiles(item.source, how, upscaler)
    failures = 0
    with _TileBar(sum(i.tiles for i in items), show) as bar:
        for item in items:
            progress = bar.start(item)
            try:
                message = _upscale_one(upscaler, item, how, settings, progress)
            except Exception as exc:  # one bad image must not abort the batch
                known = isinstance(exc, images.ImageError | OSError)
                failures += 1
                bar.drop_rest(item)
                _report(item.source, str(exc) if known else f"{type(exc).__name__}: {exc}")
            else:
                tqdm.write(message, file=sys.stdout)
    return failures


class _TileBar:
    """One tqdm bar over the tiles of all images. Each image's share starts as the header's
    estimate and is set to the engine's count at its first progress call."""

    def __init__(self, total: int, show: bool) -> None:
        self.total = total
        self.done = 0
        self._item_done = 0
        self.bar = tqdm(total=total, unit="tile", disable=not show, file=sys.stderr)

    def __enter__(self) -> _TileBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def start(self, item: Item) -> Callable[[int, int], None]:
        """Begin `item`; return its `progress(done, total)` callback for the engine."""
        self.bar.set_description(item.source.name)
        self._item_done = 0

        def progress(done: int, total: int) -> None:
            if total != item.tiles:
                self._set_total(self.total + total - item.tiles)
                item.tiles = total
            self.bar.update(done - self._item_done)
            self.done += done - self._item_done
            self._item_done = done

        return progress

    def drop_rest(self, item: Item) -> None:
        """`item` failed: its tiles still to come never will."""
        self._set_total(self.total - (item.tiles - self._item_done))

    def _set_total(self, total: int) -> None:
        self.total = total
        self.bar.total = total
        self.bar.refresh()


def _upscale_one(
    upscaler: Upscaler,
    item: Item,
    how: How,
    settings: Settings,
    progress: Callable[[int, int], None],
) -> str:
    decoded = images.decode(item.source.read_bytes(), settings.max_input_pixels)
    width, height = decoded.image.size
    try:
        size = check_output_size(
            width, height, how.scale, settings.max_output_pixels, upscaler.config.scale
        )
    except ValueError as exc:
        raise images.ImageTooLarge(str(exc)) from None
    images.check_size(*size, how.fmt)
    out = upscaler.upscale(
        decoded.image,
        overlapping_tiles=how.overlapping_tiles,
        seed=how.seed,
        progress=progress,
        scale=how.scale,
        tile_overlap=how.tile_overlap,
    )
    encoded = images.encode(out, how.fmt, decoded.icc_profile, how.quality, how.lossless)
    write_atomically(item.target, encoded)
    return f"{item.source} -> {item.target} ({out.width}x{out.height})"


def _report(path: Path, message: str) -> None:
    tqdm.write(f"error: {path}: {message}", file=sys.stderr)  # above the bar, if one is shown
