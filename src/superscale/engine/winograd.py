"""Winograd F(4×4, 3×3) convolutions for the folded network on CPU (fp32).

A 3×3 conv costs 9 multiply-adds per output pixel and channel pair; Winograd's F(4×4, 3×3)
computes each 4×4 output block from a 6×6 input patch with 36 instead of 144, moving the
work into 36 matrix products between two transforms. `winograd.c` holds the transforms (one
pass each over NHWC data) and, for layers with few channels, the whole conv per cache-sized
chunk of tiles with its own GEMM; layers with many channels do the products in `torch.bmm`.
It is compiled for this CPU on first use with the system C compiler and cached (no
compiler: the engine keeps oneDNN's direct convolutions). Transformed weights are 4× the
size of the originals, so only the layers that run on large feature maps use it (few
weights, most FLOPs).

Accuracy: the transforms multiply by up to 5 and 8, so results differ from a direct fp32
conv by ~1e-5 relative (measured per layer and on the whole network in the tests).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache, partial
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .devices import cpu_flags

log = logging.getLogger(__name__)

# Input feature maps with at least this many pixels per image go through Winograd: on 2 Zen 3
# cores it is 1.2-2.5× faster than oneDNN there, and the transformed weights of these layers
# add ~0.3 GB at the released config; the 16² and 8² layers hold 82% of the 3×3 weights
# (4× of those would add ~1 GB, for ~1.6× on 20% of the time).
MIN_PIXELS = 32 * 32
# Layers with at most this many input and output channels run all three steps in C, a chunk
# of tiles whose transformed data (≤ FUSED_FLOATS) stays in a core's L2 at a time. Inside
# the released network on 2 Zen 3 cores (A/B in one process): 1.56× faster than the
# transforms around torch.bmm at 64 channels on 256², 1.08× on 128²; at 128 channels and
# more, bmm is faster (0.7-0.9×).
FUSED_MAX_CHANNELS = 64
FUSED_FLOATS = 2**18
# Otherwise tiles run in chunks whose transformed input and output (≤ 32 MB, reused from
# call to call) stay near the last-level cache between the transforms and torch.bmm.
CHUNK_FLOATS = 2**23

_G = torch.tensor(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ],
    dtype=torch.float64,
)
# -ffast-math lets gcc call glibc's vector expf for the SiLU. It is given to the compile step
# only: linked with it, gcc < 13 adds crtfastmath.o, whose constructor turns on flush-to-zero
# for the whole process as soon as the library loads.
_CFLAGS = ["-O3", "-march=native", "-ffast-math", "-fPIC"]
_LDFLAGS = ["-shared"]


_cache_root: Path | None = None  # set by `use_cache_dir`


def use_cache_dir(root: Path | None) -> None:
    """Keep compiled kernels under `root`/kernels (None: the user's cache directory). The
    service passes `Settings.cache_dir` here, through `EngineOptions.kernel_cache_dir`."""
    global _cache_root
    if root != _cache_root:
        _cache_root = root
        kernel_library.cache_clear()


def _cache_dir() -> Path:
    root = _cache_root or Path(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "superscale"
    )
    return Path(root) / "kernels"


def _cpu_fingerprint() -> str:
    """The compiled kernel is for this CPU (-march=native): key the cache by its flags."""
    flags = cpu_flags()
    if not flags:
        import platform

        return platform.processor() + platform.machine()
    return " ".join(sorted(flags))


@lru_cache(maxsize=1)
def kernel_library() -> ctypes.CDLL | None:
    """The compiled transforms, built on first use; None where no C compiler works."""
    source = resources.files(__package__).joinpath("winograd.c").read_bytes()
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log.info("no C compiler: Winograd convolutions off, oneDNN direct convolutions used")
        return None
    key = hashlib.sha256(
        source + repr([compiler, _CFLAGS, _LDFLAGS]).encode() + _cpu_fingerprint().encode()
    ).hexdigest()[:16]
    target = _cache_dir() / f"winograd-{key}.so"
    if not target.exists():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                src = Path(tmp) / "winograd.c"
                src.write_bytes(source)
                obj, built = Path(tmp) / "winograd.o", Path(tmp) / "winograd.so"
                for step in (
                    [compiler, *_CFLAGS, "-c", "-o", str(obj), str(src)],
                    [compiler, *_LDFLAGS, "-o", str(built), str(obj), "-lm"],
                ):
                    subprocess.run(step, check=True, capture_output=True, timeout=120)
                os.replace(built, target)  # atomic: concurrent workers may build it too
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            log.warning(
                "could not build the Winograd kernels (%s %s); using direct convolutions",
                exc,
                detail.decode(errors="replace")[:500],
            )
            return None
    lib = ctypes.CDLL(str(target))
    ptr, i32, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
    # (data, n, h, w, c, ...) as in winograd.c
    lib.wino_input_f43.argtypes = [ptr, i32, i32, i32, i32, ptr, i64, i64, i64, i64]
    lib.wino_input_f43.restype = None
    lib.wino_output_f43.argtypes = [ptr, i32, i32, i32, i32, i64, i64, ptr, i32, ptr, i64, i64]
    lib.wino_output_f43.restype = None
    lib.wino_conv_f43.argtypes = [ptr, i32, i32, i32, i32, ptr, i32, ptr, i32, ptr, i64, i64, i64]
    lib.wino_conv_f43.restype = i32
    return lib


def available() -> bool:
    return kernel_library() is not None


def transform_weight(weight: Tensor) -> Tensor:
    """(out, in, 3, 3) → U (36, in, out), U[a·6+b] = (G g Gᵀ)[a, b], computed in float64."""
    u = torch.einsum("ak,oikl,bl->abio", _G, weight.detach().double().cpu(), _G)
    return u.reshape(36, weight.shape[1], weight.shape[0]).to(torch.float32).contiguous()


_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_scratch = threading.local()


def _workspace(slot: str, *shape: int) -> Tensor:
    """A per-thread scratch tensor, kept between calls: fresh large allocations are mapped
    anew by malloc and page-faulted on every call, which cost as much as the GEMM here."""
    numel = shape[0] * shape[1] * shape[2]
    buf: Tensor | None = getattr(_scratch, slot, None)
    if buf is None or buf.numel() < numel:
        buf = torch.empty(numel)
        setattr(_scratch, slot, buf)
    return buf[:numel].view(shape)


def _forget_pool() -> None:
    """A forked child has none of its parent's threads: it starts a pool of its own."""
    global _pool, _pool_size
    _pool, _pool_size = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _parallel(fn: Any, args: tuple[Any, ...], start: int, count: int) -> list[Any]:
    """Run fn(*args, t0, t1) over tiles [start, start + count), split across torch's thread
    count (ctypes releases the GIL for the call); the calls' results."""
    global _pool, _pool_size
    workers = max(1, min(torch.get_num_threads(), count))
    if workers == 1:
        return [fn(*args, start, start + count)]
    if _pool is None or _pool_size < workers:
        _pool, _pool_size = ThreadPoolExecutor(workers, "superscale-winograd"), workers
    bounds = [start + count * k // workers for k in range(workers + 1)]
    futures = [_pool.submit(partial(fn, *args, lo, hi)) for lo, hi in pairwise(bounds)]
    return [f.result() for f in futures]


class WinogradConv(nn.Module):
    """A 3×3, stride-1, padding-1 fp32 conv on CPU (bias and SiLU optional) via F(4×4, 3×3).

    Takes and returns NCHW tensors in channels_last memory (others are converted). Only the
    transformed weights are kept (4× the original size)."""

    def __init__(self, weight: Tensor, bias: Tensor | None, act: str = "none") -> None:
        super().__init__()
        if weight.shape[-2:] != (3, 3):
            raise ValueError("Winograd F(4, 3) is for 3×3 kernels")
        if act not in ("none", "swish"):
            raise ValueError(f"unsupported activation {act!r}")
        self.dtype = torch.float32
        self.act = act
        self.u = transform_weight(weight)
        self.bias = None if bias is None else bias.detach().float().contiguous()

    def forward(self, x: Tensor, mods: Any = None) -> Tensor:
        lib = kernel_library()
        if lib is None or x.dtype != torch.float32 or x.device.type != "cpu":
            raise RuntimeError("WinogradConv runs fp32 on CPU with its compiled kernels")
        n, c, h, w = x.shape
        nhwc = x.permute(0, 2, 3, 1)  # a view of channels_last memory
        # A conv pads with zeros: zero rows and columns up to a multiple of 4 change nothing
        # inside the original extent, which is all that is kept.
        ph, pw = -h % 4, -w % 4
        nhwc = (F.pad(nhwc, (0, 0, 0, pw, 0, ph)) if ph or pw else nhwc).contiguous()
        hp, wp = h + ph, w + pw
        tiles = n * (hp // 4) * (wp // 4)
        out_c = self.u.shape[-1]
        y = torch.empty(n, hp, wp, out_c)
        bias = self.bias.data_ptr() if self.bias is not None else None
        act = 1 if self.act == "swish" else 0
        image = (nhwc.data_ptr(), n, hp, wp, c)
        if max(c, out_c) <= FUSED_MAX_CHANNELS:
            rows = max(6, FUSED_FLOATS // (36 * (c + out_c)) // 6 * 6)  # 6: the GEMM's tile
            args = (*image, self.u.data_ptr(), out_c, bias, act, y.data_ptr(), rows)
            if any(_parallel(lib.wino_conv_f43, args, 0, tiles)):
                raise MemoryError("no memory for the Winograd scratch buffers")
        else:
            self._run_chunked(lib, image, y, bias, act, tiles)
        if ph or pw:
            y = y[:, :h, :w].contiguous()
        return y.permute(0, 3, 1, 2)

    def _run_chunked(
        self,
        lib: ctypes.CDLL,
        image: tuple[int, ...],
        y: Tensor,
        bias: int | None,
        act: int,
        tiles: int,
    ) -> None:
        """The transforms in C around one torch.bmm per chunk of tiles."""
        _, n, hp, wp, c = image
        out_c = self.u.shape[-1]
        chunk = max(1, CHUNK_FLOATS // (36 * (c + out_c)))
        for t0 in range(0, tiles, chunk):
            count = min(chunk, tiles - t0)
            v = _workspace("v", 36, count, c)
            _parallel(lib.wino_input_f43, (*image, v.data_ptr(), t0, count), t0, count)
            m = torch.bmm(v, self.u, out=_workspace("m", 36, count, out_c))
            _parallel(
                lib.wino_output_f43,
                (m.data_ptr(), n, hp, wp, out_c, t0, count, bias, act, y.data_ptr()),
                t0,
                count,
            )
