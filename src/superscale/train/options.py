"""What a training run is asked to do: every setting of `superscale train`, kept in its state
so that a resumed run goes on as it began."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .degrade import Degradation


class TrainingError(ValueError):
    """A run cannot start or go on; the message says why."""


@dataclass
class TrainOptions:
    data: list[str]
    out: str
    init: str | None = "v2"  # v1, v2, a checkpoint folder; None: `config` from scratch
    config: str | None = None  # a config.json: from scratch, or checked against `init`
    model_dir: str | None = None
    steps: int = 10_000
    batch: int = 4  # the global batch: over accumulation steps and processes
    accumulate: int = 1
    lr: float = 1e-4
    warmup: int = 0  # steps of linear learning-rate warm-up
    d_lr: float = 1e-4
    l1: float = 1.0
    perceptual: float | None = None  # None: 1.0 where VGG19's weights are found, else 0
    perceptual_weights: str | None = None
    gan: float = 0.0
    d_channels: int = 64
    ema_decay: float = 0.999
    publish_ema: bool = True
    degradation: Degradation = field(default_factory=Degradation)
    flips: bool = True
    val_fraction: float = 0.1
    val_images: int = 8
    val_every: int = 500
    save_every: int = 1000
    log_every: int = 10
    workers: int = 2
    seed: int = 0
    device: str = "auto"
    bf16: bool | None = None  # None: on GPUs that have it
    checkpointing: bool = False
    deterministic: bool = False
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainOptions:
        values = dict(values)
        degradation = values.pop("degradation", {})
        fields = {f.name for f in dataclasses.fields(Degradation)}
        kept: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in degradation.items()
        }
        values["degradation"] = Degradation(**{k: v for k, v in kept.items() if k in fields})
        return cls(**values)
