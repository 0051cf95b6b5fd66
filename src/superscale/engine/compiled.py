"""`CompiledNetwork`: a folded network compiled with `torch.compile` for one batch shape.

A fixed shape compiles once and lets inductor plan every buffer; a partial last batch is
padded with zero tiles up to it (their outputs are dropped). With CUDA graphs (inductor's
"reduce-overhead" mode) a batch's hundreds of kernel launches replay as one. Compiling takes
seconds to minutes, paid on the first call and logged; where it fails (no C compiler or
Triton, an operator inductor cannot take) the network runs eagerly, with a warning.
"""

from __future__ import annotations

import logging
import threading
import time

import torch
from torch import Tensor, nn

from .devices import out_of_memory_error

log = logging.getLogger(__name__)


class CompiledNetwork:
    """`net` compiled for batches of exactly `batch` tiles; called with 1 to `batch` tiles."""

    def __init__(self, net: nn.Module, batch: int, cuda_graphs: bool, label: str) -> None:
        self.net = net
        self.batch = batch
        self.cuda_graphs = cuda_graphs
        self.label = label
        mode = "reduce-overhead" if cuda_graphs else None
        self._compiled = torch.compile(net, fullgraph=True, dynamic=False, mode=mode)
        self.compile_seconds: float | None = None  # set by the first call
        self.failed: BaseException | None = None  # compiling failed: running eagerly
        # CUDA graph replays of one network must not interleave (their buffers are shared).
        self._lock = threading.Lock()

    def __call__(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        # A batch formed before another thread shrank the batch size runs eagerly.
        if self.failed is not None or n > self.batch:
            return self.net(x)
        if n < self.batch:
            padded = x.new_zeros((self.batch, *x.shape[1:]))
            if x.is_contiguous(memory_format=torch.channels_last):
                padded = padded.contiguous(memory_format=torch.channels_last)
            padded[:n] = x
            x = padded
        with self._lock:
            if self.compile_seconds is None:
                return self._first_call(x)[:n]
            if not self.cuda_graphs:
                return self._compiled(x)[:n]
            torch.compiler.cudagraph_mark_step_begin()
            # The graph's output buffer is overwritten by its next replay, which another
            # thread may start as soon as the lock is free: a copy of it leaves.
            return self._compiled(x)[:n].clone()

    def _first_call(self, x: Tensor) -> Tensor:
        started = time.perf_counter()
        try:
            y = self._compiled(x)
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
        except out_of_memory_error():
            raise  # the batch is too big, not the compiler's fault: the caller retries smaller
        except Exception as exc:
            self.failed = exc
            self.compile_seconds = time.perf_counter() - started
            log.warning("could not compile %s (running it eagerly): %s", self.label, exc)
            return self.net(x)
        self.compile_seconds = time.perf_counter() - started
        log.info(
            "compiled %s for batches of %d%s in %.1f s",
            self.label,
            self.batch,
            " with CUDA graphs" if self.cuda_graphs else "",
            self.compile_seconds,
        )
        return y
