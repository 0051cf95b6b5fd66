"""GPU benchmark: every check of the CUDA path in one run, one table last.

Released AuraSR config with random weights (written once to a temporary checkpoint), on one
CUDA device:

1. correctness — network outputs on the same tiles, small and released config: CUDA bf16
   (eager and compiled) vs CPU fp32 (relative L2 ≤ 1e-2), CUDA fp32 with TF32 off vs CPU
   fp32 (≤ 1e-4);
2. engine — tiles/s of the folded network on device-resident batches: eager bf16 over batch
   sizes (with each one's peak device memory), fp16, compiled bf16 with and without CUDA
   graphs at the batch size the engine chose from free memory (compile times printed);
3. the reference package's `upscale_4x` and ours on the same 1024² image on the same GPU;
4. a 1024² PNG to a 4096² PNG end to end (decode, upscale, encode): latency;
5. the service — 32 queued 1024² jobs through one `superscale worker --device cuda` on the
   SQLite store, cross-job batching on (8 jobs) and off (1): jobs/s, and the fraction of that
   time the GPU was busy (NVML's utilisation, sampled every 50 ms).

Run it on a machine with CUDA (about 6 minutes on an H200):

    python3 benchmarks/gpu.py
    python3 benchmarks/gpu.py --skip service,reference   # parts only

Without a package index there (the device tool's machines): run `benchmarks/gpu_wheels.sh`
here, carry `.whl`, and there run

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
    PYTHONPATH=/tmp/site:src python3 benchmarks/gpu.py

A dry run of the same code paths on the CPU, small config (a minute or two):

    .venv/bin/python benchmarks/gpu.py --device cpu --quick

The log and the table go to stdout and, when $OUT is set, to $OUT/gpu.log, $OUT/gpu.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
# oracle.py: the reference, importable. Last: `engine` is benchmarks/engine.py, not tests/engine.
sys.path.append(str(HERE.parent / "tests"))

from engine import photo  # noqa: E402  (benchmarks/engine.py: the same test picture)
from superscale import images  # noqa: E402
from superscale.engine import Upscaler  # noqa: E402
from superscale.engine.compiled import CompiledNetwork  # noqa: E402
from superscale.model import (  # noqa: E402
    RELEASED_CONFIG,
    SMALL_CONFIG,
    AuraSRConfig,
    CheckpointFiles,
    resolve_checkpoint,
    save_random_checkpoint,
)

SEED = 7
TARGETS = {
    "tiles_per_s": 1000.0,
    "e2e_s": 0.35,
    "vs_reference": 10.0,
    "jobs_per_s": 3.0,
    "busy": 0.90,
}


@dataclass
class Row:
    check: str
    value: str
    target: str = ""
    ok: bool | None = None


class Report:
    """Lines to stdout and the log; rows for the closing table."""

    def __init__(self, out: Path | None) -> None:
        self.rows: list[Row] = []
        self.data: dict[str, Any] = {}
        self.log_file = open(out / "gpu.log", "w") if out else None  # noqa: SIM115
        self.out = out

    def say(self, line: str) -> None:
        print(line, flush=True)
        if self.log_file:
            self.log_file.write(line + "\n")
            self.log_file.flush()

    def row(self, check: str, value: str, target: str = "", ok: bool | None = None) -> None:
        self.rows.append(Row(check, value, target, ok))
        self.say(f"  {check}: {value}" + (f"  (target {target})" if target else ""))

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        self.say(f"\n== {name}")
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:  # one part failing must not lose the others
            self.say(traceback.format_exc())
            self.row(name, f"FAILED: {type(exc).__name__}: {exc}"[:160], ok=False)
        self.say(f"   ({time.perf_counter() - started:.1f} s)")

    def table(self) -> None:
        for r in self.rows:
            r.value = r.value if len(r.value) <= 100 else r.value[:97] + "..."
        width = max(len(r.check) for r in self.rows)
        vwidth = max(len(r.value) for r in self.rows)
        self.say("\n" + "=" * (width + vwidth + 30))
        for r in self.rows:
            mark = "" if r.ok is None else ("ok" if r.ok else "MISSED")
            target = f"{r.target:>12}" if r.target else " " * 12
            self.say(f"{r.check:<{width}}  {r.value:>{vwidth}}  {target}  {mark}")
        if self.out:
            rows = [r.__dict__ for r in self.rows]
            (self.out / "gpu.json").write_text(json.dumps({"rows": rows, **self.data}, indent=1))


# Helpers -----------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def square_photo(size: int) -> Image.Image:
    """The engine benchmark's stand-in for a photo, square."""
    return photo(size, size)


def tiles(n: int, config: AuraSRConfig) -> torch.Tensor:
    t = config.input_image_size
    return torch.rand(n, config.channels, t, t, generator=torch.Generator().manual_seed(n))


def rel_l2(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().float().cpu(), want.detach().float().cpu()
    return float((got - want).norm() / want.norm())


def rate(run: Callable[[], None], device: torch.device, min_seconds: float, min_runs: int) -> float:
    """Seconds per call of `run`, after one warm-up, over at least `min_runs` calls and
    `min_seconds`."""
    run()
    sync(device)
    runs, started = 0, time.perf_counter()
    while runs < min_runs or time.perf_counter() - started < min_seconds:
        run()
        runs += 1
    sync(device)
    return (time.perf_counter() - started) / runs


def upscaler(files: CheckpointFiles, device: torch.device, dtype: str, **kw: Any) -> Upscaler:
    if device.type == "cpu":
        kw.setdefault("prepack", False)
        kw.setdefault("winograd", False)
    return Upscaler(files, device=device, dtype=dtype, **kw)


def gpu_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


# 1. Correctness --------------------------------------------------------------------------------


def correctness(report: Report, files: CheckpointFiles, name: str, device: torch.device) -> None:
    config = resolve_config(files)
    x = tiles(4, config)
    with torch.inference_mode():
        cpu = upscaler(files, torch.device("cpu"), "fp32", compile=False)
        want = cpu.folded(SEED)(x)
        del cpu
        for dtype, compiled in (("bf16", False), ("bf16", True)):
            # On CUDA the batch the engine chooses from memory (the 4 tiles padded up to it),
            # so that the compiled graph is the one the later parts run.
            batch = None if device.type == "cuda" else 8
            up = upscaler(
                files, device, dtype, compile=compiled, cuda_graphs=compiled, batch_size=batch
            )
            forward = up._network(SEED)
            got = forward(x.to(device).contiguous(memory_format=torch.channels_last))
            error = rel_l2(got, want)
            label = f"{name}: {device.type} {dtype}{' compiled' if compiled else ''} vs cpu fp32"
            report.row(label, f"rel L2 {error:.2e}", "≤ 1e-2", error <= 1e-2)
            del up, forward, got
        tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            up = upscaler(files, device, "fp32", compile=False)
            got = up.folded(SEED)(x.to(device))
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        error = rel_l2(got, want)
        report.row(
            f"{name}: {device.type} fp32 (TF32 off) vs cpu fp32",
            f"rel L2 {error:.2e}",
            "≤ 1e-4",
            error <= 1e-4,
        )


def resolve_config(files: CheckpointFiles) -> AuraSRConfig:
    from superscale.model import CheckpointReader

    return CheckpointReader(files).config


# 2. Engine ----------------------------------------------------------------------------------


def engine(report: Report, files: CheckpointFiles, device: torch.device, quick: bool) -> float:
    """Tiles/s of the network alone; returns the best bf16 figure."""
    config = resolve_config(files)
    seconds = 0.5 if quick else 2.0
    batches = (1, 2, 4) if quick else (8, 16, 32, 64, 128)
    best: dict[str, float] = {}
    up = upscaler(files, device, "bf16", compile=False)
    net = up.folded(SEED)  # on CUDA this chooses the batch size from free memory
    if device.type == "cuda":
        chosen = up.batch_size
        report.row("engine: batch chosen from free memory", f"{chosen} tiles")
    else:
        chosen = batches[-1]
    report.data["chosen_batch"] = chosen
    peaks: dict[int, float] = {}
    with torch.inference_mode():
        for b in batches:
            x = tiles(b, config).to(device).contiguous(memory_format=torch.channels_last)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            try:
                per = rate(lambda x=x: net(x), device, seconds, 3)
            except torch.OutOfMemoryError:
                report.row(f"engine: eager bf16, batch {b}", "out of memory")
                continue
            if device.type == "cuda":
                peaks[b] = torch.cuda.max_memory_allocated(device) / 2**30
            best["eager bf16"] = max(best.get("eager bf16", 0.0), b / per)
            memory = f", peak {peaks[b]:.1f} GiB" if b in peaks else ""
            report.row(f"engine: eager bf16, batch {b}", f"{b / per:,.0f} tiles/s{memory}")
        report.data["peak_gib"] = peaks
        fp16 = upscaler(files, device, "fp16", compile=False)
        fp16_net = fp16.folded(SEED)
        x = tiles(chosen, config).to(device).contiguous(memory_format=torch.channels_last)
        per = rate(lambda f=fp16_net: f(x), device, seconds, 3)
        report.row(f"engine: eager fp16, batch {chosen}", f"{chosen / per:,.0f} tiles/s")
        del fp16
        graph_modes = (True, False) if device.type == "cuda" else (False,)
        for graphs in graph_modes:
            compiled = CompiledNetwork(net, chosen, graphs, "the benchmark's network")
            per = rate(lambda c=compiled: c(x), device, seconds, 3)
            label = f"compiled bf16{' + CUDA graphs' if graphs else ''}"
            best[label] = chosen / per
            note = " (compile FAILED: eager)" if compiled.failed else ""
            report.row(
                f"engine: {label}, batch {chosen}",
                f"{chosen / per:,.0f} tiles/s, compiled in {compiled.compile_seconds:.0f} s{note}",
            )
            del compiled
    top = max(best, key=lambda k: best[k])
    ok = best[top] >= TARGETS["tiles_per_s"] if device.type == "cuda" else None
    report.row("engine: best tiles/s", f"{best[top]:,.0f} ({top})", "≥ 1,000", ok)
    report.data["engine_best"] = best
    return best[top]


# 3 and 4. Whole images: ours, the reference, end to end -------------------------------------


def whole_images(
    report: Report, files: CheckpointFiles, device: torch.device, size: int, reference: bool
) -> None:
    image = square_photo(size)
    n_tiles = (size // 64) ** 2
    png = images.encode(image, "png")
    up = upscaler(files, device, "auto")  # the engine as the service runs it
    up.warm_up(SEED)

    parts: dict[str, list[float]] = {"decode": [], "upscale": [], "encode": []}

    def end_to_end() -> None:
        t0 = time.perf_counter()
        decoded = images.decode(png, 10**9)
        t1 = time.perf_counter()
        (out,) = up.upscale_many([decoded.image], seed=SEED, as_arrays=True)  # as the worker
        assert not isinstance(out, BaseException)
        t2 = time.perf_counter()
        images.encode(out, "png")
        t3 = time.perf_counter()
        for name, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            parts[name].append(seconds)

    up.upscale(image, seed=SEED)  # compiles, where compiling is on
    ours = rate(lambda: up.upscale(image, seed=SEED), device, 3.0, 3)
    report.row(
        f"whole image: ours ({up.dtype}, batch {up.batch_size}), {size}² ({n_tiles} tiles)",
        f"{ours:.3f} s, {n_tiles / ours:,.0f} tiles/s",
    )
    latencies = []
    for _ in range(5):
        started = time.perf_counter()
        end_to_end()
        latencies.append(time.perf_counter() - started)
    e2e = statistics.median(latencies)
    ok = e2e <= TARGETS["e2e_s"] if device.type == "cuda" and size == 1024 else None
    report.row(
        f"end to end: {size}² PNG → {4 * size}² PNG (median of 5)",
        f"{e2e:.3f} s (best {min(latencies):.3f})",
        "≤ 0.35 s",
        ok,
    )
    report.data["e2e_s"] = latencies
    split = ", ".join(f"{k} {statistics.median(v):.3f}" for k, v in parts.items())
    report.row("end to end: median split (s)", f"{split}; PNG: {images.png_encoder_name()}")
    if not reference:
        return
    from safetensors.torch import load_file

    from oracle import load_reference

    aura_sr = load_reference()
    ref = aura_sr.AuraSR(json.loads(files.config.read_text()), device=str(device))
    ref.upsampler.load_state_dict(load_file(str(files.weights)), strict=True)
    ref.upsampler.eval()
    ref.upscale_4x(square_photo(64), max_batch_size=8)  # warm-up
    sync(device)
    started = time.perf_counter()
    ref.upscale_4x(image, max_batch_size=8)
    sync(device)
    theirs = time.perf_counter() - started
    ratio = theirs / ours
    ok = ratio >= TARGETS["vs_reference"] if device.type == "cuda" else None
    report.row(
        f"reference upscale_4x (fp32, batch 8), {size}²",
        f"{theirs:.2f} s, {n_tiles / theirs:,.1f} tiles/s",
    )
    report.row("ours vs reference, tiles/s, same image", f"{ratio:.1f}×", "≥ 10×", ok)


# The host's share ------------------------------------------------------------------------------


def host_side(report: Report, size: int) -> None:
    """The CPU work the GPU path does per image, without the network: the time a GPU's
    batches must cover for the host never to hold them up (on the thread the worker uses)."""
    from superscale.engine.noise import SharedNoise
    from superscale.engine.task import ImageTask

    image = square_photo(size)
    config = RELEASED_CONFIG
    png = images.encode(image, "png")
    started = time.perf_counter()
    decoded = images.decode(png, 10**9)
    task = ImageTask.prepare(decoded.image, config, False)
    prepared = time.perf_counter()
    shared = SharedNoise(SEED, config.style_network.dim_in, 3, config.input_image_size)
    x = torch.empty(1, 3, config.input_image_size, config.input_image_size)
    for tile in task.tiles:
        torch.add(task.cut(tile), shared.input_noise(tile), out=x[0])
    inputs = time.perf_counter()
    side = config.input_image_size * config.scale
    tile_out = torch.from_numpy(np.array(square_photo(side).convert("RGB")))
    for tile in task.tiles:
        task.add(tile, tile_out)
    assembled = time.perf_counter()
    pixels = task.finish(as_array=True)
    images.encode(pixels, "png")
    encoded = time.perf_counter()
    n = len(task.tiles)
    report.row(
        f"host side of a {size}² image ({n} tiles)",
        f"decode+split {prepared - started:.3f}, tile inputs {inputs - prepared:.3f}, "
        f"assembly {assembled - inputs:.3f}, encode {encoded - assembled:.3f} s",
    )
    report.data["host_side_s"] = {
        "decode_split": prepared - started,
        "inputs": inputs - prepared,
        "assembly": assembled - inputs,
        "encode": encoded - assembled,
    }


# 5. The service ------------------------------------------------------------------------------


class BusySampler:
    """The GPU's utilisation (NVML: the share of time a kernel ran), sampled every 50 ms."""

    def __init__(self, device: torch.device) -> None:
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._handle: Any = None
        if device.type == "cuda":
            try:
                import pynvml

                pynvml.nvmlInit()
                self._nvml = pynvml
                self._handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            except Exception as exc:
                print(f"NVML unavailable ({exc}): no busy figure", flush=True)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while self._handle is not None and not self._stop.wait(0.05):
            rates = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
            self.samples.append((time.time(), rates.gpu))

    def busy(self, start: float, end: float) -> float | None:
        inside = [u for t, u in self.samples if start <= t <= end]
        return statistics.mean(inside) / 100 if inside else None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def service(
    report: Report,
    model_dir: Path,
    device: torch.device,
    size: int,
    jobs: int,
    batch_jobs: int,
) -> None:
    from superscale.files import new_key, open_file_store
    from superscale.jobs.records import NewJob
    from superscale.jobs.sqlite import SqliteJobStore
    from superscale.schemas import ENDPOINT_ID

    data = Path(tempfile.mkdtemp(prefix="gpu-service-"))
    public = "http://127.0.0.1:9"  # own files: the worker reads them from the store
    store = SqliteJobStore(data / "superscale.db")
    files = open_file_store(f"file://{data / 'files'}")
    key = new_key("in.png")
    files.put(key, images.encode(square_photo(size), "png"), "image/png")
    url = f"{public}/files/{key}"

    def submit() -> str:
        job = NewJob(
            endpoint=ENDPOINT_ID,
            owner="bench",
            input={"image_url": url, "seed": SEED},
            checkpoint="v2",
        )
        return store.submit(job).id

    def wait(ids: list[str], limit: float) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            states = [store.get(i) for i in ids]
            if all(j is not None and j.state == "COMPLETED" for j in states):
                failed = [j.error for j in states if j is not None and j.error is not None]
                if failed:
                    raise RuntimeError(f"jobs failed: {failed[:2]}")
                return
            time.sleep(0.02)
        raise TimeoutError(f"jobs not done in {limit} s")

    env = {
        **os.environ,
        "SUPERSCALE_DATA_DIR": str(data),
        "SUPERSCALE_PUBLIC_URL": public,
        "SUPERSCALE_MODEL_DIR": str(model_dir),
        "SUPERSCALE_CHECKPOINTS": "v2",
        "SUPERSCALE_DEVICE": str(device),
        "SUPERSCALE_MAX_BATCH_JOBS": str(batch_jobs),
        "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    log = (report.out or Path(tempfile.gettempdir())) / f"worker-{batch_jobs}.log"
    with open(log, "w") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "superscale", "worker", "--grace", "5"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        sampler = BusySampler(device)
        try:
            started = time.perf_counter()
            wait([submit()], 600)  # loads, folds and compiles: not part of the figure
            report.say(f"  worker warm in {time.perf_counter() - started:.0f} s")
            begin = time.time()
            ids = [submit() for _ in range(jobs)]
            wait(ids, 600)
            done = [store.get(i) for i in ids]
            end = max(j.finished_at or 0.0 for j in done if j is not None)
        finally:
            worker.terminate()
            worker.wait(60)
            sampler.stop()
            store.close()
    jobs_per_s = jobs / (end - begin)
    busy = sampler.busy(begin, end)
    on = batch_jobs > 1
    report.row(
        f"service: {jobs} × {size}² jobs, batching {'on' if on else 'off'} ({batch_jobs})",
        f"{jobs_per_s:.2f} jobs/s" + (f", GPU busy {busy:.0%}" if busy is not None else ""),
        "≥ 3 jobs/s, ≥ 90%" if on else "",
        (jobs_per_s >= TARGETS["jobs_per_s"] and (busy or 0) >= TARGETS["busy"])
        if on and device.type == "cuda"
        else None,
    )
    report.data[f"service_{batch_jobs}"] = {"jobs_per_s": jobs_per_s, "busy": busy}


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small config, small images")
    parser.add_argument("--skip", default="", help="comma list: correctness,engine,…")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here: use --device cpu --quick for a dry run")
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    report = Report(out)
    report.say(
        f"{time.strftime('%Y-%m-%d %H:%M')}  {gpu_name(device)}  torch {torch.__version__}"
        f"  CUDA {torch.version.cuda}  Python {platform.python_version()}"
    )
    root = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    started = time.perf_counter()
    released = RELEASED_CONFIG if not args.quick else SMALL_CONFIG
    small_dir, model_dir = root / "small", root / "models"
    save_random_checkpoint(small_dir / "v2", SMALL_CONFIG, seed=1)
    save_random_checkpoint(model_dir / "v2", released, seed=2)
    report.say(f"random checkpoints written in {time.perf_counter() - started:.0f} s")
    small = resolve_checkpoint("v2", small_dir)
    main_files = resolve_checkpoint("v2", model_dir)
    name = "small" if args.quick else "released"
    size = 128 if args.quick else 1024

    def correctness_part() -> None:
        correctness(report, small, "small", device)
        if not args.quick:
            correctness(report, main_files, name, device)

    def service_part() -> None:
        for batch_jobs in (8, 1):
            service(report, model_dir, device, size, 4 if args.quick else 32, batch_jobs)

    parts: list[tuple[str, str, Callable[[], Any]]] = [
        ("host", "host side", lambda: host_side(report, 1024)),
        ("correctness", "correctness", correctness_part),
        (
            "engine",
            f"engine ({name} config)",
            lambda: engine(report, main_files, device, args.quick),
        ),
        (
            "images",
            f"whole images ({name} config)",
            lambda: whole_images(report, main_files, device, size, "reference" not in skip),
        ),
        ("service", f"service ({name} config)", service_part),
    ]
    # Stopped by a time limit (SIGTERM): the table of what ran still comes out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(f"stopped by signal {signum}"))
    try:
        for key, title, run in parts:
            if key not in skip:
                with report.section(title):
                    run()
                # What a part left in this process's allocator is not free for the next one
                # (the service's worker process measures the device's free memory).
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    finally:
        report.say(f"\ntotal {time.perf_counter() - started:.0f} s")
        report.table()


if __name__ == "__main__":
    main()
