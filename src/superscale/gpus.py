"""How many NVIDIA GPUs this process may use, without loading torch or CUDA: `serve` starts
one worker process per GPU from it, before any of them imports torch."""

from __future__ import annotations

import os
from pathlib import Path

NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one entry per GPU the driver sees (Linux)


def visible_gpus(root: Path = NVIDIA_GPUS, environ: dict[str, str] | None = None) -> int:
    """The driver's GPUs, narrowed by CUDA_VISIBLE_DEVICES where it is set (indices or
    UUIDs, comma-separated; empty or -1 hides them all). 0 without the NVIDIA driver."""
    try:
        present = sum(1 for _ in root.iterdir())
    except OSError:
        return 0
    visible = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return present
    listed = []
    for entry in visible.split(","):
        entry = entry.strip()
        if not entry or entry.startswith("-"):  # CUDA stops at the first invalid entry
            break
        listed.append(entry)
    return min(present, len(listed))
