"""The published checkpoints: our name for each, where it lives on the Hugging Face hub, which
revision we fetch, and the weights' licence. Torch-free, so that the API's schema, the CLI and
the model loader all take the names from here."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Checkpoint:
    name: str  # what requests, flags and settings call it
    repo: str  # Hugging Face hub repository
    # The hub revision downloads ask for. "main" follows the repository; pin a commit hash here
    # once it has been checked against the published files (no hash was verifiable offline).
    revision: str
    licence: str  # of the weights (not of this project's code)
    # SHA-256 of each file (`model.safetensors`, `config.json`) as published, checked by
    # `superscale pull` before the hub's own claim; empty until checked against the files
    # from a machine that can reach the hub (none could be, where this was written).
    sha256: Mapping[str, str] = field(default_factory=dict)


REGISTRY: dict[str, Checkpoint] = {
    c.name: c
    for c in (
        Checkpoint("v1", "fal/AuraSR", "main", "CC BY-SA 4.0"),
        Checkpoint("v2", "fal/AuraSR-v2", "main", "Apache-2.0"),
    )
}

# The names, in the order they are offered.
CHECKPOINT_NAMES: tuple[str, ...] = tuple(REGISTRY)


# Checkpoints of one's own (`superscale train`'s output, say) are served under a name:
# `name=path` in `--checkpoint` / SUPERSCALE_CHECKPOINTS, beside the published names.
CUSTOM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def parse_served(entries: list[str]) -> dict[str, str | None]:
    """Served checkpoints, `name → path` (None for a published one), from entries that are
    published names or `name=path`. ValueError says what is wrong with an entry."""
    unknown = [e.strip() for e in entries if "=" not in e and e.strip() not in REGISTRY]
    if unknown:
        raise ValueError(
            f"unknown checkpoint(s) {unknown}; choose from {list(CHECKPOINT_NAMES)}, or give "
            "NAME=PATH for a checkpoint folder of your own"
        )
    served: dict[str, str | None] = {}
    for entry in entries:
        name, sep, path = (part.strip() for part in entry.partition("="))
        if not sep:
            value = None
        elif name in REGISTRY:
            raise ValueError(f"{name!r} names a published checkpoint: call yours otherwise")
        elif not CUSTOM_NAME.fullmatch(name):
            raise ValueError(
                f"{name!r} is not a checkpoint name: letters, digits, '.', '_', '-' (64 at "
                "most), starting with a letter or digit"
            )
        elif not path:
            raise ValueError(f"{entry!r}: no path after '='")
        else:
            value = path
        if name in served and served[name] != value:
            raise ValueError(f"checkpoint {name!r} is given twice, differently")
        served[name] = value
    if not served:
        raise ValueError("no checkpoint to serve")
    return served
