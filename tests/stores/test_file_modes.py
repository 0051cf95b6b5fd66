"""What the embedded stores write is private: directories 0700, files 0600 — the SQLite
database holds users' images (as data: URIs) and the capability URLs of their outputs; it was
created 0644 (issue 15.16)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from superscale.api.signing import load_secret
from superscale.cli.options import open_stores
from superscale.files.base import new_key
from superscale.jobs import NewJob
from superscale.settings import Settings


def test_data_directory_files_are_private(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # the usual default, which gave 0644 files
    try:
        settings = Settings(data_dir=tmp_path / "data")
        _signer, jobs, files = open_stores(settings)
        try:
            jobs.submit(NewJob("fal-ai/aura-sr", "k", {"image_url": "data:,x"}, "v1"))
            files.put(new_key("out.png"), b"png", "image/png")
            key = new_key("big.bin")
            upload = files.start_multipart(key, "application/octet-stream", None)
            files.put_part(key, upload, 1, b"part")
            load_secret(settings)
        finally:
            jobs.close()
            files.close()
    finally:
        os.umask(old_umask)
    seen = {"superscale.db": False, "secret.key": False}
    for root, dirs, names in os.walk(settings.data_dir):
        for name in dirs:
            mode = stat.S_IMODE(os.stat(Path(root) / name).st_mode)
            assert mode & 0o077 == 0, (Path(root) / name, oct(mode))
        for name in names:
            mode = stat.S_IMODE(os.stat(Path(root) / name).st_mode)
            assert mode & 0o077 == 0, (Path(root) / name, oct(mode))
            seen[name] = True
    assert all(seen.values()), seen
    assert stat.S_IMODE(os.stat(settings.data_dir).st_mode) == 0o700
