"""Device and dtype choice, the folded-weights cache, and bounded memory while assembling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from superscale.engine import Upscaler, resolve_device, resolve_dtype, tiling
from superscale.engine.devices import cpu_has_native_bf16


def test_resolve_device_and_dtype() -> None:
    cpu = torch.device("cpu")
    assert resolve_device("cpu") == cpu
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert resolve_device("auto") == cpu
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu0")
    assert resolve_dtype("fp32", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    assert resolve_dtype("fp16", cpu) == torch.float16
    expected = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert resolve_dtype("auto", cpu) == expected
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int8", cpu)


def test_native_bf16_detection_reads_cpu_flags() -> None:
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    if flags:
        assert cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_fold_cache_is_per_seed_and_bounded(small_model_dir: Path) -> None:
    up = Upscaler.from_checkpoint(
        "v1", model_dir=small_model_dir, device="cpu", dtype="fp32", fold_cache_size=2
    )
    up.warm_up()
    default = up.folded(0)
    image = Image.new("RGB", (8, 8), "gray")
    up.upscale(image)  # the default seed: no new folding
    assert up.folded(0) is default
    up.upscale(image, seed=1)
    up.upscale(image, seed=2)  # evicts the least recently used (the default)
    assert list(up._folded) == [1, 2]  # one entry per seed, the default gone
    two = up._folded[2]
    assert up.folded(2) is two  # a hit: not folded again
    assert up.folded(0) is not default  # folded anew, evicting seed 1 (now least recent)
    assert list(up._folded) == [2, 0]


def test_at_most_two_float_bands_are_held(
    small_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Peak memory does not grow with image height: output rows leave the float buffers
    (as 8-bit) as soon as every tile touching them is done."""
    held: list[int] = []
    original = tiling.BandAssembler.add

    def add(self: tiling.BandAssembler, tile: tiling.Tile, pixels: torch.Tensor) -> None:
        original(self, tile, pixels)
        held.append(len(self.bands))

    monkeypatch.setattr(tiling.BandAssembler, "add", add)
    up = Upscaler.from_checkpoint("v1", model_dir=small_model_dir, device="cpu", dtype="fp32")
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (320, 64, 3), dtype=np.uint8))  # 5 tile rows
    up.upscale(image, overlapping_tiles=True)
    assert len(held) == 5 * 1 + 6 * 2
    assert max(held) <= 2


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_reduced_precision_stays_close_to_fp32(small_model_dir: Path, dtype: str) -> None:
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    fp32 = Upscaler.from_checkpoint("v1", model_dir=small_model_dir, device="cpu", dtype="fp32")
    low = Upscaler.from_checkpoint("v1", model_dir=small_model_dir, device="cpu", dtype=dtype)
    assert low.dtype != torch.float32
    a = np.asarray(fp32.upscale(image), dtype=np.int16)
    b = np.asarray(low.upscale(image), dtype=np.int16)
    assert np.abs(a - b).max() <= 2  # 8-bit levels
