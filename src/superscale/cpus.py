"""How many CPUs this process may really use: its affinity mask, capped by its cgroup's CPU
quota (a container's `--cpus`). Torch-free: the engine sizes its threads by it
(`engine.cpus`), `serve` its API processes."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def cgroup_cpu_quota(root: Path = CGROUP) -> float | None:
    """CPUs' worth of time the cgroup allows (2.5 for `--cpus 2.5`); None without a limit.
    cgroup v2 (`cpu.max`: "QUOTA PERIOD" or "max PERIOD"), else v1 (`cpu.cfs_quota_us`)."""
    try:
        quota, _, period = (root / "cpu.max").read_text().strip().partition(" ")
        if quota == "max":
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu/cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu/cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


def usable_cpus(root: Path = CGROUP) -> int:
    """The CPUs this process may run on (affinity), capped by the cgroup quota (rounded up)."""
    if hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
    else:  # macOS, Windows: no affinity API
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)
