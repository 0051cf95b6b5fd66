"""oneDNN prepacking of the folded network: same outputs as plain convolutions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from superscale.engine import Upscaler, prepack
from superscale.model import load_model
from superscale.model.network import FoldedConv

pytestmark = pytest.mark.skipif(not prepack.available(), reason="PyTorch built without oneDNN")


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_prepacked_equals_plain(
    small_model_dir: Path, dtype: torch.dtype, tolerance: float
) -> None:
    model = load_model(small_model_dir / "v1")
    z = torch.randn(1, 128, generator=torch.Generator().manual_seed(0))
    plain = model.fold(z, dtype)
    packed = prepack.prepack(model.fold(z, dtype), torch.zeros(2, 3, 64, 64))
    if prepack.supports(dtype):
        assert not any(isinstance(m, (FoldedConv, torch.nn.Conv2d)) for m in packed.modules())
        assert sum(isinstance(m, prepack.PackedConv) for m in packed.modules()) > 100
    else:  # e.g. bf16 on an AVX2-only CPU: left plain, still correct
        assert not any(isinstance(m, prepack.PackedConv) for m in packed.modules())
    with torch.inference_mode():
        for batch in (1, 2, 3):  # packed for batches of 2; other sizes must work too
            x = torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
            diff = (packed(x) - plain(x)).abs().max().item()
            assert diff <= tolerance


def test_upscaler_prepacks_on_cpu_and_can_be_told_not_to(small_model_dir: Path) -> None:
    up = Upscaler.from_checkpoint("v2", model_dir=small_model_dir, device="cpu", dtype="fp32")
    assert up.prepack
    assert any(isinstance(m, prepack.PackedConv) for m in up.folded(0).modules())
    off = Upscaler.from_checkpoint(
        "v2", model_dir=small_model_dir, device="cpu", dtype="fp32", prepack=False
    )
    assert not any(isinstance(m, prepack.PackedConv) for m in off.folded(0).modules())
