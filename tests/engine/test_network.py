"""Our network against the reference's: same state-dict layout, same forward."""

from __future__ import annotations

import pytest
import torch

from oracle import reference_network
from superscale.model import RELEASED_CONFIG, SMALL_CONFIG, AuraSR, ConfigError, random_state_dict
from superscale.model.config import AuraSRConfig


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_released_config_state_dict_matches_reference() -> None:
    """Key set and shapes of the released config, built on the meta device (nothing runs)."""
    with torch.device("meta"):
        ours = _shapes(AuraSR(RELEASED_CONFIG))
    ref = _shapes(reference_network(RELEASED_CONFIG.to_dict(), device="meta"))
    assert len(ref) == 268
    assert ours == ref
    assert sum(torch.Size(s).numel() for s in ours.values()) == 617_554_917


def test_small_config_state_dict_matches_reference() -> None:
    with torch.device("meta"):
        ours = _shapes(AuraSR(SMALL_CONFIG))
    assert ours == _shapes(reference_network(SMALL_CONFIG.to_dict(), device="meta"))


@pytest.fixture(scope="module")
def pair() -> tuple[AuraSR, torch.nn.Module]:
    """Our network and the reference's, holding the same random weights."""
    state = random_state_dict(SMALL_CONFIG, seed=3)
    ref = reference_network(SMALL_CONFIG.to_dict())
    ref.load_state_dict(state, strict=True)
    with torch.device("meta"):
        ours = AuraSR(SMALL_CONFIG)
    ours.load_state_dict(state, strict=True, assign=True)
    return ours.eval(), ref.eval()


def _reference_forward(ref: torch.nn.Module, x: torch.Tensor, z: torch.Tensor, seed: int):
    # The reference draws its input noise with torch.randn_like from the global generator.
    torch.manual_seed(seed)
    return ref(x, noise=z)


def _input_noise(x: torch.Tensor, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn_like(x) * 0.001


@torch.no_grad()
def test_forward_per_sample_z_equals_reference(pair: tuple[AuraSR, torch.nn.Module]) -> None:
    ours, ref = pair
    gen = torch.Generator().manual_seed(0)
    x, z = torch.rand(3, 3, 64, 64, generator=gen), torch.randn(3, 128, generator=gen)
    expected = _reference_forward(ref, x, z, seed=11)
    got = ours(x, z, _input_noise(x, seed=11))
    assert got.shape == (3, 3, 256, 256)
    assert expected.std() > 0.01  # the comparison means something: outputs vary
    assert (got - expected).abs().max() <= 1e-4


@torch.no_grad()
def test_folded_shared_z_equals_reference_fed_that_z(pair: tuple[AuraSR, torch.nn.Module]) -> None:
    ours, ref = pair
    gen = torch.Generator().manual_seed(1)
    x, z = torch.rand(2, 3, 64, 64, generator=gen), torch.randn(1, 128, generator=gen)
    expected = _reference_forward(ref, x, z.expand(2, -1), seed=12)
    noise = _input_noise(x, seed=12)
    assert (ours.fold(z)(x, noise=noise) - expected).abs().max() <= 1e-4
    assert (ours(x, z, noise) - expected).abs().max() <= 1e-4  # shared z, unfolded
    other = ours.fold(torch.randn(1, 128, generator=gen))(x, noise=noise)
    assert (other - expected).abs().max() > 1e-3  # a different z is a different network


def test_config_errors_are_clear() -> None:
    with pytest.raises(ConfigError, match="unknown config keys"):
        AuraSRConfig.from_dict({"dim": 8, "dimm": 3})
    with pytest.raises(ConfigError, match="image_size"):
        AuraSRConfig.from_dict({"image_size": 512})
    assert AuraSRConfig.from_dict(SMALL_CONFIG.to_dict()) == SMALL_CONFIG
