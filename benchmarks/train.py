"""Training cost: steps/s and peak memory of `superscale train` at the released config
(random weights, from scratch: the same network a fine-tune trains), for batches 1-4, with
L1 alone and with gradient checkpointing at the largest batch; each in a process of its own,
so that each peak is its own.

    .venv/bin/python benchmarks/train.py [--batches 1,2,4] [--steps 3] [--device auto]

Peak memory is the process's peak resident set on a CPU, and the peak of PyTorch's allocator
on a GPU. There is no reference to compare with: the reference package has no training code.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import skimage.data
import torch
from PIL import Image

from superscale.model import RELEASED_CONFIG
from superscale.train.distributed import Process
from superscale.train.loop import Trainer
from superscale.train.options import TrainOptions

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def one(
    folder: Path, batch: int, steps: int, device: str, checkpointing: bool, bf16: bool | None
) -> dict[str, float]:
    opts = TrainOptions(
        data=[str(folder / "data")],
        out=str(folder / "out"),
        init=None,
        config=str(folder / "config.json"),
        batch=batch,
        workers=1,
        progress=False,
        device=device,
        checkpointing=checkpointing,
        perceptual=0.0,
        bf16=bf16,
    )
    trainer = Trainer(opts, Process.start(device), None)
    batches, _ = trainer.data()
    cuda = trainer.device.type == "cuda"
    trainer.train_step(batches)  # warm-up: first-use allocations, kernel selection
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(batches)
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"s_per_step": seconds, "samples_per_s": batch / seconds, "peak_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,2,4")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPUs: the default)")
    parser.add_argument(
        "--one", nargs=3, metavar=("FOLDER", "BATCH", "CHECKPOINTING"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.one:
        folder, batch, checkpointing = Path(args.one[0]), int(args.one[1]), args.one[2] == "1"
        bf16 = True if args.bf16 else None  # None: the trainer's own choice
        print(json.dumps(one(folder, batch, args.steps, args.device, checkpointing, bf16)))
        return

    folder = Path(tempfile.mkdtemp(prefix="superscale-train-bench-"))
    (folder / "data").mkdir()
    for name in PHOTOS:
        Image.fromarray(getattr(skimage.data, name)()).save(folder / "data" / f"{name}.png")
    (folder / "config.json").write_text(json.dumps(RELEASED_CONFIG.to_dict()))
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    precision = "bf16 autocast" if args.bf16 else "the trainer's precision (bf16 on GPUs with it)"
    print(
        f"released config, {device} ({name}), {precision}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {args.steps} timed steps after one warm-up"
    )
    print(f"{'batch':>5} {'checkpointing':>13} {'s/step':>8} {'samples/s':>10} {'peak MB':>9}")
    batches = [int(b) for b in args.batches.split(",")]
    runs = [(b, False) for b in batches] + [(max(batches), True)]
    for batch, checkpointing in runs:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--steps",
                str(args.steps),
                "--device",
                device,
                "--one",
                str(folder),
                str(batch),
                "1" if checkpointing else "0",
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            print(f"{batch:>5} {checkpointing!s:>13} failed: {done.stderr.strip()[-300:]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{batch:>5} {checkpointing!s:>13} {r['s_per_step']:8.2f} "
            f"{r['samples_per_s']:10.3f} {r['peak_mb']:9.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
