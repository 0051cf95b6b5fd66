"""`DeviceRunner`: tile batches to the device, through a network, and back.

On CUDA a batch's host side lives in pinned memory and both copies are asynchronous, so the
CPU cuts and noises the next batch and blends the last one while the GPU computes: up to
`depth` batches are in flight, each collected (its event waited for) only when the runner
needs room or the caller asks for the rest. Elsewhere a batch runs to completion at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

import torch
from torch import Tensor

from .tiling import to_bytes

K = TypeVar("K")
Forward = Callable[[Tensor], Tensor]
# Called with each batch's tile count before its forward: tests raise a real
# torch.OutOfMemoryError from it to exercise the retry without a GPU.
FaultHook = Callable[[int], None]


class DeviceRunner(Generic[K]):
    """Runs batches on `device`; `K` is whatever the caller keys a batch's tiles by."""

    def __init__(
        self,
        device: torch.device,
        channels_last: bool,
        depth: int = 2,
        fault_hook: FaultHook | None = None,
    ) -> None:
        self.device = device
        self.channels_last = channels_last
        self.asynchronous = device.type == "cuda"
        self.depth = depth if self.asynchronous else 0
        self.fault_hook = fault_hook
        self._in_flight: deque[tuple[K, Tensor, torch.cuda.Event | None]] = deque()

    def host_buffer(self, shape: tuple[int, ...]) -> Tensor:
        """An uninitialised float32 host tensor for a batch's input: pinned on CUDA, where
        torch's host allocator keeps a block until the copies that read it have run."""
        return torch.empty(shape, pin_memory=self.asynchronous)

    def run(
        self, key: K, x: Tensor, forward: Forward, as_bytes: bool = False
    ) -> list[tuple[K, Tensor]]:
        """Start batch `key` (`x`: its host input, float32 (n, C, T, T)); the batches that
        finished meanwhile, oldest first, each as (key, host output): float32 (n, C, T', T')
        in [0, 1], or with `as_bytes` rounded to uint8 (n, T', T', C) on the device (a quarter
        of the bytes to copy back, and no conversion left for the CPU).
        An error of this batch's forward (out of memory, say) is raised here, before anything
        of it is in flight; the batches already in flight are unaffected."""
        if self.fault_hook is not None:
            self.fault_hook(x.shape[0])
        y = forward(self._to_device(x))
        y = torch.clamp(y.float(), 0, 1)  # not in place: a CUDA graph owns its output
        if as_bytes:
            y = to_bytes(y)
        if not self.asynchronous:
            return [(key, y.cpu())]
        out = torch.empty(y.shape, dtype=y.dtype, pin_memory=True)
        out.copy_(y, non_blocking=True)
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(self.device))
        self._in_flight.append((key, out, done))
        finished = []
        while len(self._in_flight) > self.depth:
            finished.append(self._collect())
        return finished

    def finish(self) -> list[tuple[K, Tensor]]:
        """Wait for every batch in flight; their outputs, oldest first."""
        return [self._collect() for _ in range(len(self._in_flight))]

    def _collect(self) -> tuple[K, Tensor]:
        key, out, done = self._in_flight.popleft()
        if done is not None:
            done.synchronize()
        return key, out

    def _to_device(self, x: Tensor) -> Tensor:
        x = x.to(self.device, non_blocking=self.asynchronous)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
