"""`Upscaler`: a PIL image in, its 4× upscale out."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..model import (
    AuraSR,
    CheckpointFiles,
    CheckpointReader,
    fold_network,
    load_model,
    resolve_checkpoint,
)
from ..scaling import MODEL_SCALE, Scale, Target, check_scale, model_passes, resize_to, resolve
from ..schemas import DEFAULT_SEED
from . import prepack as prepacking
from . import winograd
from .compiled import CompiledNetwork
from .cpus import fit_threads
from .devices import (
    batch_size_for_memory,
    default_batch_size,
    default_channels_last,
    measure_tile_bytes,
    out_of_memory_error,
    release_cached_memory,
    resolve_device,
    resolve_dtype,
)
from .noise import SharedNoise, shared_z
from .options import EngineOptions
from .runner import DeviceRunner, FaultHook, Forward
from .task import CancelFn, ImageTask, ProgressFn
from .tiling import Tile, check_margin

log = logging.getLogger(__name__)

NoiseMode = Literal["shared", "per_tile"]
MAX_SEED = 2**64 - 1
Batch = list[tuple[ImageTask, Tile]]


class Upscaler:
    """Runs AuraSR over whole images: tiling, blending, style folding, precision and device."""

    def __init__(
        self,
        source: AuraSR | CheckpointFiles,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        batch_size: int | None = None,
        fold_cache_size: int = 2,
        channels_last: bool | None = None,
        prepack: bool | None = None,
        winograd: bool | None = None,
        compile: bool | None = None,
        cuda_graphs: bool | None = None,
    ) -> None:
        """`source`: a loaded network, or checkpoint files (their shapes are checked now;
        tensors are read when weights are folded, one at a time, straight to the device, and
        not kept). `batch_size` (default: on CUDA from the free memory once the first
        network is folded, see `devices.batch_size_for_memory`; else by device) tiles per
        forward; a CUDA out-of-memory error halves it and runs the batch again.
        `prepack` (default: on CPUs with oneDNN): see `superscale.engine.prepack`.
        `winograd` (default: with prepacking in fp32): see `superscale.engine.winograd`.
        `compile` (default: on CUDA): folded networks run through `torch.compile` for the
        batch shape (`superscale.engine.compiled`); `cuda_graphs` (default: with compile on
        CUDA) replays each batch as a CUDA graph.
        `fold_cache_size` folded networks stay cached (each ~0.8 GB fp32, ~0.4 GB bf16 at the
        released config), the least recently used dropped first."""
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if self.device.type == "cpu":
            fit_threads()  # the CPUs this process may use, not the host's
        self._model: AuraSR | None = None
        self._reader: CheckpointReader | None = None
        if isinstance(source, AuraSR):
            if source.folded:
                raise ValueError("Upscaler needs the adaptive network, not a folded one")
            self._model = source.to(self.device).eval().requires_grad_(False)
            self.config = source.config
        else:
            self._reader = CheckpointReader(source)
            self.config = self._reader.config
        if batch_size is not None and batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size or default_batch_size(self.device)
        # Chosen from free memory once a folded network can be measured (`_fit_batch`).
        self._batch_from_memory = batch_size is None and self.device.type == "cuda"
        self.fold_cache_size = max(1, fold_cache_size)
        on_cuda = self.device.type == "cuda"
        self.compile = on_cuda if compile is None else compile
        self.cuda_graphs = self.compile and on_cuda if cuda_graphs is None else cuda_graphs
        # Compiling asked for on a CPU: inductor's kernels instead of prepacked oneDNN ones.
        self.prepack = (
            self.device.type == "cpu" and prepacking.available() and not self.compile
            if prepack is None
            else prepack
        )
        self.winograd = (
            self.prepack and self.dtype == torch.float32 if winograd is None else winograd
        )
        # Winograd layers take NHWC (channels_last) memory; oneDNN's take either.
        self.channels_last = (
            default_channels_last(self.device, self.dtype) or self.winograd
            if channels_last is None
            else channels_last
        )
        if self.compile and self.prepack:
            raise ValueError("compile and prepack exclude each other: turn one off")
        if on_cuda:  # fixed tile shapes: let cuDNN time its algorithms once and keep the best
            torch.backends.cudnn.benchmark = True
        self._folded: OrderedDict[int, AuraSR] = OrderedDict()
        self._compiled: dict[tuple[int, int], CompiledNetwork] = {}  # by (seed, batch size)
        self._fold_lock = threading.Lock()
        # Tests raise torch.OutOfMemoryError from it (see `runner.FaultHook`).
        self.fault_hook: FaultHook | None = None

    @classmethod
    def from_options(
        cls,
        checkpoint: str | Path,
        options: EngineOptions,
        model_dir: str | Path | None = None,
    ) -> Upscaler:
        """`from_checkpoint` with every engine setting from `options`."""
        if options.kernel_cache_dir is not None:
            winograd.use_cache_dir(options.kernel_cache_dir)
        return cls.from_checkpoint(
            checkpoint,
            device=options.device,
            dtype=options.dtype,
            model_dir=model_dir,
            batch_size=options.batch_size,
            fold_cache_size=options.fold_cache_size,
            channels_last=options.channels_last,
            prepack=options.prepack,
            winograd=options.winograd,
            compile=options.compile,
            cuda_graphs=options.cuda_graphs,
        )

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path = "v2",
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        model_dir: str | Path | None = None,
        batch_size: int | None = None,
        fold_cache_size: int = 2,
        channels_last: bool | None = None,
        prepack: bool | None = None,
        winograd: bool | None = None,
        compile: bool | None = None,
        cuda_graphs: bool | None = None,
    ) -> Upscaler:
        """`v1`, `v2` or a local checkpoint (see `superscale.model.resolve_checkpoint`)."""
        return cls(
            resolve_checkpoint(checkpoint, model_dir),
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            fold_cache_size=fold_cache_size,
            channels_last=channels_last,
            prepack=prepack,
            winograd=winograd,
            compile=compile,
            cuda_graphs=cuda_graphs,
        )

    # Folding -------------------------------------------------------------------------------

    def folded(self, seed: int) -> AuraSR:
        """The plain CNN for `seed`'s shared style, from a small LRU cache."""
        with self._fold_lock:
            net = self._folded.get(seed)
            if net is not None:
                self._folded.move_to_end(seed)
                return net
            z = shared_z(seed, self.config.style_network.dim_in)
            if self._model is not None:
                net = self._model.fold(z, self.dtype)
            else:
                assert self._reader is not None
                get = partial(self._reader.get, device=self.device)
                net = fold_network(self.config, z, get, self.dtype, self.device)
            if self.prepack:  # prepacked weights have oneDNN's own layout: no channels_last copy
                net = prepacking.prepack(net, self._example_batch(), self.winograd)
            if self.channels_last and not prepacking.is_packed(net):
                net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            self._folded[seed] = net
            while len(self._folded) > self.fold_cache_size:
                dropped, _ = self._folded.popitem(last=False)
                for key in [k for k in self._compiled if k[0] == dropped]:
                    del self._compiled[key]
            if self._batch_from_memory:
                self._batch_from_memory = False
                self._fit_batch(net)
            return net

    def _fit_batch(self, net: AuraSR) -> None:
        """The tile batch from the free device memory and what one tile's activations take."""
        c, t = self.config.channels, self.config.input_image_size
        try:
            tile_bytes = measure_tile_bytes(net, (c, t, t), self.device, self.channels_last)
        except out_of_memory_error():
            release_cached_memory(self.device)
            self.batch_size = 1
            log.warning("%s: out of memory measuring a tile; batches of 1", self.device)
            return
        free, _ = torch.cuda.mem_get_info(self.device)
        self.batch_size = batch_size_for_memory(free, tile_bytes)
        log.info(
            "%s: batches of %d tiles (%.1f GiB free, %.0f MiB per tile)",
            self.device,
            self.batch_size,
            free / 2**30,
            tile_bytes / 2**20,
        )

    def _network(self, seed: int) -> Forward:
        """What runs a batch of `seed`'s tiles: the folded network, or its compiled form for
        the current batch size (compiled on first use, cached per seed and batch size)."""
        net = self.folded(seed)
        if not self.compile:
            return net
        with self._fold_lock:
            key = (seed, self.batch_size)
            compiled = self._compiled.get(key)
            if compiled is None:
                label = f"the network folded for seed {seed}"
                compiled = CompiledNetwork(net, self.batch_size, self.cuda_graphs, label)
                self._compiled[key] = compiled
            return compiled

    def _example_batch(self) -> Tensor:
        c, t = self.config.channels, self.config.input_image_size
        x = torch.zeros(self.batch_size, c, t, t, device=self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def warm_up(self, seed: int | None = None) -> None:
        """Fold the weights for `seed` (default: the default seed) ahead of the first request
        and, where the network is compiled, compile it for the batch shape and record its
        CUDA graph (on a batch of blank tiles): the first job then pays none of it."""
        seed = DEFAULT_SEED if seed is None else seed
        with self._device_current():
            forward = self._network(seed)
            if not self.compile:
                return
            with torch.inference_mode():
                forward(self._example_batch())

    def _device_current(self) -> AbstractContextManager[object]:
        """cuda:N current while inside: its streams, allocator cache and CUDA graphs."""
        return torch.cuda.device(self.device) if self.device.type == "cuda" else nullcontext()

    def adaptive_model(self) -> AuraSR:
        """The adaptive network (per_tile mode). Loaded from the checkpoint for each call when
        the Upscaler was built from files, so its 2.4 GB do not stay resident."""
        if self._model is not None:
            return self._model
        assert self._reader is not None
        return load_model(self._reader.files, device=self.device)

    # Upscaling -----------------------------------------------------------------------------

    def upscale(
        self,
        image: Image.Image,
        overlapping_tiles: bool = False,
        seed: int | None = None,
        noise: NoiseMode = "shared",
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
        scale: Scale = MODEL_SCALE,
        tile_overlap: int = 0,
    ) -> Image.Image:
        """`image` (any mode) → its upscale, RGB or RGBA (alpha: Lanczos-resampled).

        `scale` (1 to 16, fractional allowed): up to the model's 4 one pass of the network,
        above it two (the second on the first's output); then a Lanczos resize down to
        round(w·scale) × round(h·scale). 4 (the default) is the model's own output, unresized.
        `scale` may instead be a `scaling.Target` size (either side or both; one side alone
        keeps the aspect ratio; each side's factor within 1 to 16). `tile_overlap` (0 to 32
        input px): neighbouring tiles overlap by that much and are blended with a smooth
        window — no seams for (64 / (64 − overlap))² of the cost, where `overlapping_tiles`
        (fal's remedy, a second offset pass) costs about 2×; not both.

        `seed` (None: `schemas.DEFAULT_SEED`) fixes the style noise: on one device, dtype and
        batch size, the same seed gives the same bytes. `noise="shared"` folds one z into the
        weights (cached per seed); `"per_tile"` draws a z per tile as the reference does and
        runs the adaptive network in fp32 (slow: a compatibility mode). `progress(done,
        total)` counts tiles; `should_cancel()` is polled between batches and raises
        `Cancelled`. Bad arguments raise ValueError.
        """
        (outcome,) = self.upscale_many(
            [image],
            overlapping_tiles,
            seed,
            noise,
            [progress],
            [should_cancel],
            scale,
            tile_overlap,
        )
        if isinstance(outcome, BaseException):
            raise outcome
        return cast(Image.Image, outcome)  # as_arrays is off

    @torch.inference_mode()
    def upscale_many(
        self,
        images_in: Sequence[Image.Image],
        overlapping_tiles: bool | Sequence[bool] = False,
        seed: int | None = None,
        noise: NoiseMode = "shared",
        progress: Sequence[ProgressFn | None] | None = None,
        should_cancel: Sequence[CancelFn | None] | None = None,
        scale: Scale | Sequence[Scale] = MODEL_SCALE,
        tile_overlap: int | Sequence[int] = 0,
        as_arrays: bool = False,
    ) -> list[Image.Image | np.ndarray | BaseException]:
        """Each image's upscale (as `upscale` gives it alone, to the byte), or the exception
        that ended it: `Cancelled` when its `should_cancel()` said so (polled before each batch
        holding its tiles), ValueError for an unusable image. Images of one seed share the
        model's batches: a GPU stays busy under many small requests instead of running
        half-empty batches. Tiles are taken image after image, so each image finishes as early
        as it would in a queue. One image's failure never stops the others; an error inside a
        shared forward fails the images in that batch. `overlapping_tiles`, `progress`,
        `should_cancel`, `scale` (a factor or a `scaling.Target` size) and `tile_overlap` are
        one value or one per image; `progress` counts the tiles of both passes of a factor
        above 4. `as_arrays`: each upscale as (H, W, 3 or 4) uint8 pixels instead of a PIL
        image (what an encoder takes: no round trip through PIL's layout)."""
        seed = DEFAULT_SEED if seed is None else seed
        if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer in [0, {MAX_SEED}]")
        if noise not in ("shared", "per_tile"):
            raise ValueError(f"noise must be 'shared' or 'per_tile', not {noise!r}")
        with self._device_current():
            return self._upscale_many(
                images_in,
                overlapping_tiles,
                seed,
                noise,
                progress,
                should_cancel,
                scale,
                tile_overlap,
                as_arrays,
            )

    def _upscale_many(
        self,
        images_in: Sequence[Image.Image],
        overlapping_tiles: bool | Sequence[bool],
        seed: int,
        noise: NoiseMode,
        progress: Sequence[ProgressFn | None] | None,
        should_cancel: Sequence[CancelFn | None] | None,
        scale: Scale | Sequence[Scale],
        tile_overlap: int | Sequence[int],
        as_arrays: bool,
    ) -> list[Image.Image | np.ndarray | BaseException]:
        n = len(images_in)
        overlaps = _per_image(overlapping_tiles, n, "overlapping_tiles")
        progresses = _per_image(progress, n, "progress")
        cancels = _per_image(should_cancel, n, "should_cancel")
        scales: list[Scale] = [
            f if isinstance(f, Target) else check_scale(f) for f in _per_image(scale, n, "scale")
        ]
        margins = [check_margin(o) for o in _per_image(tile_overlap, n, "tile_overlap")]
        m = self.config.scale
        reference_seed = seed if noise == "per_tile" else None
        plans: dict[int, tuple[int, tuple[int, int]]] = {}  # image → (model passes, final size)

        def prepare(i: int, image: Image.Image, tiles_before: int) -> ImageTask:
            task = ImageTask.prepare(
                image,
                self.config,
                bool(overlaps[i]),
                None,
                cancels[i],
                reference_seed,
                margins[i],
            )
            if tiles_before == 0:  # the first pass: what the input's size asks of both
                factor, size = resolve(task.plan.width, task.plan.height, scales[i])
                plans[i] = (model_passes(factor, m), size)
            if progresses[i] is not None:  # counts both passes: those before, those after
                after = 0
                if tiles_before == 0 and plans[i][0] == 2:
                    plan = task.plan
                    after = replace(plan, height=plan.height * m, width=plan.width * m).total
                task.progress = _counting(progresses[i], tiles_before, after)
            return task

        tasks: list[ImageTask | BaseException] = []
        for i, image in enumerate(images_in):
            try:
                tasks.append(prepare(i, image, 0))
            except Exception as exc:  # this image only: the others still run
                tasks.append(exc)

        def final_array(i: int, task: ImageTask | BaseException) -> bool:
            """Whether this pass's output is image i's upscale as it will be returned."""
            if not as_arrays or not isinstance(task, ImageTask):
                return False
            return (task.plan.width * m, task.plan.height * m) == plans[i][1]

        arrays = [final_array(i, t) for i, t in enumerate(tasks)]
        results = self._run_pass(tasks, seed, noise, arrays)
        again = [
            i for i, r in enumerate(results) if isinstance(r, Image.Image) and plans[i][0] == 2
        ]
        if again:
            second: list[ImageTask | BaseException] = []
            for i in again:
                first = tasks[i]
                assert isinstance(first, ImageTask)
                try:
                    second.append(prepare(i, cast(Image.Image, results[i]), first.plan.total))
                except Exception as exc:
                    second.append(exc)
            arrays = [final_array(i, t) for i, t in zip(again, second, strict=True)]
            for i, r in zip(again, self._run_pass(second, seed, noise, arrays), strict=True):
                results[i] = r
        for i, r in enumerate(results):
            if isinstance(r, Image.Image):
                resized = resize_to(r, plans[i][1])
                results[i] = np.asarray(resized) if as_arrays else resized
        return results

    def _run_pass(
        self,
        tasks: list[ImageTask | BaseException],
        seed: int,
        noise: NoiseMode,
        arrays: list[bool],
    ) -> list[Image.Image | np.ndarray | BaseException]:
        """One pass of the network over each image: its output (as pixels where `arrays`
        says), or what ended it."""
        # Polled before folding, which takes seconds.
        live = [t for t in tasks if isinstance(t, ImageTask) and not t.cancelled()]
        if live:
            self._run_tiles(live, seed, noise)
        return [
            t if isinstance(t, BaseException) else t.error or t.finish(array)
            for t, array in zip(tasks, arrays, strict=True)
        ]

    def _run_tiles(self, tasks: list[ImageTask], seed: int, noise: NoiseMode) -> None:
        """Every tile of `tasks` through the network, `batch_size` at a time; on CUDA the
        next batch is cut while the last one computes (see `DeviceRunner`)."""
        c, size = self.config.channels, self.config.input_image_size
        start: Callable[[Batch], list[tuple[Batch, Tensor]]]
        if noise == "shared":
            runner: DeviceRunner[Batch] = DeviceRunner(
                self.device, self.channels_last, fault_hook=self.fault_hook
            )
            shared = SharedNoise(seed, self.config.style_network.dim_in, c, size)
            self._network(seed)  # folded (and a failure raised) before the first batch

            def start(batch: Batch) -> list[tuple[Batch, Tensor]]:
                x = runner.host_buffer((len(batch), c, size, size))
                for i, (task, t) in enumerate(batch):
                    torch.add(task.cut(t), shared.input_noise(t), out=x[i])
                # Tiles of images whose tiles do not overlap come back already in 8 bits.
                as_bytes = not any(task.plan.blended for task, _ in batch)
                return runner.run(batch, x.clamp_(0, 1), self._network(seed), as_bytes)
        else:  # the adaptive network, in its stored layout and dtype
            runner = DeviceRunner(self.device, False, fault_hook=self.fault_hook)
            adaptive = self.adaptive_model()
            weights = adaptive.init_conv.weight

            def start(batch: Batch) -> list[tuple[Batch, Tensor]]:
                x = runner.host_buffer((len(batch), c, size, size))
                zs = []
                for i, (task, t) in enumerate(batch):
                    assert task.reference_noise is not None
                    z, noise_in = task.reference_noise.draw(t)
                    torch.add(task.cut(t), noise_in, out=x[i])
                    zs.append(z)
                z_batch = torch.stack(zs).to(weights.device, weights.dtype)
                return runner.run(
                    batch, x.clamp_(0, 1), lambda xd: adaptive(xd.to(weights.dtype), z_batch)
                )

        def add(finished: list[tuple[Batch, Tensor]]) -> None:
            for batch, result in finished:
                for (task, t), pixels in zip(batch, result, strict=True):
                    if task.error is None:
                        task.add(t, pixels)
                for task in _members(batch):
                    task.report()

        for task in tasks:
            task.report()
        queue = [(task, t) for task in tasks for t in task.tiles]
        pos = 0
        while pos < len(queue):
            batch: Batch = []
            while pos < len(queue) and len(batch) < self.batch_size:
                task, t = queue[pos]
                pos += 1
                if task.error is None:
                    batch.append((task, t))
            # Poll each image once per batch (a poll may cost a database read).
            for task in _members(batch):
                task.cancelled()
            batch = [(task, t) for task, t in batch if task.error is None]
            if batch:
                add(self._start(batch, start, runner))
        add(runner.finish())

    def _start(
        self,
        batch: Batch,
        start: Callable[[Batch], list[tuple[Batch, Tensor]]],
        runner: DeviceRunner[Batch],
    ) -> list[tuple[Batch, Tensor]]:
        """`start(batch)`, and the batches it finished. Out of device memory, the batch runs
        again in smaller ones (and later batches stay smaller); another error fails the
        batch's images (which tile broke it cannot be told)."""
        try:
            return start(batch)
        except out_of_memory_error() as exc:
            finished = runner.finish()  # what is in flight completes and frees its memory
            release_cached_memory(self.device)
            if len(batch) == 1:
                error = TileTooLarge(
                    f"out of memory on {self.device} with a single tile; free device memory "
                    f"or run with a smaller dtype ({exc})"
                )
                for task in _members(batch):
                    task.error = task.error or error
                return finished
            self._shrink_batch(len(batch))
            while batch:  # at the size as it stands: a part that fails shrinks it further
                part, batch = batch[: self.batch_size], batch[self.batch_size :]
                finished += self._start(part, start, runner)
            return finished
        except Exception as exc:
            for task in _members(batch):
                task.error = task.error or exc
            return []

    def _shrink_batch(self, failed: int) -> None:
        """After a batch of `failed` tiles ran out of memory: half as many from now on."""
        with self._fold_lock:
            smaller = max(1, failed // 2)
            if smaller < self.batch_size:
                log.warning(
                    "%s ran out of memory with %d tiles: batches of %d from now on",
                    self.device,
                    failed,
                    smaller,
                )
                self.batch_size = smaller
                for key in [k for k in self._compiled if k[1] > smaller]:
                    del self._compiled[key]


class TileTooLarge(RuntimeError):
    """Not even one tile fits in the device's free memory."""


def _members(batch: Batch) -> list[ImageTask]:
    """The images a batch holds tiles of, each once, in order."""
    return list({id(task): task for task, _ in batch}.values())


def _counting(progress: ProgressFn, before: int, after: int) -> ProgressFn:
    """`progress` over both passes: this pass's tiles follow `before` and precede `after`."""

    def report(done: int, total: int) -> None:
        progress(before + done, before + total + after)

    return report


def _per_image(value: object, n: int, name: str) -> list[Any]:
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        if len(value) != n:
            raise ValueError(f"{name}: expected {n} values, got {len(value)}")
        return list(value)
    return [value] * n
