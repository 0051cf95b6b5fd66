"""Weights ahead of time: download a published checkpoint's files and check them before anything
runs on them, so that an image or a volume can hold them and a server needs no network.

Each file is checked against what the hub publishes for it at the registry's revision — its
size, and for the weights (stored in Git LFS) its SHA-256 — and the pair is then read as a
checkpoint (config parsed, every tensor present with its shape). A file that fails is deleted,
never left where a server would load it.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from superscale.model.checkpoints import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    CheckpointFiles,
    HubUnreachable,
    check_checkpoint,
    hub_cache_dir,
    hub_endpoint,
    manual_placement_hint,
)
from superscale.registry import REGISTRY, Checkpoint

_SHA256 = re.compile(r"[0-9a-f]{64}")


class _SilentBar(tqdm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "disable": True})


class CheckpointCorrupt(CheckpointError):
    """A downloaded file is not what the hub publishes (size or SHA-256), or not a checkpoint."""


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def pull(
    name: str,
    model_dir: Path | None = None,
    progress: Callable[[str], None] = print,
    bar: bool | None = None,
) -> CheckpointFiles:
    """Download checkpoint `name` (into `model_dir/name/`, else the Hugging Face cache), check
    it, and return its files. HubUnreachable (saying how to place the files by hand) when the
    hub cannot be reached; CheckpointCorrupt when a file is not what the hub publishes.
    `bar`: a byte progress bar per file on stderr (None: huggingface_hub's choice, on a
    terminal only)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    options: dict[str, Any] = {}
    if bar is not None and "tqdm_class" in inspect.signature(hf_hub_download).parameters:
        options["tqdm_class"] = tqdm if bar else _SilentBar

    if name not in REGISTRY:
        raise CheckpointError(f"unknown checkpoint {name!r}: use one of {sorted(REGISTRY)}")
    entry = REGISTRY[name]
    target = None if model_dir is None else model_dir / name
    paths: dict[str, Path] = {}
    for filename in (CONFIG_FILE, WEIGHTS_FILE):
        url = hf_hub_url(entry.repo, filename, revision=entry.revision, endpoint=hub_endpoint())
        try:
            meta = get_hf_file_metadata(url)
            # huggingface_hub draws the progress bar of the transfer.
            path = Path(
                hf_hub_download(
                    entry.repo,
                    filename,
                    revision=entry.revision,
                    cache_dir=None if target else hub_cache_dir(),
                    local_dir=target,
                    endpoint=hub_endpoint(),
                    **options,
                )
            )
        except Exception as exc:  # connection, HTTP, offline: the hub raises many kinds
            raise HubUnreachable(
                f"could not download {filename} of checkpoint {name!r} from {entry.repo}: "
                f"{str(exc).rstrip('.')}. " + manual_placement_hint(name, entry.repo, target)
            ) from exc
        _check_file(entry, filename, path, meta.size, meta.etag)
        progress(f"{name}: {filename} checked ({path.stat().st_size} bytes)")
        paths[filename] = path
    files = CheckpointFiles(weights=paths[WEIGHTS_FILE], config=paths[CONFIG_FILE])
    try:
        check_checkpoint(files)
    except CheckpointError as exc:
        for path in paths.values():
            path.unlink(missing_ok=True)
        raise CheckpointCorrupt(f"checkpoint {name!r} downloaded but unusable: {exc}") from exc
    progress(f"{name}: ready at {files.weights.parent}")
    return files


def _check_file(
    entry: Checkpoint, filename: str, path: Path, size: int | None, etag: str | None
) -> None:
    """The file's size and its hash — the registry's pin when it has one, else the one the hub
    publishes (an LFS file's ETag is its SHA-256); a mismatch deletes it."""
    problems = []
    actual = path.stat().st_size
    if size is not None and actual != size:
        problems.append(f"{actual} bytes where the hub publishes {size}")
    published = (etag or "").strip('"').removeprefix("W/").strip('"').lower()
    pinned = entry.sha256.get(filename)
    expected, source = (pinned, "the registry pins") if pinned else (published, "the hub publishes")
    if _SHA256.fullmatch(expected):
        digest = sha256_of(path)
        if digest != expected:
            problems.append(f"SHA-256 {digest[:12]}… where {source} {expected[:12]}…")
    if problems:
        path.unlink(missing_ok=True)
        raise CheckpointCorrupt(
            f"{filename} of checkpoint {entry.name!r} ({entry.repo}@{entry.revision}) is "
            f"corrupt: {'; '.join(problems)}. It was deleted: pull again."
        )
