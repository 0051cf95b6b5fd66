"""The training loop: one process, or one per GPU under `torchrun` (DDP), the same code.

A run writes into its output folder:
- `model.safetensors` + `config.json`: the official format (EMA weights unless asked
  otherwise), written at every save and at the end; our engine and the reference load it;
- `training-state.pt`: everything a resume needs (weights, EMA, discriminator, optimisers,
  schedulers, step, options, RNG), every `save_every` steps, at the end, and on Ctrl-C/SIGTERM;
- `log.jsonl`: losses every `log_every` steps and each validation (PSNR, SSIM), as JSON lines;
  TensorBoard scalars under `tensorboard/` too where the `tensorboard` package is installed;
- `samples/step-N.png`: validation grids, a row per image: input (nearest), ours, target.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from superscale.model import (
    AuraSR,
    AuraSRConfig,
    ConfigError,
    load_model,
    random_state_dict,
    resolve_checkpoint,
    save_checkpoint,
)

from . import losses
from .data import (
    CropDataset,
    DataError,
    ImageEntry,
    StepPositions,
    find_images,
    micro_batch,
    scan_images,
    validation_samples,
)
from .discriminator import UNetDiscriminator
from .distributed import Process
from .ema import EMA
from .options import TrainingError, TrainOptions
from .quality import psnr, ssim
from .report import Report

log = logging.getLogger(__name__)

STATE_FILE = "training-state.pt"
CROP = 256  # the released network's output tile: 64² in, 256² out
STATE_VERSION = 1


@dataclass
class Result:
    step: int
    out: Path
    validations: list[dict[str, float]]


class Stop(Exception):
    """SIGINT (Ctrl-C) or SIGTERM during training: the step under way finished and the state
    saved, the run ends."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


def train(opts: TrainOptions, resume: bool = False) -> Result:
    """Train as `opts` say; with `resume`, go on from `opts.out`'s saved state (`opts.steps`
    may be raised, `opts.data` point where the images are now; the rest comes from the
    state)."""
    out = Path(opts.out)
    saved: dict[str, Any] | None = None
    if resume:
        saved = _read_state(out)
        steps, workers, progress, data = opts.steps, opts.workers, opts.progress, opts.data
        opts = TrainOptions.from_dict(saved["options"])
        opts.steps, opts.workers, opts.progress = steps, workers, progress
        opts.data = data or opts.data  # the images may have moved
    _check(opts)
    proc = Process.start(opts.device)
    try:
        trainer = Trainer(opts, proc, saved)
        del saved  # the state read is in the trainer now: not twice in memory for the run
        return trainer.run()
    finally:
        proc.stop()


def _check(opts: TrainOptions) -> None:
    if opts.steps < 1 or opts.batch < 1 or opts.accumulate < 1:
        raise TrainingError("steps, batch and accumulate must be 1 or more")
    if opts.init is None and opts.config is None:
        raise TrainingError("from scratch (no --from) needs a --config")
    for name in ("l1", "gan", "lr", "d_lr"):
        if getattr(opts, name) < 0:
            raise TrainingError(f"{name} must not be negative")


def _read_state(out: Path) -> dict[str, Any]:
    path = out / STATE_FILE
    if not path.is_file():
        raise TrainingError(f"nothing to resume: no {STATE_FILE} in {out}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("version") != STATE_VERSION:
        raise TrainingError(f"{path} was written by another version of superscale")
    return dict(state)


def initial_model(opts: TrainOptions) -> tuple[AuraSRConfig, dict[str, Tensor]]:
    """The network's config and weights to start from: a checkpoint (its config must match a
    given `--config`), or a config with random weights."""
    given = None
    if opts.config is not None:
        try:
            given = AuraSRConfig.from_dict(json.loads(Path(opts.config).read_text()))
        except (OSError, ValueError, ConfigError) as exc:
            raise TrainingError(f"cannot read the config {opts.config}: {exc}") from None
    if opts.init is None:
        assert given is not None
        return given, random_state_dict(given, seed=opts.seed)
    files = resolve_checkpoint(opts.init, opts.model_dir)
    model = load_model(files)
    if given is not None and given != model.config:
        theirs, ours = model.config.to_dict(), given.to_dict()
        differ = sorted(k for k in ours if ours.get(k) != theirs.get(k))
        raise TrainingError(
            f"the config {opts.config} does not match the checkpoint {opts.init!r} "
            f"(they differ in {', '.join(differ)}): fine-tuning keeps the checkpoint's network"
        )
    return model.config, {k: v.float() for k, v in model.state_dict().items()}


class Trainer:
    """One process's side of a run: `run()` trains to `opts.steps`; `data()` and
    `train_step()` are its parts (benchmarks time the steps alone)."""

    def __init__(self, opts: TrainOptions, proc: Process, saved: dict[str, Any] | None) -> None:
        self.opts, self.proc = opts, proc
        self.out = Path(opts.out)
        self.device = proc.device
        self.train_entries, self.val_entries = self._scan()
        try:  # before anything costly, as the scan
            micro_batch(opts.batch, opts.accumulate, proc.world)
        except ValueError as exc:
            raise TrainingError(str(exc)) from None
        torch.manual_seed(opts.seed)
        if opts.deterministic:
            torch.use_deterministic_algorithms(True)
        if saved is not None:
            self.config = AuraSRConfig.from_dict(saved["config"])
            weights = saved["model"]
        else:
            self.config, weights = initial_model(opts)
        with torch.device("meta"):  # no initialisation pass: the weights are given
            self.generator = AuraSR(self.config)
        # Copied into memory of its own, not assigned: where a tensor's memory lies changes
        # the CPU kernels' rounding, and a resumed run must equal an uninterrupted one.
        self.generator.to_empty(device=self.device)
        self.generator.load_state_dict(weights, strict=True)
        self.generator.train()
        for name, p in self.generator.named_parameters():
            p.requires_grad_(not name.endswith("attend.scale"))  # held, never read
        if opts.checkpointing:
            self.generator.checkpoint_activations()
        self.ema = EMA(self.generator, opts.ema_decay)
        self.perceptual = self._perceptual()
        self.discriminator = (
            UNetDiscriminator(opts.d_channels).to(self.device) if opts.gan > 0 else None
        )
        self.opt_g = torch.optim.Adam(
            [p for p in self.generator.parameters() if p.requires_grad],
            lr=opts.lr,
            betas=(0.9, 0.99),
        )
        warmup = max(1, opts.warmup)
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(
            self.opt_g, lambda step: min(1.0, (step + 1) / warmup)
        )
        self.opt_d = (
            torch.optim.Adam(self.discriminator.parameters(), lr=opts.d_lr, betas=(0.9, 0.99))
            if self.discriminator is not None
            else None
        )
        self.step = 0
        self.validations: list[dict[str, float]] = []
        if saved is not None:
            self._restore(saved)
        self.bf16 = (
            opts.bf16
            if opts.bf16 is not None
            else self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        )
        self.g = self._parallel(self.generator)
        self.d = self._parallel(self.discriminator) if self.discriminator else None

    # Setting up ------------------------------------------------------------------------------

    def _perceptual(self) -> losses.PerceptualLoss | None:
        opts = self.opts
        path = (
            Path(opts.perceptual_weights)
            if opts.perceptual_weights
            else losses.default_vgg19_path()
        )
        weight = opts.perceptual
        if weight is None:
            weight = 1.0 if path.is_file() else 0.0
            if not weight and self.proc.main:
                log.info(
                    "no perceptual loss: VGG19's weights are not at %s (--perceptual-weights)",
                    path,
                )
        opts.perceptual = weight
        if weight <= 0:
            return None
        try:
            return losses.PerceptualLoss(path).to(self.device)
        except losses.PerceptualWeightsMissing as exc:
            raise TrainingError(str(exc)) from None

    def _parallel(self, module: nn.Module) -> nn.Module:
        if self.proc.world == 1:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def _restore(self, saved: dict[str, Any]) -> None:
        self.ema.model.load_state_dict(saved["ema"])
        self.opt_g.load_state_dict(saved["opt_g"])
        self.sched_g.load_state_dict(saved["sched_g"])
        if self.discriminator is not None and self.opt_d is not None:
            self.discriminator.load_state_dict(saved["discriminator"])
            self.opt_d.load_state_dict(saved["opt_d"])
        self.step = int(saved["step"])
        self.validations = list(saved.get("validations", []))
        torch.set_rng_state(saved["rng"])

    def _scan(self) -> tuple[list[ImageEntry], list[ImageEntry]]:
        """The images to train on and those held out, before anything costly (a download)."""
        opts = self.opts
        try:
            paths = find_images(opts.data)
        except DataError as exc:
            raise TrainingError(str(exc)) from None
        scan = scan_images(paths, CROP)
        if self.proc.main:
            log.info("data: %s", scan.summary())
        if not scan.usable:
            where = ", ".join(opts.data)
            raise TrainingError(
                f"no image to train on in {where}: {len(paths)} image file(s) found — "
                f"{scan.summary()}. Each image needs at least {CROP}×{CROP} pixels"
            )
        order = np.random.default_rng([opts.seed, 2]).permutation(len(scan.usable))
        entries = [scan.usable[i] for i in order]
        held = 0
        if len(entries) > 1 and opts.val_fraction > 0:
            held = min(opts.val_images, max(1, round(len(entries) * opts.val_fraction)))
            held = min(held, len(entries) - 1)
        return entries[held:], entries[:held]

    def data(self) -> tuple[Iterator[dict[str, Tensor]], dict[str, Tensor] | None]:
        """The training batches, and the validation batch (process 0 alone validates)."""
        opts = self.opts
        train_entries, val_entries = self.train_entries, self.val_entries
        dim = self.config.style_network.dim_in
        dataset = CropDataset(
            train_entries,
            crop=CROP,
            style_dim=dim,
            degradation=opts.degradation,
            seed=opts.seed,
            flips=opts.flips,
        )
        positions = StepPositions(
            self.step, opts.batch, opts.accumulate, self.proc.rank, self.proc.world
        )
        loader = DataLoader(
            dataset,
            batch_sampler=positions,
            num_workers=opts.workers,
            persistent_workers=opts.workers > 0,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_ignore_interrupts,
        )
        if not self.proc.main:
            return iter(loader), None
        try:
            val = validation_samples(val_entries or train_entries[:1], CROP, dim, opts.degradation)
        except DataError as exc:
            raise TrainingError(str(exc)) from None
        return iter(loader), val

    # Training --------------------------------------------------------------------------------

    def run(self) -> Result:
        batches, val = self.data()
        self.out.mkdir(parents=True, exist_ok=True)
        main = self.proc.main
        report = (
            Report(self.out, steps=self.opts.steps, start=self.step, progress=self.opts.progress)
            if main
            else None
        )

        def validate() -> None:  # process 0's: it has the report and the validation batch
            if report is not None and val is not None:
                self._validate(val, report)

        if self.step == 0:
            validate()
        stops = _StopSignals()
        try:
            while self.step < self.opts.steps:
                losses_now = self.train_step(batches)
                self.step += 1
                if self._all_agree(stops.received):
                    self._save()
                    if main:
                        log.warning(
                            "stopped at step %d; saved: go on with --resume %s", self.step, self.out
                        )
                    raise Stop(stops.received or signal.SIGTERM)
                if report is not None:
                    report.stepped(self.step, losses_now, self.step % self.opts.log_every == 0)
                    if self.step % self.opts.val_every == 0:
                        validate()
                if self.step % self.opts.save_every == 0:
                    self._save()
            if self.step % self.opts.val_every:
                validate()
        finally:
            stops.restore()
            if report is not None:
                report.close()
        self._save()
        return Result(self.step, self.out, self.validations)

    def _all_agree(self, stop: int) -> bool:
        """Whether any process was asked to stop: all stop after the same step, or one would
        wait for the others' gradients for ever."""
        if self.proc.world == 1:
            return bool(stop)
        flag = torch.tensor([float(bool(stop))], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def train_step(self, batches: Iterator[dict[str, Tensor]]) -> dict[str, float]:
        opts = self.opts
        self.opt_g.zero_grad(set_to_none=True)
        if self.opt_d is not None:
            self.opt_d.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for micro in range(opts.accumulate):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in next(batches).items()}
            last = micro == opts.accumulate - 1
            with self._no_sync(last):
                parts = self._generator_loss(batch)
            for name, value in parts.items():
                totals[name] = totals.get(name, 0.0) + float(value) / opts.accumulate
        self.opt_g.step()
        self.sched_g.step()
        if self.opt_d is not None:
            self.opt_d.step()
        self.ema.update(self.generator, self.step)
        return totals

    @contextlib.contextmanager
    def _no_sync(self, last: bool) -> Iterator[None]:
        """Gradients are reduced between processes once per step, on its last micro-batch."""
        with contextlib.ExitStack() as stack:
            if not last:
                for module in (self.g, self.d):
                    if isinstance(module, DistributedDataParallel):
                        stack.enter_context(module.no_sync())
            yield

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _generator_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        opts = self.opts
        scale = 1.0 / opts.accumulate
        with self._autocast():
            sr = self.g(batch["lr"], batch["z"], batch["noise"]).float()
        hr = batch["hr"]
        parts: dict[str, Tensor] = {"l1": F.l1_loss(sr, hr)}
        loss = opts.l1 * parts["l1"]
        if self.perceptual is not None:
            with self._autocast():
                parts["perceptual"] = self.perceptual(sr, hr).float()
            loss = loss + (opts.perceptual or 0.0) * parts["perceptual"]
        if self.discriminator is not None:
            self.discriminator.requires_grad_(False)
            with self._autocast():
                parts["gan_g"] = losses.generator_adversarial(self.discriminator(sr).float())
            loss = loss + opts.gan * parts["gan_g"]
            self.discriminator.requires_grad_(True)
        parts["loss"] = loss
        (loss * scale).backward()
        if self.d is not None:
            with self._autocast():
                logits = self.d(torch.cat([hr, sr.detach()])).float()
            real, fake = logits.chunk(2)
            parts["gan_d"] = losses.discriminator_adversarial(real, fake)
            (parts["gan_d"] * scale).backward()
        for name, value in parts.items():
            number = float(value.detach())
            if not math.isfinite(number):
                raise TrainingError(
                    f"the {name} loss is {number} at step {self.step + 1}: lower the "
                    "learning rate (--lr, --d-lr) or the adversarial weight (--gan)"
                )
        return {k: v.detach() for k, v in parts.items()}

    @torch.no_grad()
    def _validate(self, val: dict[str, Tensor], report: Report) -> None:
        model = self.ema.model
        lr, z, noise = (val[k].to(self.device) for k in ("lr", "z", "noise"))
        hr = val["hr"].to(self.device)
        with self._autocast():
            sr = model(lr, z, noise).float().clamp(0, 1)
        scores = {
            "step": self.step,
            "val_psnr": float(psnr(sr, hr).mean()),
            "val_ssim": float(ssim(sr, hr).mean()),
        }
        self.validations.append(scores)
        report.record(scores)
        report.grid(self.step, lr, sr, hr)

    # Saving ----------------------------------------------------------------------------------

    def _save(self) -> None:
        if not self.proc.main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        published = self.ema.model if self.opts.publish_ema else self.generator
        weights = {k: v.detach().float().cpu() for k, v in published.state_dict().items()}
        save_checkpoint(self.out, self.config, weights)
        state = {
            "version": STATE_VERSION,
            "options": self.opts.to_dict(),
            "config": self.config.to_dict(),
            "step": self.step,
            "model": self.generator.state_dict(),
            "ema": self.ema.model.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "discriminator": self.discriminator.state_dict() if self.discriminator else None,
            "opt_d": self.opt_d.state_dict() if self.opt_d else None,
            "validations": self.validations,
            "rng": torch.get_rng_state(),
        }
        tmp = self.out / (STATE_FILE + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.out / STATE_FILE)


class _StopSignals:
    """SIGINT and SIGTERM, from the main thread, noted instead of raised: the step under way
    finishes (a state saved mid-step would not resume to the same weights); a second SIGINT
    interrupts at once, unsaved."""

    def __init__(self) -> None:
        self.received = 0
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._note)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if self.received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _ignore_interrupts(worker: int) -> None:
    """Data-loading processes leave Ctrl-C and SIGTERM (sent to a whole process group by a
    terminal, or by a service manager) to the main process, which finishes its step with their
    batches, then stops them (and they end by themselves when it is gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
