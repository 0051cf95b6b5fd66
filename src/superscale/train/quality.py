"""PSNR and SSIM of images in [0, 1] (the validation's measures)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_C1, _C2 = 0.01**2, 0.03**2  # Wang et al. (2004) for a dynamic range of 1


def psnr(output: Tensor, target: Tensor) -> Tensor:
    """Per image of a (b, c, h, w) batch, in dB (outputs clamped to [0, 1] first)."""
    mse = (output.clamp(0, 1) - target).square().flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp(min=1e-10))


def ssim(output: Tensor, target: Tensor) -> Tensor:
    """Per image: SSIM with an 11×11 Gaussian window (σ 1.5), averaged over channels and
    over the positions the window fits in whole."""
    x, y = output.clamp(0, 1).double(), target.double()
    t = torch.arange(SSIM_WINDOW, dtype=torch.float64) - SSIM_WINDOW // 2
    g = torch.exp(-(t**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    c = x.shape[1]
    window = (g[:, None] * g[None, :]).expand(c, 1, SSIM_WINDOW, SSIM_WINDOW)

    def blur(v: Tensor) -> Tensor:
        return F.conv2d(v, window, groups=c)

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + _C1) * (2 * cov + _C2)) / ((mx**2 + my**2 + _C1) * (vx + vy + _C2))
    return s.flatten(1).mean(1).float()
