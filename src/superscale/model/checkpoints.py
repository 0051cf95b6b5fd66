"""Checkpoints: the registry, finding the files, strict loading, and random test checkpoints.

A checkpoint is a directory (or a `model.safetensors` with `config.json` beside it) in the
official layout. `resolve_checkpoint` finds one, in this order:

1. an explicit local file or directory;
2. `{model_dir}/{name}/` where model_dir is the argument or `SUPERSCALE_MODEL_DIR`;
3. the Hugging Face cache (`HF_HOME`, `HF_HUB_CACHE`);
4. a download of `model.safetensors` and `config.json` only — unless `HF_HUB_OFFLINE` is set.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from ..registry import REGISTRY, Checkpoint
from .config import AuraSRConfig, ConfigError
from .network import AuraSR

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class CheckpointError(Exception):
    """A checkpoint could not be found or does not fit the network."""


class CheckpointNotFound(CheckpointError):
    """No file where the checkpoint should be."""


class CheckpointMismatch(CheckpointError):
    """The weights' keys or shapes differ from the network the config describes."""

    def __init__(
        self,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
        source: str = "",
    ) -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if mismatched:
            shown = [
                f"{k}: checkpoint {list(got)} vs model {list(want)}" for k, got, want in mismatched
            ]
            parts.append(f"mismatched shapes ({len(mismatched)}): {_listing(shown)}")
        where = f" in {source}" if source else ""
        super().__init__(f"checkpoint does not fit the network{where}: " + "; ".join(parts))


class CheckpointUnreadable(CheckpointError, ValueError):
    """The files are there but are not a valid config.json / safetensors file."""


class HubUnreachable(CheckpointError):
    """The files are not local and the Hugging Face hub cannot (or may not) be reached."""


def _listing(items: list[str], limit: int = 8) -> str:
    more = f", … ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


@dataclass(frozen=True)
class CheckpointFiles:
    weights: Path
    config: Path


# Resolution ------------------------------------------------------------------------------------


def _files_in(directory: Path) -> CheckpointFiles:
    files = CheckpointFiles(directory / WEIGHTS_FILE, directory / CONFIG_FILE)
    missing = [p.name for p in (files.weights, files.config) if not p.is_file()]
    if missing:
        raise CheckpointNotFound(f"{directory}: missing {' and '.join(missing)}")
    return files


def _looks_like_path(name: str) -> bool:
    return name not in REGISTRY and (
        os.sep in name or "/" in name or name.endswith(".safetensors") or Path(name).exists()
    )


def manual_placement_hint(name: str, repo: str, directory: Path | None = None) -> str:
    where = str(directory) if directory else f"$SUPERSCALE_MODEL_DIR/{name}"
    return (
        f"To install it by hand, download {WEIGHTS_FILE} and {CONFIG_FILE} from "
        f"huggingface.co/{repo} on a machine that can reach it and place them in "
        f"{where}/ (or pass that directory as the checkpoint)."
    )


def resolve_checkpoint(
    name: str | Path,
    model_dir: str | Path | None = None,
    *,
    download: bool = True,
) -> CheckpointFiles:
    """Find a checkpoint's weights and config, downloading them as a last resort."""
    if isinstance(name, Path) or _looks_like_path(name):
        path = Path(name)
        if path.is_dir():
            return _files_in(path)
        if path.is_file():
            config = path.with_name(CONFIG_FILE)
            if not config.is_file():
                raise CheckpointNotFound(f"{path}: no {CONFIG_FILE} beside it")
            return CheckpointFiles(path, config)
        raise CheckpointNotFound(f"no checkpoint file or directory at {path}")

    if name not in REGISTRY:
        raise CheckpointNotFound(
            f"unknown checkpoint {name!r}: use one of {sorted(REGISTRY)} or a local path"
        )
    entry = REGISTRY[name]
    repo = entry.repo

    root = model_dir or os.environ.get("SUPERSCALE_MODEL_DIR")
    if root:
        directory = Path(root) / name
        if directory.exists():
            return _files_in(directory)

    cached = _from_hf_cache(entry)
    if cached is not None:
        return cached

    if not download or _hf_offline():
        why = "HF_HUB_OFFLINE is set" if _hf_offline() else "downloads are disabled"
        where = f"{root}/{name}" if root else "SUPERSCALE_MODEL_DIR (unset)"
        raise HubUnreachable(
            f"checkpoint {name!r} is not in {where} nor in the Hugging Face cache, and {why}. "
            + manual_placement_hint(name, repo)
        )
    return _download(entry)


def _hf_offline() -> bool:
    """HF_HUB_OFFLINE as the environment says now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    if value is None:
        return bool(constants.HF_HUB_OFFLINE)
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_cache_dir() -> str:
    """huggingface_hub reads its environment once, at import: read it again at call time."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return str(constants.HF_HUB_CACHE)


def hub_endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def _from_hf_cache(entry: Checkpoint) -> CheckpointFiles | None:
    from huggingface_hub import try_to_load_from_cache

    cache = hub_cache_dir()
    found = [
        try_to_load_from_cache(entry.repo, f, cache_dir=cache, revision=entry.revision)
        for f in (WEIGHTS_FILE, CONFIG_FILE)
    ]
    if all(isinstance(p, str) for p in found):
        return CheckpointFiles(Path(str(found[0])), Path(str(found[1])))
    return None


def _download(entry: Checkpoint) -> CheckpointFiles:
    from huggingface_hub import hf_hub_download

    paths = []
    for filename in (CONFIG_FILE, WEIGHTS_FILE):  # hf_hub_download shows a tqdm progress bar
        try:
            path = hf_hub_download(
                entry.repo,
                filename,
                revision=entry.revision,
                cache_dir=hub_cache_dir(),
                endpoint=hub_endpoint(),
            )
            paths.append(Path(path))
        except Exception as exc:  # the hub raises many kinds: connection, HTTP, offline…
            raise HubUnreachable(
                f"could not download {filename} of checkpoint {entry.name!r} from {entry.repo}: "
                f"{exc}. " + manual_placement_hint(entry.name, entry.repo)
            ) from exc
    return CheckpointFiles(weights=paths[1], config=paths[0])


# Loading ---------------------------------------------------------------------------------------


def read_config(files: CheckpointFiles) -> AuraSRConfig:
    try:
        return AuraSRConfig.from_file(files.config)
    except ConfigError as exc:
        raise CheckpointUnreadable(str(exc)) from exc


def read_shapes(files: CheckpointFiles) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape, from the safetensors header (no data is read)."""
    try:
        with safe_open(str(files.weights), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types, and OSError
        raise CheckpointUnreadable(
            f"{files.weights}: not a readable safetensors file ({exc})"
        ) from exc


def check_state_dict(
    model: torch.nn.Module, shapes: dict[str, tuple[int, ...]], source: str = ""
) -> None:
    """Raise CheckpointMismatch naming every missing, unexpected and mis-shaped key."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(want) - set(shapes))
    unexpected = sorted(set(shapes) - set(want))
    mismatched = [
        (k, shapes[k], want[k]) for k in sorted(set(want) & set(shapes)) if shapes[k] != want[k]
    ]
    if missing or unexpected or mismatched:
        raise CheckpointMismatch(missing, unexpected, mismatched, source)


class CheckpointReader:
    """Reads a checkpoint's tensors one at a time.

    The file is mapped only while one tensor is read, so the pages a caller touched leave
    the process's memory as soon as it drops the tensor (one long-lived mapping would keep
    all 2.4 GB of a released checkpoint resident once read).
    """

    def __init__(self, files: CheckpointFiles) -> None:
        self.files = files
        self.config = read_config(files)
        self.shapes = read_shapes(files)
        with torch.device("meta"):
            check_state_dict(AuraSR(self.config), self.shapes, str(files.weights))

    def get(self, key: str, device: str | torch.device = "cpu") -> Tensor:
        """One tensor, read straight to `device` (a GPU's copy passes no full CPU copy)."""
        with safe_open(str(self.files.weights), framework="pt", device=str(device)) as f:
            return f.get_tensor(key)


def check_checkpoint(files: CheckpointFiles) -> AuraSR:
    """The network the config describes, on the meta device (no memory), once the weights'
    header has shown every tensor present with its shape; CheckpointError otherwise."""
    config = read_config(files)
    with torch.device("meta"):
        model = AuraSR(config)
    check_state_dict(model, read_shapes(files), str(files.weights))
    return model


def load_model(
    files: CheckpointFiles | str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> AuraSR:
    """Build the network on the meta device and load the checkpoint into it (no init pass)."""
    if not isinstance(files, CheckpointFiles):
        files = resolve_checkpoint(files, download=False)
    model = check_checkpoint(files)
    with safe_open(str(files.weights), framework="pt", device=str(device)) as f:
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


# Random checkpoints (tests, benchmarks) -----------------------------------------------------------


def random_state_dict(config: AuraSRConfig, seed: int = 0) -> dict[str, Tensor]:
    """Random weights of the right shapes, distributed like PyTorch's default initialisation
    of this architecture (what an untrained model holds).

    Built from shapes on the meta device: no initialisation pass over the real network.
    Convs and linears: uniform(±1/√fan_in) for weights and biases; equalised linears:
    standard normal weights, zero biases; RMSNorm gains: ones. The output conv's bias is
    0.5 so that outputs sit inside [0, 1] (clamping would hide differences in tests).
    """
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in AuraSR(config).state_dict().items()}
    gen = torch.Generator().manual_seed(seed)

    def uniform(shape: torch.Size, bound: float) -> Tensor:
        return (torch.rand(shape, generator=gen) * 2 - 1) * bound

    state: dict[str, Tensor] = {}
    for key, shape in shapes.items():
        if key.endswith(".g"):  # RMSNorm gains
            t = torch.ones(shape)
        elif key.endswith("attend.scale"):
            t = torch.randn(shape, generator=gen)
        elif key.startswith("style_network."):  # equalised linears
            t = torch.randn(shape, generator=gen) if key.endswith("weight") else torch.zeros(shape)
        elif key.endswith(".proj.weights"):  # kernel banks (n, out, in, k, k); scale is
            t = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[2:]))  # demodulated
        elif key.endswith(".bias"):
            fan_in = math.prod(shapes[key[: -len("bias")] + "weight"][1:])
            t = uniform(shape, 1 / math.sqrt(fan_in))
        else:
            t = uniform(shape, 1 / math.sqrt(math.prod(shape[1:])))
        state[key] = t
    state["final_to_rgb.bias"] = torch.full_like(state["final_to_rgb.bias"], 0.5)
    return state


def save_checkpoint(directory: str | Path, config: AuraSRConfig, state: dict[str, Tensor]) -> Path:
    """Write `model.safetensors` + `config.json` (the official layout) into `directory`, each
    whole or not at all (a server may be loading the folder while training writes it again)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights, config_file = directory / (WEIGHTS_FILE + ".tmp"), directory / (CONFIG_FILE + ".tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    config_file.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    os.replace(weights, directory / WEIGHTS_FILE)
    os.replace(config_file, directory / CONFIG_FILE)
    return directory


def save_random_checkpoint(directory: str | Path, config: AuraSRConfig, seed: int = 0) -> Path:
    """A random-weight checkpoint in the official layout (tests, benchmarks)."""
    return save_checkpoint(directory, config, random_state_dict(config, seed))
