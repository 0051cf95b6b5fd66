"""The engine sharing its CPUs: tiles/s on a quiet machine and with one core kept busy by
another process, for OpenMP's default wait policy (threads spin while they wait for each other)
and for `OMP_WAIT_POLICY=PASSIVE` (they sleep), which `superscale serve` and `worker` set unless
told otherwise. Each policy runs in its own process (OpenMP reads it once, at start); both in
this run, so the ratios compare. Released config, random weights, a 256×128 image (8 tiles).

    .venv/bin/python benchmarks/contention.py            # bf16 where the CPU has it, else fp32
    .venv/bin/python benchmarks/contention.py --dtype fp32
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

POLICIES = {"spin (OpenMP's default)": None, "passive (the service's)": "PASSIVE"}
CHECKPOINT = Path(os.environ.get("TMPDIR", "/tmp")) / "superscale-bench-released"


def _measure(dtype: str) -> dict[str, float]:
    """In the child: quiet and busy tiles/s (best of two runs each)."""
    import numpy as np
    import torch
    from PIL import Image

    from superscale.engine import Upscaler

    up = Upscaler.from_checkpoint(str(CHECKPOINT), device="cpu", dtype=dtype)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 256, 3), np.uint8))
    up.upscale(image)  # fold and warm

    def rate() -> float:
        best = 0.0
        for _ in range(2):
            t0 = time.perf_counter()
            up.upscale(image)
            best = max(best, 8 / (time.perf_counter() - t0))
        return best

    quiet = rate()
    last = max(os.sched_getaffinity(0))
    hog = subprocess.Popen(
        [sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{last}}})\nwhile True: pass"]
    )
    try:
        time.sleep(0.5)
        busy = rate()
    finally:
        hog.kill()
    return {"quiet": quiet, "busy": busy, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.dtype)))
        return
    if not (CHECKPOINT / "model.safetensors").exists():
        from superscale.model import RELEASED_CONFIG, save_random_checkpoint

        save_random_checkpoint(CHECKPOINT, RELEASED_CONFIG, seed=0)
    print(
        f"# {len(os.sched_getaffinity(0))} CPUs; one kept busy by another process; "
        f"dtype {args.dtype}"
    )
    print(
        f"{'wait policy':<26} {'threads':>7} {'quiet tiles/s':>14} {'busy tiles/s':>13} "
        f"{'busy/quiet':>10}"
    )
    for name, policy in POLICIES.items():
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if policy:
            env["OMP_WAIT_POLICY"] = policy
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--dtype", args.dtype],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{name:<26} {r['threads']:>7} {r['quiet']:>14.2f} {r['busy']:>13.2f} "
            f"{r['busy'] / r['quiet']:>10.2f}"
        )


if __name__ == "__main__":
    main()
