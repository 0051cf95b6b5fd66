"""Torch's threads follow the CPUs the process may use: its affinity mask and its cgroup's CPU
quota (a container's `--cpus`), read from files in the kernel's formats."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from superscale.cpus import cgroup_cpu_quota, usable_cpus
from superscale.engine.cpus import fit_threads


def _cgroup(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_cgroup_quota_v2_v1_and_none(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(_cgroup(tmp_path / "a", {"cpu.max": "250000 100000\n"})) == 2.5
    assert cgroup_cpu_quota(_cgroup(tmp_path / "b", {"cpu.max": "max 100000\n"})) is None
    v1 = {"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}
    assert cgroup_cpu_quota(_cgroup(tmp_path / "c", v1)) == 0.5
    unlimited = {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}
    assert cgroup_cpu_quota(_cgroup(tmp_path / "d", unlimited)) is None
    assert cgroup_cpu_quota(tmp_path / "none") is None


def test_quota_caps_the_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    affinity = len(os.sched_getaffinity(0))
    half = _cgroup(tmp_path / "half", {"cpu.max": "50000 100000"})
    assert usable_cpus(half) == 1  # half a CPU still needs a thread
    roomy = _cgroup(tmp_path / "roomy", {"cpu.max": "6400000 100000"})
    assert usable_cpus(roomy) == affinity  # 64 CPUs of quota, but only these to run on
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(max(2, affinity))
        assert fit_threads(half) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice stands
        torch.set_num_threads(2)
        assert fit_threads(half) == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to mask one off")
def test_an_engine_under_an_affinity_mask_uses_that_many_threads(small_model_dir: Path) -> None:
    """torch counts CPUs when it starts; a mask set later (taskset -p, a scheduler moving the
    process) is what the engine follows when it is built."""
    code = (
        "import os, torch\n"
        "from superscale.engine import Upscaler\n"
        "started = torch.get_num_threads()\n"
        "os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})\n"
        f"Upscaler.from_checkpoint('v1', model_dir={str(small_model_dir)!r}, device='cpu')\n"
        "print(started, torch.get_num_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    started, after = map(int, out.stdout.split())
    assert started >= 2 and after == 1
