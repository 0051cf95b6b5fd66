"""The CUDA path's pieces that run on any device (small random model, on the CPU here):
the compiled network against eager, the batch size from a memory figure, the out-of-memory
retry (a real torch.OutOfMemoryError from the runner's fault hook), checkpoint reads."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pngs import noise_image
from superscale.engine import Upscaler
from superscale.engine.compiled import CompiledNetwork, ready_thread_for_graphs
from superscale.engine.devices import MAX_MEMORY_BATCH, batch_size_for_memory
from superscale.engine.upscaler import TileTooLarge
from superscale.model import CheckpointReader, resolve_checkpoint

GiB, MiB = 2**30, 2**20


def _eager(model_dir: Path, batch_size: int = 4) -> Upscaler:
    return Upscaler.from_checkpoint(
        "v2",
        model_dir=model_dir,
        device="cpu",
        dtype="fp32",
        batch_size=batch_size,
        prepack=False,
        winograd=False,
        compile=False,
    )


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


# Batch size from free memory -------------------------------------------------------------------


def test_batch_size_from_memory() -> None:
    # 10 GiB free, 100 MiB a tile: 3/4 of it usable → 76 tiles, capped.
    assert batch_size_for_memory(10 * GiB, 100 * MiB) == MAX_MEMORY_BATCH
    assert batch_size_for_memory(10 * GiB, 100 * MiB, cap=1000) == 76
    assert batch_size_for_memory(1 * GiB, 100 * MiB) == 7
    assert batch_size_for_memory(1 * GiB, 100 * MiB, reserve=0.5) == 5
    # Less than a tile's worth: still one (it fails as out of memory, then clearly).
    assert batch_size_for_memory(10 * MiB, 100 * MiB) == 1
    # An H200's memory, at an assumed 60 MiB a tile: the cap.
    assert batch_size_for_memory(139 * GiB, 60 * MiB) == MAX_MEMORY_BATCH
    with pytest.raises(ValueError):
        batch_size_for_memory(GiB, 0)


def test_batch_size_is_by_device_where_not_cuda(small_model_dir: Path) -> None:
    assert _eager(small_model_dir, batch_size=3).batch_size == 3
    cpu = Upscaler.from_checkpoint("v2", model_dir=small_model_dir, device="cpu")
    assert cpu.batch_size == 1 and not cpu.compile and not cpu.cuda_graphs
    with pytest.raises(ValueError, match="at least 1"):
        _eager(small_model_dir, batch_size=0)


# The compiled path -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled(small_model_dir: Path) -> Upscaler:
    upscaler = Upscaler.from_checkpoint(
        "v2",
        model_dir=small_model_dir,
        device="cpu",
        dtype="fp32",
        batch_size=4,
        prepack=False,
        winograd=False,
        compile=True,
        cuda_graphs=False,
    )
    return upscaler


def test_compiled_network_equals_eager(compiled: Upscaler) -> None:
    """Full and partial (padded) batches through the compiled network give the eager
    network's outputs, to float rounding."""
    net = compiled.folded(5)
    forward = compiled._network(5)
    assert isinstance(forward, CompiledNetwork) and forward.batch == 4
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        for n in (4, 3, 1):
            want, got = net(x[:n]), forward(x[:n])
            assert got.shape == want.shape
            error = (got - want).norm() / want.norm()
            assert error < 1e-5, (n, error)
    assert forward.failed is None, forward.failed
    assert forward.compile_seconds is not None and forward.compile_seconds > 0
    with torch.inference_mode():  # more than it was compiled for (a shrink raced it): eagerly
        x5 = torch.rand(5, 3, 64, 64)
        assert torch.equal(forward(x5), net(x5))
    # Cached per (seed, batch): the same object for the same key, another for another seed.
    assert compiled._network(5) is forward
    assert compiled._network(6) is not forward


def test_compiled_upscale_equals_eager(compiled: Upscaler, small_model_dir: Path) -> None:
    """Whole images (5 and 9 tiles: the last batch padded) come out as the eager path's,
    within one 8-bit level on a few pixels."""
    eager = _eager(small_model_dir)
    for image in (noise_image(64, 320, seed=1), noise_image(150, 150, seed=2)):
        a = _pixels(compiled.upscale(image, seed=5))
        b = _pixels(eager.upscale(image, seed=5))
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 1 and (a != b).mean() < 1e-3


def test_compile_and_prepack_exclude_each_other(small_model_dir: Path) -> None:
    # Compiling asked for on a CPU turns the default prepacking off.
    asked = Upscaler.from_checkpoint("v2", model_dir=small_model_dir, device="cpu", compile=True)
    assert asked.compile and not asked.prepack and not asked.cuda_graphs
    with pytest.raises(ValueError, match="exclude each other"):
        Upscaler.from_checkpoint(
            "v2", model_dir=small_model_dir, device="cpu", prepack=True, compile=True
        )


def test_a_network_that_will_not_compile_runs_eagerly(caplog: pytest.LogCaptureFixture) -> None:
    """fullgraph compiling refuses a graph break; the network then runs eagerly, logged."""

    class Breaks(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            torch._dynamo.graph_break()
            return x * 2

    wrapped = CompiledNetwork(Breaks(), 2, False, "a test network")
    x = torch.ones(1, 3, 4, 4)
    with caplog.at_level(logging.WARNING, logger="superscale.engine.compiled"):
        assert torch.equal(wrapped(x), x * 2)
        assert torch.equal(wrapped(x), x * 2)
    assert wrapped.failed is not None
    assert "could not compile a test network" in caplog.text


def test_each_thread_gets_cuda_graph_managers_of_its_own() -> None:
    """Before torch 2.13, inductor's graph trees kept their managers in thread-local state that
    only the importing thread had, so a worker thread's first graph asserted (pytorch#123177):
    `ready_thread_for_graphs` gives a new thread its own, and later torch needs nothing."""
    from torch._inductor import cudagraph_trees as trees

    ready_thread_for_graphs()
    mine = trees.get_container(0)  # constructs no CUDA state: runs on any machine
    seen: dict[str, object] = {}

    def in_a_new_thread() -> None:
        try:
            trees.get_container(0)
            seen["before"] = "ok"
        except AssertionError:
            seen["before"] = "asserted"
        ready_thread_for_graphs()
        seen["after"] = trees.get_container(0)

    thread = threading.Thread(target=in_a_new_thread)
    thread.start()
    thread.join()
    assert seen["before"] == ("ok" if hasattr(trees, "_initialize_tls") else "asserted")
    assert isinstance(seen["after"], trees.TreeManagerContainer) and seen["after"] is not mine
    assert trees.get_container(0) is mine


# Out of memory ---------------------------------------------------------------------------------


def test_out_of_memory_retries_smaller_and_stays_smaller(
    small_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image = noise_image(150, 200, seed=3)  # 3 × 4 = 12 tiles
    want = _pixels(_eager(small_model_dir, batch_size=1).upscale(image, seed=2))
    upscaler = _eager(small_model_dir, batch_size=8)
    seen: list[int] = []

    def hook(n: int) -> None:
        seen.append(n)
        if n > 2:
            raise torch.OutOfMemoryError(f"test hook: {n} tiles")

    upscaler.fault_hook = hook
    progress: list[tuple[int, int]] = []
    with caplog.at_level(logging.WARNING, logger="superscale.engine.upscaler"):
        got = _pixels(
            upscaler.upscale(image, seed=2, progress=lambda d, t: progress.append((d, t)))
        )
    # 8 failed → 4s, the first 4 failed → 2s; the rest of the image in 2s.
    assert seen[:3] == [8, 4, 2] and set(seen[3:]) == {2}
    assert sum(n for n in seen if n <= 2) == 12
    assert upscaler.batch_size == 2
    assert "ran out of memory with 8 tiles: batches of 4" in caplog.text
    assert "ran out of memory with 4 tiles: batches of 2" in caplog.text
    assert progress[-1] == (12, 12)
    assert np.abs(got - want).max() <= 1 and (got != want).mean() < 1e-3
    # Later images start at the smaller size.
    seen.clear()
    upscaler.upscale(noise_image(64, 64), seed=2)
    assert seen == [1]


def test_odd_batch_splits_within_the_smaller_size(small_model_dir: Path) -> None:
    upscaler = _eager(small_model_dir, batch_size=5)
    seen: list[int] = []

    def hook(n: int) -> None:
        seen.append(n)
        if n > 2:
            raise torch.OutOfMemoryError("test hook")

    upscaler.fault_hook = hook
    out = upscaler.upscale(noise_image(64, 320), seed=1)  # 5 tiles
    assert out.size == (1280, 256)
    assert seen == [5, 2, 2, 1]


def test_one_tile_that_does_not_fit_fails_its_image_only(small_model_dir: Path) -> None:
    """Out of memory with one tile is a clear error for the images in that batch; an image
    in a later batch still comes out."""
    upscaler = _eager(small_model_dir, batch_size=1)
    calls = 0

    def hook(n: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise torch.OutOfMemoryError("test hook: the device is full")

    upscaler.fault_hook = hook
    images = [noise_image(64, 64), noise_image(64, 64, seed=1)]
    first, second = upscaler.upscale_many(images, seed=1)
    assert isinstance(first, TileTooLarge)
    assert "out of memory on cpu with a single tile" in str(first)
    assert "the device is full" in str(first)
    assert isinstance(second, Image.Image) and second.size == (256, 256)


def test_other_errors_fail_the_batch_without_retrying(small_model_dir: Path) -> None:
    upscaler = _eager(small_model_dir, batch_size=4)
    seen: list[int] = []

    def hook(n: int) -> None:
        seen.append(n)
        raise RuntimeError("a broken kernel")

    upscaler.fault_hook = hook
    (result,) = upscaler.upscale_many([noise_image(64, 128)], seed=1)
    assert isinstance(result, RuntimeError) and str(result) == "a broken kernel"
    assert seen == [2] and upscaler.batch_size == 4


# Checkpoint reads ------------------------------------------------------------------------------


def test_reader_reads_one_tensor_to_the_device_asked(small_model_dir: Path) -> None:
    reader = CheckpointReader(resolve_checkpoint("v2", small_model_dir))
    key = "init_conv.weight"
    tensor = reader.get(key, device=torch.device("cpu"))
    assert tensor.device.type == "cpu" and tuple(tensor.shape) == reader.shapes[key]


# Rounding to 8 bits on the device ------------------------------------------------------------


def test_tiles_rounded_on_the_device_give_the_same_bytes(small_model_dir: Path) -> None:
    """An image whose tiles do not overlap comes back from the runner in 8 bits when its batch
    holds no blended image, in float (rounded on the CPU) when it shares a batch with one:
    the same bytes either way."""
    upscaler = _eager(small_model_dir, batch_size=8)
    plain, blended = noise_image(100, 150, seed=4), noise_image(90, 70, seed=5)
    alone = upscaler.upscale(plain, seed=9)  # uint8 from the runner
    mixed = upscaler.upscale_many([plain, blended], [False, True], seed=9)
    assert isinstance(mixed[0], Image.Image) and isinstance(mixed[1], Image.Image)
    assert mixed[0].tobytes() == alone.tobytes()
    assert mixed[1].tobytes() == upscaler.upscale(blended, overlapping_tiles=True, seed=9).tobytes()


def test_rounded_tiles_refused_where_tiles_overlap() -> None:
    from superscale.engine.tiling import BandAssembler, TilePlan

    plan = TilePlan(64, 64, 64, 4, True)
    assembler = BandAssembler(plan, np.zeros((256, 256, 3), np.uint8))
    tile = next(iter(plan.tiles()))
    with pytest.raises(ValueError, match="blended in float"):
        assembler.add_rounded(tile, torch.zeros(256, 256, 3, dtype=torch.uint8))


def test_warm_up_folds_and_compiles_ahead(compiled: Upscaler) -> None:
    compiled.warm_up(11)
    forward = compiled._compiled[(11, compiled.batch_size)]
    assert forward.compile_seconds is not None and forward.failed is None
    assert 11 in compiled._folded
