"""Torch's thread count set to the CPUs this process may really use (`superscale.cpus`). Left
alone, torch starts one thread per core of the host: 32 threads in a `--cpus 2` container on a
32-core machine, which then contend for 2 CPUs' worth of time."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from superscale.cpus import CGROUP, usable_cpus


def fit_threads(root: Path = CGROUP) -> int:
    """Set torch's intra-op threads to `usable_cpus()` unless the user chose (OMP_NUM_THREADS
    or MKL_NUM_THREADS set); returns the count in effect. Read at each call: an affinity mask
    or quota set after torch started counts too."""
    if not (os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS")):
        wanted = usable_cpus(root)
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)
    return torch.get_num_threads()
