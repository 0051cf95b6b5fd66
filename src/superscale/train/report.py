"""What a run shows and writes as it goes (process 0 only): a progress bar with the loss, a
JSON line per logged step and per validation, TensorBoard scalars where the `tensorboard`
package is installed, and validation grids."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

LOG_FILE = "log.jsonl"


class Report:
    def __init__(self, out: Path, *, steps: int, start: int, progress: bool) -> None:
        self.out = out
        self._bar: Any = None
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=steps, initial=start, unit="step", dynamic_ncols=True)
        self._writer: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            pass
        else:
            self._writer = SummaryWriter(str(out / "tensorboard"), purge_step=start or None)
        self._since, self._since_step = time.perf_counter(), start

    def stepped(self, step: int, losses: dict[str, float], log: bool) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{losses['loss']:.4f}")
        if log:
            now = time.perf_counter()
            rate = (step - self._since_step) / (now - self._since)
            self._since, self._since_step = now, step
            self.record({"step": step, **losses, "steps_per_s": rate})

    def record(self, values: dict[str, Any]) -> None:
        """One JSON line (and its scalars); `values["step"]` says when."""
        with (self.out / LOG_FILE).open("a") as f:
            f.write(json.dumps(values) + "\n")
        if self._writer is not None:
            for name, value in values.items():
                if name != "step":
                    self._writer.add_scalar(name, value, values["step"])

    def grid(self, step: int, lr: Tensor, sr: Tensor, hr: Tensor, rows: int = 4) -> Path:
        """A row per image: the input (nearest, to the output's size), ours, the target."""
        up = F.interpolate(lr[:rows], size=hr.shape[-2:], mode="nearest")
        lines = [torch.cat(triple, dim=-1) for triple in zip(up, sr, hr, strict=False)]
        pixels = (torch.cat(lines, dim=-2).clamp(0, 1) * 255).round().byte()
        path = self.out / "samples" / f"step-{step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy()).save(path)
        return path

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
