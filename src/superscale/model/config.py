"""AuraSR's configuration: the released `config.json` plus the architecture defaults it leaves out.

Field names are those of the official `config.json`, so a checkpoint's config loads as is.
Keys that change nothing in the network (the reference accepts them but never reads them
for this model) are accepted and ignored; anything else is an error, so a typo cannot
silently build a different network.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

# Accepted in config.json, without effect on the network we build.
_IGNORED_KEYS = frozenset({"flash_attn", "resize_mode", "resnet_block_groups", "out_dim"})

# Resnet blocks per encoder/decoder stage: fixed by the architecture, not in config.json.
BLOCKS_PER_STAGE = 6


class ConfigError(ValueError):
    """A config.json that does not describe a network we can build."""


@dataclass(frozen=True)
class StyleNetworkConfig:
    """The mapping network z → w: `depth` equalised linear layers."""

    dim_in: int = 128
    dim_out: int = 512
    depth: int = 8
    lr_mul: float = 0.1
    dim_text_latent: int = 0


@dataclass(frozen=True)
class AuraSRConfig:
    """Everything that fixes the network's shapes. Defaults are the architecture's."""

    dim: int = 64
    image_size: int = 256
    input_image_size: int = 64
    style_network: StyleNetworkConfig = field(default_factory=StyleNetworkConfig)
    init_dim: int | None = None
    channels: int = 3
    up_dim_mults: tuple[int, ...] = (1, 2, 4, 8, 16)
    down_dim_mults: tuple[int, ...] = (4, 8, 16)
    full_attn: tuple[bool, ...] = (False, False, False, True, True)
    attn_depths: tuple[int, ...] = (2, 2, 2, 2, 4)
    mid_attn_depth: int = 4
    self_attn_heads: int = 8
    self_attn_dim_head: int = 64
    num_conv_kernels: int = 4
    skip_connect_scale: float | None = None
    unconditional: bool = True

    def __post_init__(self) -> None:
        self._validate()

    # Derived sizes -----------------------------------------------------------------------

    @property
    def scale(self) -> int:
        return self.image_size // self.input_image_size

    @property
    def skip_scale(self) -> float:
        return self.skip_connect_scale if self.skip_connect_scale is not None else 2**-0.5

    @property
    def up_dims(self) -> list[int]:
        return [self.init_dim or self.dim, *(self.dim * m for m in self.up_dim_mults)]

    @property
    def down_dims(self) -> list[int]:
        first = self.up_dims[len(self.up_dim_mults) - len(self.down_dim_mults)]
        return [first, *(self.dim * m for m in self.down_dim_mults)]

    # (de)serialisation -------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuraSRConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known - _IGNORED_KEYS
        if unknown:
            raise ConfigError(f"unknown config keys: {sorted(unknown)}")
        kwargs = {k: v for k, v in data.items() if k in known}
        style = kwargs.get("style_network")
        if isinstance(style, dict):
            style_known = {f.name for f in fields(StyleNetworkConfig)}
            bad = set(style) - style_known
            if bad:
                raise ConfigError(f"unknown style_network keys: {sorted(bad)}")
            kwargs["style_network"] = StyleNetworkConfig(**style)
        elif style is not None:
            raise ConfigError("style_network must be an object")
        for name in ("up_dim_mults", "down_dim_mults", "full_attn", "attn_depths"):
            if name in kwargs:
                kwargs[name] = tuple(kwargs[name])
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(str(exc)) from exc

    @classmethod
    def from_file(cls, path: str | Path) -> AuraSRConfig:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        return data

    # validation --------------------------------------------------------------------------

    def _validate(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        ups, downs = len(self.up_dim_mults), len(self.down_dim_mults)
        check(ups > downs > 0, "need more decoder stages than encoder stages")
        check(
            len(self.full_attn) == ups and len(self.attn_depths) == ups,
            "full_attn and attn_depths need one entry per up_dim_mults entry",
        )
        for size in (self.image_size, self.input_image_size):
            check(size > 0 and math.log2(size).is_integer(), "image sizes must be powers of 2")
        check(
            self.input_image_size << (ups - downs) == self.image_size,
            f"{downs} encoder and {ups} decoder stages map {self.input_image_size} px to "
            f"{self.input_image_size << (ups - downs)} px, not image_size={self.image_size}",
        )
        check(self.down_dims[-1] == self.up_dims[-1], "encoder and decoder must meet in width")
        check(self.num_conv_kernels > 1, "num_conv_kernels must be at least 2 (adaptive convs)")
        check(self.unconditional, "only the unconditional (no text) model is supported")
        check(self.style_network.dim_text_latent == 0, "text latents are not supported")
        check(self.style_network.depth >= 1, "style_network.depth must be at least 1")


# The config of the released checkpoints (v1 and v2 share it).
RELEASED_CONFIG = AuraSRConfig.from_dict(
    {
        "style_network": {"dim_in": 128, "dim_out": 512, "depth": 4},
        "dim": 64,
        "image_size": 256,
        "input_image_size": 64,
        "unconditional": True,
        "skip_connect_scale": 0.4,
    }
)

# A small network of the same architecture: a 64² tile runs in well under a second on a CPU.
# z stays 128-d, as the reference's tiled upscalers draw 128-d noise.
SMALL_CONFIG = AuraSRConfig.from_dict(
    {
        "style_network": {"dim_in": 128, "dim_out": 32, "depth": 2},
        "dim": 8,
        "image_size": 256,
        "input_image_size": 64,
        "unconditional": True,
        "skip_connect_scale": 0.4,
        "attn_depths": [1, 1, 1, 1, 1],
        "mid_attn_depth": 1,
        "self_attn_heads": 2,
        "self_attn_dim_head": 8,
    }
)
