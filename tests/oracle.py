"""The reference `aura_sr` package, importable without torchvision (test oracle only).

`aura_sr` imports `torchvision.transforms` (ToTensor, ToPILImage) and
`torchvision.utils.save_image`. torchvision is not installed (its wheel would replace our
torch build), so minimal stand-ins are registered in `sys.modules` before the import.
The reference is CC BY-SA: it is used here to check our results, never from `src/`.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import torch
from PIL import Image


class _ToTensor:
    """uint8 HWC image → float CHW in [0, 1], as torchvision's ToTensor does."""

    def __call__(self, image: Image.Image) -> torch.Tensor:
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(255)


class _ToPILImage:
    """float CHW in [0, 1] → PIL image, truncating `x * 255` to 8 bits as torchvision does.

    Keeps the last float tensor converted (`last_tensor`) so tests can compare floats.
    """

    last_tensor: torch.Tensor | None = None

    def __call__(self, tensor: torch.Tensor) -> Image.Image:
        _ToPILImage.last_tensor = tensor.detach().clone()
        array = tensor.mul(255).byte().permute(1, 2, 0).numpy()
        return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def _save_image(*args: Any, **kwargs: Any) -> None:
    raise NotImplementedError("torchvision stand-in: save_image is not needed by the tests")


def load_reference() -> types.ModuleType:
    """Import and return the reference module `aura_sr`."""
    if "torchvision" not in sys.modules:
        tv = types.ModuleType("torchvision")
        transforms = types.ModuleType("torchvision.transforms")
        transforms.ToTensor = _ToTensor  # type: ignore[attr-defined]
        transforms.ToPILImage = _ToPILImage  # type: ignore[attr-defined]
        utils = types.ModuleType("torchvision.utils")
        utils.save_image = _save_image  # type: ignore[attr-defined]
        tv.transforms = transforms  # type: ignore[attr-defined]
        tv.utils = utils  # type: ignore[attr-defined]
        sys.modules.update(
            {"torchvision": tv, "torchvision.transforms": transforms, "torchvision.utils": utils}
        )
    import aura_sr

    return aura_sr


def last_float_output() -> torch.Tensor:
    """The float (C, H, W) image the reference converted to PIL last."""
    assert _ToPILImage.last_tensor is not None
    return _ToPILImage.last_tensor


def reference_upscaler(config: dict[str, Any], state: dict[str, torch.Tensor]) -> Any:
    """The reference's `AuraSR` (tiled upscaler) on the CPU, holding `state`."""
    aura_sr = load_reference()
    model = aura_sr.AuraSR(config, device="cpu")
    model.upsampler.load_state_dict(state, strict=True)
    model.upsampler.eval()
    return model


def reference_network(config: dict[str, Any], device: str = "cpu") -> torch.nn.Module:
    """The reference's UnetUpsampler for a config.json dict (device "meta": shapes only)."""
    aura_sr = load_reference()
    with torch.device(device):
        return aura_sr.UnetUpsampler(**config)
