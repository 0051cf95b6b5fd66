"""Choosing the device, the compute dtype and the tile batch size."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import cast

import torch

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` → CUDA, else MPS, else CPU; an explicit device must be available."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda[:N] or mps") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA device is available")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' requested but MPS is not available")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {device!r}: use auto, cpu, cuda[:N] or mps")
    return dev


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from /proc/cpuinfo ("flags" on x86, "Features" on Arm); None
    where that file cannot be read (not Linux)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16: the CPU multiplies bf16 natively (oneDNN uses it)."""
    flags = cpu_flags()
    if flags is None:  # not Linux: ask torch (it reports AMX on any OS)
        return "AMX" in torch.backends.cpu.get_cpu_capability()
    return not flags.isdisjoint(("avx512_bf16", "amx_bf16"))


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """`auto` → bf16 where the hardware computes it natively, fp32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
            return torch.bfloat16
        if device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}: use auto, fp32, bf16 or fp16") from None


def default_batch_size(device: torch.device) -> int:
    """Tiles per forward pass where it is not chosen from free memory (`batch_size_for_memory`
    does that on CUDA). On a CPU one 64² tile already fills the cores: bigger batches are
    slower (measured with prepacked weights, fp32 and bf16) and cost memory."""
    if device.type == "cuda":
        return 16
    if device.type == "mps":
        return 4
    return 1


# The most tiles one forward pass takes whatever the free memory: a lone image's tiles wait for
# their batch to fill. Not yet measured on a GPU: benchmarks/gpu.py prints tiles/s for batches
# of 8 to 128, the figures to set it by.
MAX_MEMORY_BATCH = 64
# The share of free device memory left to others: the allocator's fragmentation, cuDNN's
# workspaces, a second checkpoint's folded weights, the pinned-memory copies.
MEMORY_RESERVE = 0.25


def batch_size_for_memory(
    free_bytes: int, tile_bytes: int, cap: int = MAX_MEMORY_BATCH, reserve: float = MEMORY_RESERVE
) -> int:
    """Tiles per forward pass that fit `free_bytes` of device memory when each tile's
    activations take `tile_bytes` (the weights already resident), keeping `reserve` of it
    free; at least 1 (a tile that does not fit fails as out of memory), at most `cap`."""
    if tile_bytes <= 0:
        raise ValueError("tile_bytes must be positive")
    usable = int(free_bytes * (1 - reserve))
    return max(1, min(cap, usable // tile_bytes))


def out_of_memory_error() -> type[BaseException]:
    """The exception a device allocation raises when memory runs out (torch.OutOfMemoryError
    since torch 2.5; torch.cuda's before)."""
    error = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return cast(type[BaseException], error)


def release_cached_memory(device: torch.device) -> None:
    """Give the caching allocator's free blocks back, so a smaller retry finds them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def default_channels_last(device: torch.device, dtype: torch.dtype) -> bool:
    """channels_last helps cuDNN and oneDNN's bf16 kernels; fp32 on CPU is as fast without."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and dtype != torch.float32


def measure_tile_bytes(
    forward: Callable[[torch.Tensor], torch.Tensor],
    tile_shape: tuple[int, int, int],
    device: torch.device,
    channels_last: bool,
) -> int:
    """Device bytes one more tile adds to a forward pass's peak (CUDA): the peaks of batches
    of 2 and 4, apart, halved — the weights and fixed workspaces cancel out. Each shape runs
    once before it is measured: cuDNN's benchmark mode tries its algorithms (and their
    workspaces) on a shape's first pass, which is not the peak that later passes reach."""
    peaks = []
    for n in (2, 4):
        x = torch.zeros((n, *tile_shape), device=device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            forward(x)
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode():
            forward(x)
        torch.cuda.synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device) - base)
        del x
    return max(1, (peaks[1] - peaks[0]) // 2)
