"""A container engine for the tests, made on this machine without any registry: Debian's
`docker.io` (installed when missing), a daemon this session starts and stops, a base image
built with debootstrap, and the project's image built from the real `Dockerfile` with the
legacy builder. Host networking only (loopback ports).

Enabled under CI or with SUPERSCALE_TEST_CONTAINERS=1; skipped with the reason otherwise.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "local/superscale-base:bookworm"
IMAGE = "local/superscale:test"
IMAGES = Path(__file__).resolve().parent / "images"
# The stand-ins for the public images compose.cluster.yaml names (no registry here).
STAND_INS = {
    "postgres": "local/superscale-postgres:test",
    "seaweedfs": "local/superscale-seaweedfs:test",
    "nginx": "local/superscale-nginx:test",
}
# Where this checkout keeps the daemon's data between runs (the base image survives).
DATA_ROOT = ROOT / ".cache" / "docker"


def enabled() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("SUPERSCALE_TEST_CONTAINERS"))


def run(*args: str, timeout: float = 600, check: bool = True, **kw: object) -> str:
    proc = subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,  # type: ignore[call-overload]
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[:4])}… failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return str(proc.stdout)


def _torch_version() -> str:
    import torch

    return str(torch.__version__).split("+")[0]


def _answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


class Engine:
    """The daemon: one already answering is used as it is; else one is started here and
    stopped by `close`."""

    def __init__(self) -> None:
        self.started: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if not shutil.which("dockerd") or not shutil.which("debootstrap"):
            run("apt-get", "update", "-qq", timeout=300)
            run(
                "apt-get",
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "docker.io",
                "docker-compose",
                "debootstrap",
                timeout=600,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
        if _answers():
            return
        DATA_ROOT.mkdir(parents=True, exist_ok=True)
        log = (DATA_ROOT.parent / "dockerd.log").open("wb")
        self.started = subprocess.Popen(
            ["dockerd", "--data-root", str(DATA_ROOT), "--storage-driver=overlay2"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not _answers():
            if self.started.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("dockerd did not start: see .cache/dockerd.log")
            time.sleep(0.5)

    def close(self) -> None:
        if self.started is not None:
            self.started.terminate()
            self.started.wait(60)

    def base_image(self) -> str:
        """Debian 12 (minbase), from Debian's mirror through debootstrap."""
        if (
            subprocess.run(
                ["docker", "image", "inspect", BASE_IMAGE], capture_output=True
            ).returncode
            == 0
        ):
            return BASE_IMAGE
        rootfs = DATA_ROOT.parent / "rootfs"
        shutil.rmtree(rootfs, ignore_errors=True)
        sources = Path("/etc/apt/sources.list.d/debian.sources")
        mirror = "http://deb.debian.org/debian"
        run("debootstrap", "--variant=minbase", "bookworm", str(rootfs), mirror, timeout=600)
        if sources.exists():
            shutil.copy(sources, rootfs / "etc/apt/sources.list.d/")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        run("docker", "import", "--change", 'CMD ["/bin/bash"]', "-", BASE_IMAGE, stdin=tar.stdout)
        tar.wait()
        shutil.rmtree(rootfs, ignore_errors=True)
        return BASE_IMAGE

    def build_image(self, context: Path, tag: str = IMAGE, extra: tuple[str, ...] = ()) -> str:
        """The project's image as users build it, with the test-only arguments: the local
        base, the CPU torch wheel this machine has, and the egress proxy's CA for pip; `extra`
        arguments for `docker build` (more --build-arg, --network host)."""
        if not (context / "Dockerfile").exists():
            self._prepare_context(context)
        args = [
            "docker",
            "build",
            "-q",
            "-t",
            tag,
            "--build-arg",
            f"BASE={self.base_image()}",
            "--build-arg",
            f"TORCH=torch=={_torch_version()}",
            "--build-arg",
            "PIP_ARGS=--find-links /src/docker/wheels",
            "--build-arg",
            "EXTRA_CA=docker/ca",
            *extra,
            str(context),
        ]
        run(*args, timeout=900, env={**os.environ, "DOCKER_BUILDKIT": "0"})
        return tag

    def _prepare_context(self, context: Path) -> None:
        shutil.rmtree(context, ignore_errors=True)
        context.mkdir(parents=True)
        for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
            shutil.copy(ROOT / name, context / name)
        shutil.copytree(ROOT / "src", context / "src", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "docker", context / "docker")
        (context / "docker/ca").mkdir()
        for cert in glob.glob("/usr/local/share/ca-certificates/*.crt"):
            shutil.copy(cert, context / "docker/ca")
        wheels = context / "docker/wheels"
        wheels.mkdir()
        run(
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "-d",
            str(wheels),
            f"torch=={_torch_version()}",
            timeout=600,
        )

    def build_stand_ins(self, context: Path) -> dict[str, str]:
        """Local images standing in for postgres, seaweedfs and nginx, from the base."""
        for name, tag in STAND_INS.items():
            folder = context / name
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(IMAGES, folder)
            if name == "seaweedfs":
                weed = Path(sys.executable).with_name("weed")
                shutil.copy(weed, folder / "weed")
            run(
                "docker",
                "build",
                "-q",
                "-t",
                tag,
                "-f",
                str(folder / f"{name}.Dockerfile"),
                "--build-arg",
                f"BASE={self.base_image()}",
                str(folder),
                timeout=900,
                env={**os.environ, "DOCKER_BUILDKIT": "0"},
            )
        return dict(STAND_INS)
