"""`EngineOptions`: how an `Upscaler` runs — device, precision, batch, CPU kernels, caches. The
service builds them from `Settings` (`Settings.engine_options()`), the one reader of the
`SUPERSCALE_*` environment; library users pass them, or `Upscaler`'s keywords, directly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EngineOptions:
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    dtype: str = "auto"  # auto, fp32, bf16, fp16 (and torch's long names)
    batch_size: int | None = None  # tiles per forward; None: by device
    prepack: bool | None = None  # oneDNN-prepacked weights; None: on CPUs that have oneDNN
    winograd: bool | None = None  # Winograd 3x3 convs; None: with prepacking in fp32
    channels_last: bool | None = None  # NHWC activations; None: by device and dtype
    compile: bool | None = None  # torch.compile the folded network; None: on CUDA
    cuda_graphs: bool | None = None  # replay batches as CUDA graphs; None: with compile on CUDA
    fold_cache_size: int = 2  # folded networks (one per seed) kept in memory
    kernel_cache_dir: Path | None = None  # compiled CPU kernels; None: ~/.cache/superscale
