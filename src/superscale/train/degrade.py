"""Low-resolution inputs made from high-resolution crops, on the fly.

Bicubic 4× downscaling alone by default. Optionally the degradations real photographs carry,
as Real-ESRGAN's "high-order" pipeline chains them (Wang et al., 2021): a blur, a resize, noise
and JPEG re-compression, applied once (first order) or twice (second order), then the final
bicubic resize to the network's input size. Every random choice comes from the `rng` the
caller passes, so one sample's degradation depends on its seed alone (resumable, and the same
in every data-loading process).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor


@dataclass(frozen=True)
class Degradation:
    """Each stage applies with its probability; ranges are drawn uniformly per sample."""

    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.2, 3.0)  # Gaussian kernel σ, in pixels
    resize_prob: float = 0.0
    resize_scale: tuple[float, float] = (0.5, 1.5)  # intermediate resize factor
    noise_prob: float = 0.0
    noise_sigma: tuple[float, float] = (1.0, 25.0)  # Gaussian noise σ, in 8-bit levels
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (30, 95)
    second_order_prob: float = 0.0  # the chain applied a second time

    def __post_init__(self) -> None:
        for name in ("blur_prob", "resize_prob", "noise_prob", "jpeg_prob", "second_order_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], not {value}")
        for name in ("blur_sigma", "resize_scale", "noise_sigma", "jpeg_quality"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be a range 0 < low <= high, not {(low, high)}")
        if self.jpeg_quality[1] > 100:
            raise ValueError("jpeg_quality goes up to 100")

    @classmethod
    def real_world(cls) -> Degradation:
        """Every stage on, second order half the time: for photographs of unknown history."""
        return cls(0.8, (0.2, 3.0), 0.8, (0.5, 1.5), 0.8, (1.0, 25.0), 0.8, (30, 95), 0.5)

    def apply(self, hr: Tensor, out_size: int, rng: np.random.Generator) -> Tensor:
        """`hr` (3, H, W) in [0, 1] → (3, out_size, out_size) in [0, 1]."""
        x = hr.unsqueeze(0)
        x = self._chain(x, rng)
        if self.second_order_prob and rng.random() < self.second_order_prob:
            x = self._chain(x, rng)
        return resize(x, out_size).clamp(0, 1)[0]

    def _chain(self, x: Tensor, rng: np.random.Generator) -> Tensor:
        if self.blur_prob and rng.random() < self.blur_prob:
            x = gaussian_blur(x, float(rng.uniform(*self.blur_sigma)))
        if self.resize_prob and rng.random() < self.resize_prob:
            side = max(8, round(x.shape[-1] * float(rng.uniform(*self.resize_scale))))
            x = resize(x, side)
        if self.noise_prob and rng.random() < self.noise_prob:
            sigma = float(rng.uniform(*self.noise_sigma)) / 255
            x = x + torch.from_numpy(rng.standard_normal(x.shape, dtype=np.float32)) * sigma
        if self.jpeg_prob and rng.random() < self.jpeg_prob:
            x = jpeg(x, int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1)))
        return x.clamp(0, 1)


def resize(x: Tensor, side: int) -> Tensor:
    """Bicubic resize of (b, c, h, w) to side² with antialiasing (what downscaling needs)."""
    if x.shape[-1] == side and x.shape[-2] == side:
        return x
    return F.interpolate(x, size=(side, side), mode="bicubic", antialias=True, align_corners=False)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    radius = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def jpeg(x: Tensor, quality: int) -> Tensor:
    """A JPEG round trip at `quality` (Pillow's encoder, 4:2:0 as most cameras write)."""
    out = []
    for image in x:
        pixels = (image.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
        decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        out.append(torch.from_numpy(decoded.copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(out)
