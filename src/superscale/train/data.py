"""Training data: image files found in folders, random high-resolution crops, and the
low-resolution inputs made from them (`degrade.py`).

A sample is named by its *position* in an endless stream: epoch `position // n` visits the
images in a permutation drawn from (seed, epoch), and everything random about the sample
(crop, flips, degradation, style noise) is drawn from (seed, position). So a sample is the
same whichever process loads it, a run resumes at a step by starting at its position, and N
processes that split each step's positions see exactly what one process would.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from superscale import images
from superscale.model import INPUT_NOISE_SCALE

from .degrade import Degradation

log = logging.getLogger(__name__)

SCALE = 4
VALIDATION_SEED = 2**31 - 1  # a stream of its own: validation never shares a training draw


class DataError(ValueError):
    """The training data cannot be used; the message says why and where."""


def image_suffixes() -> frozenset[str]:
    """File suffixes of the formats `superscale.images` decodes."""
    Image.init()
    readable = set(images.INPUT_FORMATS)
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in readable)


def find_images(sources: Sequence[str | Path]) -> list[Path]:
    """Image files in `sources` (files as given; folders searched recursively, by suffix), in
    a stable order."""
    suffixes = image_suffixes()
    found: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found += sorted(
                p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
            )
        elif source.is_file():
            found.append(source)
        else:
            raise DataError(f"{source}: no such file or folder")
    return found


@dataclass(frozen=True)
class ImageEntry:
    path: Path
    width: int
    height: int


@dataclass
class Scan:
    usable: list[ImageEntry] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    too_small: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{len(self.usable)} usable image(s)"]
        if self.too_small:
            parts.append(f"{len(self.too_small)} smaller than the crop, skipped")
        if self.unreadable:
            shown = "; ".join(f"{p}: {why}" for p, why in self.unreadable[:3])
            more = f" (and {len(self.unreadable) - 3} more)" if len(self.unreadable) > 3 else ""
            parts.append(f"{len(self.unreadable)} unreadable, skipped — {shown}{more}")
        return ", ".join(parts)


def scan_images(paths: Sequence[Path], crop: int) -> Scan:
    """Read each file's header: its size, or why it cannot be used (no pixel is decoded)."""
    scan = Scan()
    Image.init()
    formats = [f for f in images.INPUT_FORMATS if f in Image.OPEN]
    for path in paths:
        try:
            with Image.open(path, formats=formats) as im:
                width, height = im.size
        except Exception as exc:  # any parser failure: the file's fault, never a crash
            scan.unreadable.append((path, str(exc) or type(exc).__name__))
            continue
        if min(width, height) < crop:
            scan.too_small.append(path)
        else:
            scan.usable.append(ImageEntry(path, width, height))
    return scan


def decode_rgb(path: Path) -> Tensor:
    """(3, H, W) uint8, upright, alpha dropped; `images.ImageError` when it does not decode."""
    decoded = images.decode(path.read_bytes(), max_pixels=2**31 - 1)
    rgb = np.asarray(decoded.image.convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)


def crop_source(path: Path, crop: int) -> Tensor:
    """An image's pixels to take crops from; `images.ImageError` (or OSError) when it does not
    decode, or turns out smaller than the crop (its header said otherwise: orientation)."""
    pixels = decode_rgb(path)
    if min(pixels.shape[1:]) < crop:
        raise images.ImageError("smaller than the crop once decoded")
    return pixels


def cut(pixels: Tensor, top: int, left: int, crop: int) -> Tensor:
    """A crop² window of uint8 pixels, as floats in [0, 1]."""
    return pixels[:, top : top + crop, left : left + crop].float() / 255


def sample_rng(seed: int, position: int) -> np.random.Generator:
    return np.random.default_rng([seed, position])


class CropDataset(Dataset[dict[str, Tensor]]):
    """Samples by position: {"lr": (3, 64, 64), "hr": (3, 256, 256), "z", "noise"}."""

    def __init__(
        self,
        entries: Sequence[ImageEntry],
        *,
        crop: int,
        style_dim: int,
        degradation: Degradation,
        seed: int,
        flips: bool = True,
        cache_bytes: int = 512 * 2**20,
    ) -> None:
        if not entries:
            raise DataError("no images to train on")
        self.entries = list(entries)
        self.crop = crop
        self.style_dim = style_dim
        self.degradation = degradation
        self.seed = seed
        self.flips = flips
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[int, Tensor] = OrderedDict()
        self._cached = 0
        self._orders: dict[int, np.ndarray] = {}
        self._failed: set[int] = set()

    def __len__(self) -> int:  # one epoch; positions go on past it
        return len(self.entries)

    def image_index(self, position: int) -> int:
        epoch, offset = divmod(position, len(self.entries))
        order = self._orders.get(epoch)
        if order is None:
            order = np.random.default_rng([self.seed, epoch, 1]).permutation(len(self.entries))
            self._orders = {epoch: order}  # positions advance: one epoch's order is enough
        return int(order[offset])

    def __getitem__(self, position: int) -> dict[str, Tensor]:
        rng = sample_rng(self.seed, position)
        index = self.image_index(position)
        pixels = self._pixels(index)
        _, h, w = pixels.shape
        top = int(rng.integers(0, h - self.crop + 1))
        left = int(rng.integers(0, w - self.crop + 1))
        hr = cut(pixels, top, left, self.crop)
        if self.flips:
            if rng.random() < 0.5:
                hr = hr.flip(-1)
            if rng.random() < 0.5:
                hr = hr.transpose(-1, -2)
        return make_sample(hr.contiguous(), self.degradation, self.style_dim, rng)

    def _pixels(self, index: int) -> Tensor:
        """The image's pixels; one that fails to decode is replaced, for good, by the next
        that decodes (the same one in every process), and said once per process."""
        for attempt in range(len(self.entries)):
            i = (index + attempt) % len(self.entries)
            if i in self._failed:
                continue
            cached = self._cache.get(i)
            if cached is not None:
                self._cache.move_to_end(i)
                return cached
            try:
                pixels = crop_source(self.entries[i].path, self.crop)
            except (OSError, images.ImageError) as exc:
                log.warning("skipping %s: %s", self.entries[i].path, exc)
                self._failed.add(i)
                continue
            self._remember(i, pixels)
            return pixels
        raise DataError("none of the training images decodes")

    def _remember(self, index: int, pixels: Tensor) -> None:
        size = pixels.numel()
        if size > self.cache_bytes:
            return
        while self._cache and self._cached + size > self.cache_bytes:
            self._cached -= self._cache.popitem(last=False)[1].numel()
        self._cache[index] = pixels
        self._cached += size


def make_sample(
    hr: Tensor, degradation: Degradation, style_dim: int, rng: np.random.Generator
) -> dict[str, Tensor]:
    lr = degradation.apply(hr, hr.shape[-1] // SCALE, rng)
    z = torch.from_numpy(rng.standard_normal(style_dim, dtype=np.float32))
    noise = torch.from_numpy(rng.standard_normal(lr.shape, dtype=np.float32)) * INPUT_NOISE_SCALE
    return {"lr": lr, "hr": hr, "z": z, "noise": noise}


def validation_samples(
    entries: Sequence[ImageEntry], crop: int, style_dim: int, degradation: Degradation
) -> dict[str, Tensor]:
    """One fixed sample per image: its centre crop, degraded with a fixed seed; batched. An
    image that does not decode is skipped, as in training."""
    samples = []
    for i, entry in enumerate(entries):
        try:
            pixels = crop_source(entry.path, crop)
        except (OSError, images.ImageError) as exc:
            log.warning("skipping %s for validation: %s", entry.path, exc)
            continue
        _, h, w = pixels.shape
        hr = cut(pixels, (h - crop) // 2, (w - crop) // 2, crop)
        samples.append(make_sample(hr, degradation, style_dim, sample_rng(VALIDATION_SEED, i)))
    if not samples:
        raise DataError("none of the validation images decodes")
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def micro_batch(batch: int, accumulate: int, world: int) -> int:
    """One process's share of one accumulation pass; ValueError where the batch does not
    split evenly."""
    if batch % (accumulate * world):
        raise ValueError(
            f"the batch ({batch}) must divide into {accumulate} accumulation step(s) "
            f"× {world} process(es)"
        )
    return batch // (accumulate * world)


class StepPositions:
    """The positions each data-loading batch holds, from step `start` on: a step's global
    batch is `batch` positions, consumed in `accumulate` micro-batches; in each, rank r of
    `world` takes its own consecutive share."""

    def __init__(self, start: int, batch: int, accumulate: int, rank: int, world: int) -> None:
        self.start, self.batch, self.accumulate = start, batch, accumulate
        self.rank, self.world = rank, world
        self.micro = micro_batch(batch, accumulate, world)

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start
        while True:
            for a in range(self.accumulate):
                first = step * self.batch + (a * self.world + self.rank) * self.micro
                yield list(range(first, first + self.micro))
            step += 1
