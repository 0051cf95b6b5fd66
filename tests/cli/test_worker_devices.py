"""One worker process per device: `serve --device cuda:0,cuda:1` starts one per GPU; a
`worker` takes one device."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from superscale.cli import main
from superscale.cli.processes import run_workers
from superscale.cli.serve import worker_processes
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
