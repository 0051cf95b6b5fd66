"""Seams and their cost: plain tiles, `overlapping_tiles` (fal's remedy, a second offset pass)
and `tile_overlap` 4/8/16 (one pass of overlapping tiles, blended), on the same images.

Per mode: the tiles it runs and their cost against plain (tile counts: what the GPU and CPU
spend), the measured seconds on this machine (same run, same model), and the seam metric of
`superscale.engine.seams` (mean step across tile edges over mean step inside tiles: 1 means
the edges cannot be told apart) per image — a smooth gradient and photographs from
scikit-image's data set, as shipped and JPEG-compressed at quality 30 ("the more compressed
the input image is, the more noticeable the tiles").

Random weights (no checkpoint can be downloaded here): the small config by default, whose
untrained tile edges make seams stark; `--config released` times the real network's size.

    .venv/bin/python benchmarks/seams.py
    .venv/bin/python benchmarks/seams.py --config released --size 192x128
"""

from __future__ import annotations

import argparse
import io
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from superscale.engine import Upscaler
from superscale.engine.seams import seam_score
from superscale.engine.tiling import TilePlan
from superscale.model import RELEASED_CONFIG, SMALL_CONFIG, save_random_checkpoint

MODES: list[tuple[str, bool, int]] = [
    ("plain", False, 0),
    ("overlapping_tiles", True, 0),
    ("tile_overlap=4", False, 4),
    ("tile_overlap=8", False, 8),
    ("tile_overlap=16", False, 16),
]


def _images(width: int, height: int) -> dict[str, Image.Image]:
    from skimage import data  # the dev extra: test images a package ships

    yy, xx = np.mgrid[0:height, 0:width]
    gradient = np.stack([xx / width, yy / height, (xx + yy) / (width + height)], -1) * 200 + 20
    out = {"gradient": Image.fromarray(gradient.astype(np.uint8))}
    for name in ("astronaut", "coffee", "chelsea"):
        photo = Image.fromarray(getattr(data, name)()[..., :3])
        out[name] = photo.resize((width, height), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        out[name].save(buf, "JPEG", quality=30)
        out[f"{name}-jpeg30"] = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=["small", "released"], default="small")
    parser.add_argument("--size", default="256x192", help="WxH of every test image")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    config = SMALL_CONFIG if args.config == "small" else RELEASED_CONFIG
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        save_random_checkpoint(Path(tmp), config, seed=1)
        up = Upscaler.from_checkpoint(tmp, device="cpu", dtype="fp32")
        images = _images(width, height)
        up.upscale(images["gradient"])  # fold the weights before timing anything
        print(
            f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; {args.config} config, random weights; "
            f"{len(images)} images of {width}x{height}"
        )
        plain_tiles = TilePlan(height, width, 64, 4, False).total
        big = TilePlan(2048, 2048, 64, 4, False).total
        names = list(images)
        print(
            f"{'mode':<18} {'tiles':>5} {'cost':>5} {'2048²':>6} {'s/img':>6}  seam: "
            + " ".join(f"{n:>15}" for n in names)
            + f" {'mean':>6}"
        )
        plain_seconds = None
        for mode, overlapping, margin in MODES:
            plan = TilePlan(height, width, 64, 4, overlapping, margin)
            scores, seconds = [], 0.0
            for image in images.values():
                t0 = time.perf_counter()
                out = up.upscale(image, overlapping_tiles=overlapping, tile_overlap=margin)
                seconds += time.perf_counter() - t0
                scores.append(seam_score(np.asarray(out), plan))
            seconds /= len(images)
            plain_seconds = plain_seconds or seconds
            cost_big = TilePlan(2048, 2048, 64, 4, overlapping, margin).total / big
            print(
                f"{mode:<18} {plan.total:>5} {plan.total / plain_tiles:>5.2f} {cost_big:>6.2f} "
                f"{seconds:>6.2f}  seam: "
                + " ".join(f"{s:>15.2f}" for s in scores)
                + f" {np.mean(scores):>6.2f}"
            )
        print(
            "cost: tiles against plain at this size; 2048²: the same on a 2048² image, where "
            "(64/(64-overlap))² holds; s/img: measured, this run"
        )


if __name__ == "__main__":
    main()
