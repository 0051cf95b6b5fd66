"""`CompiledNetwork`: a folded network compiled with `torch.compile` for one batch shape.

A fixed shape compiles once and lets inductor plan every buffer; a partial last batch is
padded with zero tiles up to it (their outputs are dropped). With CUDA graphs (inductor's
"reduce-overhead" mode) a batch's hundreds of kernel launches replay as one. Compiling takes
seconds to minutes, paid on the first call and logged; where it fails (no C compiler or
Triton, an operator inductor cannot take) the network runs eagerly, with a warning.

CUDA graphs are process-wide state: every compiled network with graphs is captured and
replayed under one lock, whichever worker thread calls it, so that one thread's replay never
overwrites another's output before its copy is taken.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict

import torch
from torch import Tensor, nn

from .devices import out_of_memory_error

log = logging.getLogger(__name__)

_graphs_lock = threading.Lock()


def ready_thread_for_graphs() -> None:
    """Before torch 2.13, inductor's CUDA graph trees keep their per-device managers in
    thread-local state that only the thread which imported them has: a graph first called
    from any other thread fails an assertion (pytorch/pytorch#123177). This gives the calling
    thread managers of its own, as torch 2.13 does itself. A no-op where that is so."""
    from torch._inductor import cudagraph_trees as trees

    local = getattr(trees, "local", None)
    if local is None or hasattr(trees, "_initialize_tls"):  # a torch that does it itself
        return
    if hasattr(local, "tree_manager_containers") or torch._C._is_key_in_tls(
        "tree_manager_containers"
    ):
        return
    local.tree_manager_containers = {}
    local.tree_manager_locks = defaultdict(threading.Lock)


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
        # Compiles once; without graphs, calls of one network take turns as well.
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
        with _graphs_lock if self.cuda_graphs else self._lock:
            if self.cuda_graphs:
                ready_thread_for_graphs()
            if self.compile_seconds is None:
                y = self._first_call(x)
            elif self.failed is not None:  # failed in another thread while this one waited
                y = self.net(x)
            else:
                if self.cuda_graphs:
                    torch.compiler.cudagraph_mark_step_begin()
                y = self._compiled(x)
            # A graph's output buffer is overwritten by the next replay, which another thread
            # may start as soon as the lock is free: a copy of it leaves.
            return y[:n].clone() if self.cuda_graphs else y[:n]

    def _first_call(self, x: Tensor) -> Tensor:
        started = time.perf_counter()
        try:
            y = self._compiled(x)
            if self.cuda_graphs:  # the first call warms up, the second records the graph
                torch.compiler.cudagraph_mark_step_begin()
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
