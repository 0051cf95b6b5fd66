"""Choosing the device, the compute dtype and the tile batch size."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

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
    """Tiles per forward pass. On a CPU one 64² tile already fills the cores: bigger batches
    are slower (measured with prepacked weights, fp32 and bf16) and cost memory."""
    if device.type == "cuda":
        return 16
    if device.type == "mps":
        return 4
    return 1


def default_channels_last(device: torch.device, dtype: torch.dtype) -> bool:
    """channels_last helps cuDNN and oneDNN's bf16 kernels; fp32 on CPU is as fast without."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and dtype != torch.float32
