"""`superscale run`: three images in, three 4× files out, through a real server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from .conftest import ServerProc

RUN = [sys.executable, "-m", "superscale", "run"]


def server_args(server: ServerProc) -> list[str]:
    return ["--server", server.url, "--key", server.key]


def test_run_writes_one_4x_file_per_image(
    server: ServerProc, image_factory: Callable[..., Image.Image], tmp_path: Path
) -> None:
    sizes = {"a": (10, 6), "b": (7, 9), "c": (16, 4)}
    inputs = []
    for stem, size in sizes.items():
        path = tmp_path / f"{stem}.png"
        image_factory(*size, seed=size[0]).save(path)
        inputs.append(str(path))
    out = tmp_path / "out"
    done = subprocess.run(
        [*RUN, *inputs, "-o", str(out), *server_args(server), "--seed", "3", "-j", "2"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    for stem, (width, height) in sizes.items():
        with Image.open(out / f"{stem}_4x.png") as result:
            assert result.size == (4 * width, 4 * height)
    assert "queued" in done.stderr or "upscaling" in done.stderr  # the bars were drawn
    assert sorted(p.name for p in out.iterdir()) == ["a_4x.png", "b_4x.png", "c_4x.png"]


def test_run_reports_failures_and_exits_nonzero(server: ServerProc, tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not an image")
    done = subprocess.run(
        [*RUN, str(bad), "-o", str(tmp_path / "o"), *server_args(server)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "error: " in done.stderr and "notes.png" in done.stderr
    assert not list((tmp_path / "o").iterdir())
