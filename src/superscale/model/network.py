"""The AuraSR network (a GigaGAN-style upsampler), written from the published description.

Read top to bottom: style path (z → w → one modulation vector per adaptive conv), the
adaptive conv (a mix of kernel banks, modulated and demodulated as in StyleGAN2), the resnet
block, attention, then the U-Net: a 7×7 stem, an encoder without attention, a middle with a
transformer, a decoder with skip connections and attention in its coarse stages, and a 1×1
conv to RGB.

Two forms share this code:
- the *adaptive* network (the checkpoint's parameters, kernel banks included) takes a style
  noise z per forward; a batch of z gives every sample its own kernels, a single z is shared;
- the *folded* network (`AuraSR.fold(z)`): with one z for every tile, each adaptive conv's
  kernel is a constant, so it is computed once and the network is a plain CNN.

Submodule names and nesting follow the official checkpoint's state-dict keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .config import BLOCKS_PER_STAGE, AuraSRConfig

DEMOD_EPS = 1e-8
INPUT_NOISE_SCALE = 0.001  # the network adds this much Gaussian noise to its input


# Style path ----------------------------------------------------------------------------------


class EqualLinear(nn.Module):
    """Linear layer with an equalised learning rate: stored weights are scaled at run time."""

    def __init__(self, dim_in: int, dim_out: int, lr_mul: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim_out, dim_in))
        self.bias = nn.Parameter(torch.empty(dim_out))
        self.lr_mul = lr_mul

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.lr_mul, self.bias * self.lr_mul)


class StyleNetwork(nn.Module):
    """z (L2-normalised) → w, through `depth` × (EqualLinear, LeakyReLU 0.2)."""

    def __init__(self, dim_in: int, dim_out: int, depth: int, lr_mul: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [
                EqualLinear(dim_in if i == 0 else dim_out, dim_out, lr_mul),
                nn.LeakyReLU(0.2),
            ]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(F.normalize(z, dim=1))


# Convolutions ----------------------------------------------------------------------------------


def modulated_kernels(banks: Tensor, mod: Tensor, selector: Tensor) -> Tensor:
    """Kernels (b, out, in, k, k) for modulations `mod` (b, in) and bank selectors (b, n).

    The selector's softmax mixes the n banks; the mix is scaled per input channel by
    `mod + 1` and normalised per output channel (StyleGAN2 demodulation).
    """
    mix = torch.einsum("bn,noikl->boikl", selector.softmax(dim=-1), banks)
    kernels = mix * (mod + 1)[:, None, :, None, None]
    norm = kernels.square().sum(dim=(2, 3, 4), keepdim=True).clamp(min=DEMOD_EPS).rsqrt()
    return kernels * norm


class AdaptiveConv(nn.Module):
    """3×3 conv whose kernel is chosen and modulated by the style (no bias)."""

    def __init__(self, dim_in: int, dim_out: int, num_kernels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.weights = nn.Parameter(
            torch.empty(num_kernels, dim_out, dim_in, kernel_size, kernel_size)
        )

    def forward(self, x: Tensor, mod: Tensor, selector: Tensor) -> Tensor:
        pad = self.weights.shape[-1] // 2
        if mod.shape[0] == 1:  # one style for the whole batch: one kernel
            return F.conv2d(x, modulated_kernels(self.weights, mod, selector)[0], padding=pad)
        if mod.shape[0] != x.shape[0]:
            raise ValueError(f"{mod.shape[0]} styles for a batch of {x.shape[0]}")
        # A kernel per sample; built one sample at a time so that only one is ever in memory.
        outs = [
            F.conv2d(
                x[i : i + 1],
                modulated_kernels(self.weights, mod[i : i + 1], selector[i : i + 1])[0],
                padding=pad,
            )
            for i in range(x.shape[0])
        ]
        return torch.cat(outs)


class FoldedConv(nn.Module):
    """An adaptive conv with its style folded in: a plain 3×3 conv without bias."""

    def __init__(self, dim_in: int, dim_out: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim_out, dim_in, kernel_size, kernel_size))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, padding=self.weight.shape[-1] // 2)


class Block(nn.Module):
    """Adaptive (or folded) 3×3 conv, then SiLU."""

    def __init__(self, dim_in: int, dim_out: int, num_kernels: int, folded: bool) -> None:
        super().__init__()
        self.proj: AdaptiveConv | FoldedConv = (
            FoldedConv(dim_in, dim_out) if folded else AdaptiveConv(dim_in, dim_out, num_kernels)
        )

    def forward(self, x: Tensor, mods: Iterator[Tensor] | None) -> Tensor:
        if isinstance(self.proj, FoldedConv):
            return F.silu(self.proj(x))
        if mods is None:
            raise ValueError("an adaptive block needs style modulations")
        mod, selector = next(mods), next(mods)
        return F.silu(self.proj(x, mod, selector))


class ResnetBlock(nn.Module):
    """Two blocks plus a residual (a 1×1 conv where the width changes)."""

    def __init__(self, dim_in: int, dim_out: int, num_kernels: int, folded: bool) -> None:
        super().__init__()
        self.block1 = Block(dim_in, dim_out, num_kernels, folded)
        self.block2 = Block(dim_out, dim_out, num_kernels, folded)
        self.res_conv: nn.Module = (
            nn.Conv2d(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()
        )
        # The modulation widths this block consumes, in order: (mod, selector) per block.
        self.style_dims = [dim_in, num_kernels, dim_out, num_kernels]
        # Training: keep no activations inside the block, recompute them in the backward pass.
        self.checkpointed = False

    def forward(self, x: Tensor, mods: Iterator[Tensor] | None = None) -> Tensor:
        if self.checkpointed and mods is not None and torch.is_grad_enabled():
            taken = [next(mods) for _ in self.style_dims]  # the recomputation needs them again
            out: Tensor = checkpoint(self._run, x, taken, use_reentrant=False)
            return out
        return self._run(x, mods)

    def _run(self, x: Tensor, mods: Iterator[Tensor] | list[Tensor] | None) -> Tensor:
        if isinstance(mods, list):
            mods = iter(mods)
        return self.block2(self.block1(x, mods), mods) + self.res_conv(x)


# Attention ---------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """Channel RMS norm with a learnt gain: `normalize(x) * g * sqrt(C)`."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.empty(1, dim, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=1) * self.g * (x.shape[1] ** 0.5)


class UnusedScale(nn.Module):
    """Holds `attend.scale`: in the checkpoint, never read (attention scales by dim_head^-0.5)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.empty(1))


class Attention(nn.Module):
    """Pre-norm multi-head self-attention over all positions, with 1×1 conv projections."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = RMSNorm(dim)
        self.attend = UnusedScale()
        self.to_qkv = nn.Conv2d(dim, heads * dim_head * 3, 1, bias=False)
        self.to_out = nn.Conv2d(heads * dim_head, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        qkv = self.to_qkv(self.norm(x))
        # (b, 3·heads·d, h, w) → 3 × (b, heads, h·w, d), each contiguous: PyTorch's fused
        # CPU attention kernel takes only those (else it falls back to a 2-4× slower path).
        qkv = qkv.reshape(b, 3, self.heads, -1, h * w).permute(1, 0, 2, 4, 3).contiguous()
        q, k, v = qkv.unbind(dim=0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(-1, -2).reshape(b, -1, h, w))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__(
            RMSNorm(dim), nn.Conv2d(dim, dim * mult, 1), nn.GELU(), nn.Conv2d(dim * mult, dim, 1)
        )


class Transformer(nn.Module):
    """`depth` × (attention, feed-forward), each residual."""

    def __init__(self, dim: int, heads: int, dim_head: int, depth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([Attention(dim, heads, dim_head), FeedForward(dim)]) for _ in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        for attn, ff in cast(Any, self.layers):
            x = attn(x) + x
            x = ff(x) + x
        return x


class Upsample(nn.Module):
    """Nearest-neighbour ×2, then a 3×3 conv."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim_in, dim_out, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


# The U-Net ---------------------------------------------------------------------------------------


class AuraSR(nn.Module):
    """AuraSR's generator: a 64² tile (values in [0, 1]) → its 256² upscale (not clamped)."""

    def __init__(self, config: AuraSRConfig, *, folded: bool = False) -> None:
        super().__init__()
        self.config = config
        self.folded = folded
        c = config
        k = c.num_conv_kernels
        heads, dim_head = c.self_attn_heads, c.self_attn_dim_head

        def resnet(dim_in: int, dim_out: int) -> ResnetBlock:
            return ResnetBlock(dim_in, dim_out, k, folded)

        def attention(dim: int, depth: int, full: bool) -> nn.Module | None:
            return Transformer(dim, heads, dim_head, depth) if full else None

        if not folded:
            s = c.style_network
            self.style_network = StyleNetwork(s.dim_in, s.dim_out, s.depth, s.lr_mul)

        down_dims, up_dims = c.down_dims, c.up_dims
        self.init_conv = nn.Conv2d(c.channels, down_dims[0], 7, padding=3)

        # Encoder: per stage [6 resnet blocks], [attention or None, stride-2 conv].
        self.downs = nn.ModuleList()
        for (dim_in, dim_out), full, depth in zip(
            pairwise(down_dims), c.full_attn, c.attn_depths, strict=False
        ):
            blocks = nn.ModuleList(resnet(dim_in, dim_in) for _ in range(BLOCKS_PER_STAGE))
            down = nn.Conv2d(dim_in, dim_out, 3, stride=2, padding=1)
            self.downs.append(
                nn.ModuleList(
                    [blocks, nn.ModuleList(cast(Any, [attention(dim_in, depth, full), down]))]
                )
            )

        mid_dim = up_dims[-1]
        self.mid_block1 = resnet(mid_dim, mid_dim)
        self.mid_attn = Transformer(mid_dim, heads, dim_head, c.mid_attn_depth)
        self.mid_block2 = resnet(mid_dim, mid_dim)

        # Decoder: per stage [6 resnet blocks], [upsample, attention or None]; the first
        # len(downs) stages concatenate an encoder skip before each block.
        self.ups = nn.ModuleList()
        up_pairs = list(pairwise(up_dims))[::-1]
        for i, ((dim_in, dim_out), full, depth) in enumerate(
            zip(up_pairs, c.full_attn[::-1], c.attn_depths[::-1], strict=True)
        ):
            block_in = dim_in * 2 if i < len(self.downs) else dim_in
            blocks = nn.ModuleList(resnet(block_in, dim_in) for _ in range(BLOCKS_PER_STAGE))
            up = Upsample(mid_dim if i == 0 else dim_out, dim_in)
            self.ups.append(
                nn.ModuleList(
                    [blocks, nn.ModuleList(cast(Any, [up, attention(dim_in, depth, full)]))]
                )
            )

        self.final_res_block = resnet(c.dim, c.dim)
        self.final_to_rgb = nn.Conv2d(c.dim, c.channels, 1)

        if not folded:
            style_dims = [d for block in self.resnet_blocks() for d in block.style_dims]
            self.style_dims = style_dims
            self.style_to_conv_modulations = nn.Linear(c.style_network.dim_out, sum(style_dims))

    def checkpoint_activations(self, on: bool = True) -> None:
        """Gradient checkpointing (training): each resnet block's activations are recomputed
        in the backward pass instead of kept, for a fraction of the memory."""
        for block in self.resnet_blocks():
            block.checkpointed = on

    def resnet_blocks(self) -> Iterator[ResnetBlock]:
        """Every resnet block, in the order the forward pass runs them."""
        for stage in self.downs:
            yield from cast(Any, stage)[0]
        yield self.mid_block1
        yield self.mid_block2
        for stage in self.ups:
            yield from cast(Any, stage)[0]
        yield self.final_res_block

    def modulations(self, z: Tensor) -> list[Tensor]:
        """z (b, dim_in) → every adaptive conv's (mod, selector), in forward order."""
        if self.folded:
            raise RuntimeError("a folded network has no style path")
        styles = self.style_network(z)
        return list(self.style_to_conv_modulations(styles).split(self.style_dims, dim=-1))

    def forward(self, x: Tensor, z: Tensor | None = None, noise: Tensor | None = None) -> Tensor:
        """x (b, 3, 64, 64) in [0, 1]; z (b or 1, dim_in): per-sample or shared style noise.

        `noise` is the input augmentation the model was trained with (the caller draws it,
        `INPUT_NOISE_SCALE * randn_like(x)`, so that runs are reproducible); None adds none.
        """
        if noise is not None:
            x = (x + noise).clamp(0, 1)
        mods: Iterator[Tensor] | None = None
        if not self.folded:
            if z is None:
                raise ValueError("the adaptive network needs style noise z")
            mods = iter(self.modulations(z))

        # The stem and the output conv may hold fp32 while the body runs in bf16/fp16 (see
        # fold_network): cast at their boundaries (no-ops when everything shares a dtype).
        body_dtype = _dtype_of(self.final_res_block.block1)
        x = self.init_conv(x.to(_dtype_of(self.init_conv))).to(body_dtype)
        skips = []
        for blocks, (attn, down) in cast(Any, self.downs):
            for block in blocks:
                x = block(x, mods)
                skips.append(x)
            if attn is not None:
                x = attn(x)
            x = down(x)

        x = self.mid_block1(x, mods)
        x = self.mid_attn(x)
        x = self.mid_block2(x, mods)

        skip_scale = self.config.skip_scale
        for blocks, (up, attn) in cast(Any, self.ups):
            x = up(x)
            for block in blocks:
                if skips:
                    x = torch.cat((x, skips.pop() * skip_scale), dim=1)
                x = block(x, mods)
            if attn is not None:
                x = attn(x)

        x = self.final_res_block(x, mods)
        return self.final_to_rgb(x.to(_dtype_of(self.final_to_rgb)))

    @torch.no_grad()
    def fold(self, z: Tensor, dtype: torch.dtype | None = None) -> AuraSR:
        """The plain CNN this network is for one shared style noise z (1, dim_in).

        Every parameter of the result is a new tensor: it shares no storage with this one.
        """
        if self.folded:
            raise RuntimeError("already folded")
        params = dict(self.named_parameters())
        weight = self.init_conv.weight
        return fold_network(
            self.config, z, params.__getitem__, dtype or weight.dtype, weight.device
        )


def _dtype_of(module: nn.Module) -> torch.dtype:
    """A layer's compute dtype: its parameters', or its own `dtype` (prepacked layers)."""
    dtype = getattr(module, "dtype", None)
    return dtype if isinstance(dtype, torch.dtype) else next(module.parameters()).dtype


STYLE_PREFIXES = ("style_network.", "style_to_conv_modulations.")
FP32_LAYERS = ("init_conv.", "final_to_rgb.")


@torch.no_grad()
def fold_network(
    config: AuraSRConfig,
    z: Tensor,
    get: Callable[[str], Tensor],
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
) -> AuraSR:
    """Fold the shared style noise z (1, dim_in) into a plain CNN, reading the adaptive
    network's parameters by state-dict name through `get`.

    Reading one tensor at a time (from a checkpoint file, say) keeps memory at the folded
    network plus one kernel bank. Kernels are mixed, modulated and demodulated in fp32, then
    cast to `dtype`. The result takes and returns fp32 whatever `dtype` its body computes in.
    """
    if z.ndim != 2 or z.shape[0] != 1:
        raise ValueError("fold takes a single z of shape (1, dim_in)")
    with torch.device("meta"):
        adaptive = AuraSR(config)
        folded = AuraSR(config, folded=True)

    # The style path is small: load it for real, and compute every modulation at once.
    # Folding runs in fp32 at least, whatever the checkpoint's storage dtype.
    fold_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    style_state = {
        k: get(k).to(device, fold_dtype)
        for k in adaptive.state_dict()
        if k.startswith(STYLE_PREFIXES)
    }
    style = nn.ModuleDict(
        {
            "style_network": adaptive.style_network,
            "style_to_conv_modulations": adaptive.style_to_conv_modulations,
        }
    )
    style.load_state_dict(style_state, strict=True, assign=True)
    mods = iter(adaptive.modulations(z.to(device, fold_dtype)))

    names = {id(m): n for n, m in adaptive.named_modules()}
    state: dict[str, Tensor] = {}
    for block in adaptive.resnet_blocks():
        for sub in (block.block1, block.block2):
            name = names[id(sub)]
            banks = get(f"{name}.proj.weights").to(device, fold_dtype)
            kernel = modulated_kernels(banks, next(mods), next(mods))[0]
            state[f"{name}.proj.weight"] = kernel.to(dtype)
            del banks
    for name in folded.state_dict():
        if name not in state:
            # The stem and the output conv stay fp32: they cost ~0.1% of the FLOPs, and an
            # output rounded to bf16 would be off by up to 2e-3 at 0.5 (its step there is 2^-8).
            keep = name.startswith(FP32_LAYERS) and dtype.itemsize < 4
            state[name] = get(name).to(device, torch.float32 if keep else dtype, copy=True)
    folded.load_state_dict(state, strict=True, assign=True)
    return folded.eval().requires_grad_(False)
