"""One worker process per device: `serve --device cuda:0,cuda:1` starts one per GPU, and one
per visible GPU by itself where the device is `auto` or `cuda`; a `worker` takes one device."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from superscale.cli import main
from superscale.cli.processes import run_workers
from superscale.cli.serve import worker_processes
from superscale.gpus import visible_gpus
from superscale.settings import Settings


def test_serve_starts_one_worker_process_per_listed_device(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, device="cuda:0, cuda:1")
    assert settings.devices() == ["cuda:0", "cuda:1"]
    children = worker_processes(settings, "info", 1)
    assert [c.name for c in children] == ["workers-cuda:0", "workers-cuda:1"]
    assert all(c.target is run_workers for c in children)
    assert [c.args[0].device for c in children] == ["cuda:0", "cuda:1"]
    assert all(c.args[0].data_dir == tmp_path for c in children)  # the rest is shared


def test_one_device_one_worker_process(tmp_path: Path) -> None:
    for device, devices in (("auto", ["auto"]), ("cuda:1", ["cuda:1"]), (",", ["auto"])):
        settings = Settings(data_dir=tmp_path, device=device)
        assert settings.devices() == devices
        (child,) = worker_processes(settings, "info", 1)
        assert child.name == "workers" and child.args[0] is settings


def test_worker_refuses_a_device_list(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["worker", "--device", "cuda:0,cuda:1", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "one device per worker" in result.output


def test_serve_starts_one_worker_process_per_visible_gpu(tmp_path: Path) -> None:
    auto = Settings(data_dir=tmp_path)
    children = worker_processes(auto, "info", 1, gpus=3)
    assert [c.args[0].device for c in children] == ["cuda:0", "cuda:1", "cuda:2"]
    cuda = Settings(data_dir=tmp_path, device="cuda")
    assert len(worker_processes(cuda, "info", 1, gpus=2)) == 2
    # One GPU, a device named, or no workers (delivery only): one process.
    assert len(worker_processes(auto, "info", 1, gpus=1)) == 1
    assert len(worker_processes(Settings(data_dir=tmp_path, device="cpu"), "info", 1, gpus=4)) == 1
    assert len(worker_processes(Settings(data_dir=tmp_path, workers=0), "info", 1, gpus=4)) == 1


def test_visible_gpus_from_the_driver_and_cuda_visible_devices(tmp_path: Path) -> None:
    assert visible_gpus(tmp_path / "no-driver", {}) == 0
    gpus = tmp_path / "gpus"
    for bus in ("0000:17:00.0", "0000:65:00.0", "0000:ca:00.0"):
        (gpus / bus).mkdir(parents=True)
    assert visible_gpus(gpus, {}) == 3
    assert visible_gpus(gpus, {"CUDA_VISIBLE_DEVICES": "1,2"}) == 2
    assert visible_gpus(gpus, {"CUDA_VISIBLE_DEVICES": "GPU-8a1b,GPU-77c2"}) == 2
    assert visible_gpus(gpus, {"CUDA_VISIBLE_DEVICES": ""}) == 0
    assert visible_gpus(gpus, {"CUDA_VISIBLE_DEVICES": "0,-1,2"}) == 1  # stops at -1
    assert visible_gpus(gpus, {"CUDA_VISIBLE_DEVICES": "0,1,2,3,4"}) == 3
