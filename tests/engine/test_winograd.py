"""Winograd F(4×4, 3×3) convolutions: the compiled kernels, each layer against a float64
direct conv, the whole folded network, and the fallback where no C compiler works."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from superscale.engine import Upscaler, prepack, winograd
from superscale.model import load_model

pytestmark = pytest.mark.skipif(not prepack.available(), reason="PyTorch built without oneDNN")


@pytest.fixture
def fresh_kernels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty kernel cache: the next `kernel_library()` call builds (or fails) anew."""
    winograd.use_cache_dir(tmp_path)
    winograd.kernel_library.cache_clear()
    yield tmp_path / "kernels"
    winograd.use_cache_dir(None)


def _direct(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, act: str) -> torch.Tensor:
    y = F.conv2d(x.double(), w.double(), None if b is None else b.double(), padding=1)
    return F.silu(y) if act == "swish" else y


def test_kernels_are_built_into_the_cache_and_reused(fresh_kernels: Path) -> None:
    lib = winograd.kernel_library()
    assert lib is not None
    built = list(fresh_kernels.glob("winograd-*.so"))
    assert len(built) == 1
    mtime = built[0].stat().st_mtime_ns
    winograd.kernel_library.cache_clear()
    assert winograd.kernel_library() is not None
    assert built[0].stat().st_mtime_ns == mtime  # loaded, not rebuilt


def test_loading_the_kernels_leaves_denormals_alone(fresh_kernels: Path) -> None:
    """Linked with -ffast-math, the library would switch the whole process to flush-to-zero."""
    tiny = torch.tensor([1e-39])
    assert winograd.kernel_library() is not None
    assert (tiny * 1.0).item() > 0


@pytest.mark.parametrize(
    ("cin", "cout", "h", "w", "bias", "act"),
    [
        (3, 5, 4, 4, True, "none"),
        (16, 8, 17, 33, False, "swish"),  # not multiples of 4: zero-padded, then cropped
        (64, 64, 32, 32, False, "swish"),  # the fused path, 16-wide GEMM columns only
        (130, 70, 12, 20, True, "none"),  # past FUSED_MAX_CHANNELS: transforms around bmm
        (40, 136, 12, 8, True, "swish"),
        (8, 8, 1, 1, True, "swish"),
    ],
)
def test_layer_matches_a_float64_direct_conv(
    cin: int, cout: int, h: int, w: int, bias: bool, act: str
) -> None:
    gen = torch.Generator().manual_seed(cin * 1000 + h)
    x = torch.randn(2, cin, h, w, generator=gen)
    weight = torch.randn(cout, cin, 3, 3, generator=gen) / (cin * 9) ** 0.5
    b = torch.randn(cout, generator=gen) if bias else None
    conv = winograd.WinogradConv(weight, b, act)
    expected = _direct(x, weight, b, act)
    for inp in (x.contiguous(memory_format=torch.channels_last), x):  # NHWC and NCHW memory
        with torch.inference_mode():
            out = conv(inp)
        assert out.shape == expected.shape
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert (out.double() - expected).abs().max().item() <= 1e-4 * max(1.0, expected.abs().max())


@pytest.mark.parametrize("path", ["fused", "bmm"])
def test_chunks_and_threads_cover_every_tile(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles run in chunks split over threads: small chunks (6 tiles in C, or 3 around bmm)
    over 2 threads leave no tile out and write none twice."""
    cin, cout = 24, 40
    if path == "fused":
        monkeypatch.setattr(winograd, "FUSED_FLOATS", 1)  # the smallest chunk: 6 tiles
    else:
        monkeypatch.setattr(winograd, "FUSED_MAX_CHANNELS", 0)
        monkeypatch.setattr(winograd, "CHUNK_FLOATS", 36 * (cin + cout) * 3)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(3, cin, 20, 28, generator=gen)  # 105 tiles: chunks end mid-image
    weight = torch.randn(cout, cin, 3, 3, generator=gen) / (cin * 9) ** 0.5
    b = torch.randn(cout, generator=gen)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            out = winograd.WinogradConv(weight, b, "swish")(x)
    finally:
        torch.set_num_threads(threads)
    expected = _direct(x, weight, b, "swish")
    assert (out.double() - expected).abs().max().item() <= 1e-4 * max(1.0, expected.abs().max())


def test_folded_network_with_winograd_equals_plain(small_model_dir: Path) -> None:
    model = load_model(small_model_dir / "v1")
    z = torch.randn(1, 128, generator=torch.Generator().manual_seed(0))
    plain = model.fold(z, torch.float32)
    fast = prepack.prepack(model.fold(z, torch.float32), torch.zeros(1, 3, 64, 64), True)
    layers = [m for m in fast.modules() if isinstance(m, winograd.WinogradConv)]
    assert len(layers) > 20
    with torch.inference_mode():
        for batch in (1, 3):
            x = torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
            diff = (fast(x.contiguous(memory_format=torch.channels_last)) - plain(x)).abs()
            assert diff.max().item() <= 1e-4


def test_upscaler_uses_winograd_for_fp32_on_cpu_only(small_model_dir: Path) -> None:
    def count(up: Upscaler) -> int:
        return sum(isinstance(m, winograd.WinogradConv) for m in up.folded(0).modules())

    def make(**kwargs: object) -> Upscaler:
        return Upscaler.from_checkpoint("v2", model_dir=small_model_dir, device="cpu", **kwargs)  # type: ignore[arg-type]

    fast, direct = make(dtype="fp32"), make(dtype="fp32", winograd=False)
    assert fast.winograd and fast.channels_last and count(fast) > 20
    assert count(direct) == 0
    assert count(make(dtype="bf16")) == 0
    pixels = np.random.default_rng(3).integers(0, 256, (40, 70, 3), dtype=np.uint8)
    a = np.asarray(fast.upscale(Image.fromarray(pixels), seed=0), dtype=np.int16)
    b = np.asarray(direct.upscale(Image.fromarray(pixels), seed=0), dtype=np.int16)
    assert a.shape == (160, 280, 3)
    assert np.abs(a - b).max() <= 1  # the same image up to rounding of an 8-bit level


def test_without_a_compiler_the_engine_keeps_direct_convs(
    fresh_kernels: Path, small_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CC", str(fresh_kernels / "no-such-compiler"))
    assert not winograd.available()
    up = Upscaler.from_checkpoint("v2", model_dir=small_model_dir, device="cpu", dtype="fp32")
    net = up.folded(0)
    assert not any(isinstance(m, winograd.WinogradConv) for m in net.modules())
    assert any(isinstance(m, prepack.PackedConv) for m in net.modules())
    out = up.upscale(Image.new("RGB", (20, 12), (200, 40, 90)), seed=0)
    assert out.size == (80, 48)
