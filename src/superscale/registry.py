"""The published checkpoints: our name for each, where it lives on the Hugging Face hub, which
revision we fetch, and the weights' licence. Torch-free, so that the API's schema, the CLI and
the model loader all take the names from here."""

from __future__ import annotations

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
