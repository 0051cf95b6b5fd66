"""The engine on a CUDA device (small random model): loading and folding on the GPU, bf16 by
default, the batch size from free memory, the compiled path with CUDA graphs, the pinned
asynchronous runner, a real out-of-memory error retried smaller, `worker --device cuda:0`.

Skipped where no CUDA device is present (CI has none). On a GPU machine, self-contained:

    python3 -m pytest -q -p no:cacheprovider --confcutdir=tests/gpu tests/gpu
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pngs import noise_image
from superscale.engine import Upscaler
from superscale.engine.compiled import CompiledNetwork
from superscale.engine.devices import measure_tile_bytes
from superscale.engine.runner import DeviceRunner
from superscale.engine.tiling import to_bytes
from superscale.model import SMALL_CONFIG, CheckpointReader, resolve_checkpoint
from superscale.model.checkpoints import save_random_checkpoint
from superscale.settings import Settings

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device here: this suite runs on a GPU machine (see benchmarks/gpu.py)",
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gpu-models")
    save_random_checkpoint(root / "v2", SMALL_CONFIG, seed=3)
    return root


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_loads_and_folds_on_the_gpu_in_bf16(model_dir: Path) -> None:
    up = Upscaler.from_checkpoint("v2", model_dir=model_dir, device="cuda")
    if torch.cuda.get_device_capability()[0] >= 8:
        assert up.dtype == torch.bfloat16
    assert up.compile and up.cuda_graphs and up.channels_last
    assert torch.backends.cudnn.benchmark  # fixed shapes: cuDNN's fastest algorithms
    net = up.folded(1)
    assert all(p.is_cuda for p in net.parameters())
    # Chosen from free memory once folded: between 1 and the cap.
    assert 1 <= up.batch_size <= 64
    reader = CheckpointReader(resolve_checkpoint("v2", model_dir))
    on_gpu = reader.get("init_conv.weight", device="cuda")
    assert on_gpu.is_cuda and torch.equal(on_gpu.cpu(), reader.get("init_conv.weight"))


def test_tile_bytes_grow_with_the_tile(model_dir: Path) -> None:
    up = Upscaler.from_checkpoint("v2", model_dir=model_dir, device="cuda", compile=False)
    net = up.folded(1)
    c, t = SMALL_CONFIG.channels, SMALL_CONFIG.input_image_size
    tile = measure_tile_bytes(net, (c, t, t), up.device, True)
    # At least the output tile in fp32 (3 × 256² × 4 bytes), and far below a GiB.
    assert 3 * 256 * 256 * 4 <= tile < 2**30


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp32"])
def test_gpu_matches_cpu(model_dir: Path, dtype: str) -> None:
    image = noise_image(100, 150)
    cpu = Upscaler.from_checkpoint("v2", model_dir=model_dir, device="cpu", dtype="fp32")
    # Eager: the compiled path has its own test (each compile takes a while).
    gpu = Upscaler.from_checkpoint(
        "v2", model_dir=model_dir, device="cuda", dtype=dtype, compile=False
    )
    want, got = _pixels(cpu.upscale(image, seed=4)), _pixels(gpu.upscale(image, seed=4))
    assert got.shape == want.shape
    levels = {"fp32": 1, "bf16": 4, "fp16": 2}[dtype]
    assert np.abs(got - want).max() <= levels * 2
    assert np.abs(got - want).mean() <= levels / 4


def test_compiled_with_cuda_graphs_equals_eager(model_dir: Path) -> None:
    up = Upscaler.from_checkpoint(
        "v2", model_dir=model_dir, device="cuda", batch_size=8, compile=True, cuda_graphs=True
    )
    net, forward = up.folded(2), up._network(2)
    assert isinstance(forward, CompiledNetwork)
    x = torch.rand(8, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for n in (8, 5, 8, 1):  # replays, padded ones among them
            want, got = net(x[:n]).float(), forward(x[:n]).float()
            assert (got - want).norm() / want.norm() < 1e-2
    assert forward.failed is None, forward.failed


def test_graphs_from_worker_threads_match_eager(model_dir: Path) -> None:
    """Two worker threads, each with its own seed's compiled network: first called outside the
    thread that imported torch's graph trees, then replayed side by side. Every output equals
    eager's (one lock over capture and replay, graph managers per thread)."""
    up = Upscaler.from_checkpoint(
        "v2", model_dir=model_dir, device="cuda", batch_size=8, compile=True, cuda_graphs=True
    )
    x = torch.rand(8, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
    seeds = (11, 12)
    with torch.inference_mode():
        want = {seed: up.folded(seed)(x).float() for seed in seeds}
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            with torch.inference_mode():
                forward = up._network(seed)
                for n in (8, 3, 8, 8, 5, 8):
                    got = forward(x[:n]).float()
                    assert (got - want[seed][:n]).norm() / want[seed][:n].norm() < 1e-2
                assert isinstance(forward, CompiledNetwork) and forward.failed is None
        except BaseException as exc:  # surfaced below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in seeds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


@pytest.mark.parametrize("as_bytes", [False, True])
def test_runner_keeps_batches_in_flight_and_in_order(model_dir: Path, as_bytes: bool) -> None:
    up = Upscaler.from_checkpoint("v2", model_dir=model_dir, device="cuda", compile=False)
    net = up.folded(3)
    runner: DeviceRunner[int] = DeviceRunner(up.device, True, depth=2)
    inputs = [torch.rand(4, 3, 64, 64) for _ in range(6)]
    finished: list[tuple[int, torch.Tensor]] = []
    with torch.inference_mode():
        for i, x in enumerate(inputs):
            host = runner.host_buffer(tuple(x.shape))
            assert host.is_pinned()
            host.copy_(x)
            got = runner.run(i, host, net, as_bytes)
            assert len(runner._in_flight) <= 2
            finished += got
        finished += runner.finish()
        assert [k for k, _ in finished] == list(range(6))
        for (_, out), x in zip(finished, inputs, strict=True):
            want = torch.clamp(net(x.cuda().contiguous(memory_format=torch.channels_last)), 0, 1)
            want = want.float().cpu()
            if as_bytes:  # rounded on the device: the CPU's rounding of the same floats
                assert out.dtype == torch.uint8 and out.shape == (4, 256, 256, 3)
                want = to_bytes(want)
            assert torch.equal(out, want)


def test_a_real_out_of_memory_error_is_retried_smaller(model_dir: Path) -> None:
    """The allocator capped just above a few tiles' worth: a batch of 32 runs out of memory
    for real, and the image still comes out, in smaller batches."""
    up = Upscaler.from_checkpoint(
        "v2", model_dir=model_dir, device="cuda", batch_size=32, compile=False
    )
    net = up.folded(5)
    c, t = SMALL_CONFIG.channels, SMALL_CONFIG.input_image_size
    tile = measure_tile_bytes(net, (c, t, t), up.device, True)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    allowed = torch.cuda.memory_reserved() + 6 * tile
    torch.cuda.set_per_process_memory_fraction(allowed / total)
    try:
        out = up.upscale(noise_image(64 * 6, 64 * 6), seed=5)  # 36 tiles
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert out.size == (64 * 24, 64 * 24)
    assert up.batch_size < 32


def test_worker_settings_take_a_device_index(model_dir: Path) -> None:
    settings = Settings(device="cuda:0", model_dir=model_dir, checkpoints=["v2"])
    from superscale.worker.engines import get_upscaler, pipelined

    up = get_upscaler(settings, "v2")
    assert up.device == torch.device("cuda:0")
    assert pipelined(settings)
