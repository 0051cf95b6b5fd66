"""The discriminator of the adversarial loss: a U-Net with spectral normalisation, as
Real-ESRGAN introduced it for super-resolution (Wang et al., 2021, section 3.3).

Why this one: it judges every pixel (a realness map, not one number per image), which gives an
upscaler the local feedback that textures need, and its spectral normalisation is the
regulariser that keeps the game stable without a second backward pass (R1's). GigaGAN's own
discriminator is multi-scale and text-conditioned: more than an image-only upscaler uses.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


class UNetDiscriminator(nn.Module):
    """(b, 3, H, W) in [0, 1] → (b, 1, H, W) logits; H, W divisible by 8."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        c = channels
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        # Down: three stride-2 convs; up: back to full size, adding the encoder's maps.
        self.down = nn.ModuleList(
            spectral_norm(nn.Conv2d(a, b, 4, stride=2, padding=1, bias=False))
            for a, b in ((c, 2 * c), (2 * c, 4 * c), (4 * c, 8 * c))
        )
        self.up = nn.ModuleList(
            spectral_norm(nn.Conv2d(a, b, 3, padding=1, bias=False))
            for a, b in ((8 * c, 4 * c), (4 * c, 2 * c), (2 * c, c))
        )
        self.head = nn.Sequential(
            spectral_norm(nn.Conv2d(c, c, 3, padding=1, bias=False)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(c, c, 3, padding=1, bias=False)),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c, 1, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = F.leaky_relu(self.stem(x), 0.2)
        skips = [x]
        for conv in self.down:
            x = F.leaky_relu(conv(x), 0.2)
            skips.append(x)
        skips.pop()
        for conv in self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = F.leaky_relu(conv(x), 0.2) + skips.pop()
        return self.head(x)
