"""What training minimises beside L1: a perceptual loss on VGG19 features, and an adversarial
loss against a discriminator (`discriminator.py`)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# VGG19's convolutional stack in torchvision's layout ("features.N"), so that torchvision's
# published weights load as they are: channels per conv, "M" a 2×2 max-pool.
_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M"]
_VGG19 += [512, 512, 512, 512]
# Features compared, taken before their ReLU, and their weights: conv1_2, conv2_2, conv3_4,
# conv4_4, conv5_4 as ESRGAN and Real-ESRGAN weigh them.
FEATURE_WEIGHTS = {2: 0.1, 7: 0.1, 16: 1.0, 25: 1.0, 34: 1.0}
VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILE}"
_MEAN = (0.485, 0.456, 0.406)  # ImageNet's, which VGG was trained on
_STD = (0.229, 0.224, 0.225)


def default_vgg19_path() -> Path:
    """Where torchvision keeps the VGG19 weights it downloads (torch hub's cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


class PerceptualWeightsMissing(FileNotFoundError):
    """The VGG19 weights the perceptual loss needs are not where they were said to be."""


def vgg19_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG19:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            assert isinstance(item, int)
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU()]
            channels = item
    return nn.Sequential(*layers[: max(FEATURE_WEIGHTS) + 1])


class PerceptualLoss(nn.Module):
    """Weighted L1 between VGG19 features of the output and of the target (frozen VGG)."""

    mean: Tensor
    std: Tensor

    def __init__(self, weights_file: str | Path) -> None:
        super().__init__()
        path = Path(weights_file)
        if not path.is_file():
            raise PerceptualWeightsMissing(
                f"the perceptual loss needs VGG19's weights and there is no file at {path}. "
                f"Fetch torchvision's {VGG19_FILE} ({VGG19_URL}) and pass its path with "
                "--perceptual-weights, or train without it (--perceptual 0)"
            )
        self.features = vgg19_features()
        state = _read_state(path)
        wanted = {f"features.{k}": v for k, v in self.features.state_dict().items()}
        missing = sorted(set(wanted) - set(state))
        if missing:
            raise ValueError(f"{path} is not VGG19's weights: no {', '.join(missing[:4])}")
        self.features.load_state_dict(
            {k.removeprefix("features."): state[k] for k in wanted}, strict=True
        )
        self.features.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.features.eval()  # frozen: never in training mode
        return self

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        x = (output - self.mean) / self.std
        y = (target - self.mean) / self.std
        loss = output.new_zeros(())
        last = max(FEATURE_WEIGHTS)
        for i, layer in enumerate(self.features):
            x, y = layer(x), layer(y)
            if i in FEATURE_WEIGHTS:
                loss = loss + FEATURE_WEIGHTS[i] * F.l1_loss(x, y.detach())
            if i == last:
                break
        return loss


def _read_state(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a PyTorch weights file: {exc}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return state


def generator_adversarial(fake_logits: Tensor) -> Tensor:
    """The generator wants its outputs judged real."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def discriminator_adversarial(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake
