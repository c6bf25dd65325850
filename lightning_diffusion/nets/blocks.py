"""Building blocks shared by the ADM-style networks: embeddings, residual and attention blocks, paths.

Group normalisation rule: every ``GroupNorm`` uses ``group_count(channels, groups)`` groups, the
largest divisor of ``channels`` that does not exceed ``groups`` (so 96 channels with ``groups=32``
use 32 groups, 12 channels with ``groups=8`` use 6), which keeps any width valid without surprises.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_diffusion.config import ConfigError

NOISE_LEVEL_SCALE = 1000.0
MAX_PERIOD = 10000.0


def group_count(channels: int, groups: int) -> int:
    """The largest divisor of ``channels`` not above ``groups``, so GroupNorm accepts any width."""
    return next(g for g in range(min(groups, channels), 0, -1) if channels % g == 0)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm over ``channels`` with ``group_count(channels, groups)`` groups."""
    return nn.GroupNorm(group_count(channels, groups), channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module``, so a residual branch starts as the identity."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


def sinusoidal_embedding(noise_level: Tensor, dim: int) -> Tensor:
    """ADM sinusoidal features (cos, sin) of ``1000 * noise_level``, shape (B, dim), in float32."""
    half = dim // 2
    frequencies = torch.exp(
        -math.log(MAX_PERIOD) * torch.arange(half, dtype=torch.float32, device=noise_level.device) / half
    )
    angles = NOISE_LEVEL_SCALE * noise_level.float()[:, None] * frequencies[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    return F.pad(embedding, (0, dim - 2 * half))


class NoiseLevelEmbedding(nn.Module):
    """Sinusoidal features of the noise level followed by a two-layer MLP to the embedding width."""

    def __init__(self, base_dim: int, emb_dim: int) -> None:
        super().__init__()
        self.base_dim = base_dim
        self.mlp = nn.Sequential(nn.Linear(base_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, noise_level: Tensor) -> Tensor:
        features = sinusoidal_embedding(noise_level, self.base_dim)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class ResBlock(nn.Module):
    """Residual block conditioned on an embedding by scale-shift GroupNorm (ADM's AdaGN)."""

    def __init__(
        self, in_channels: int, out_channels: int, emb_dim: int, dropout: float, groups: int
    ) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            group_norm(in_channels, groups), nn.SiLU(), nn.Conv2d(in_channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_channels))
        self.out_norm = group_norm(out_channels, groups)
        self.out_layers = nn.Sequential(
            nn.SiLU(), nn.Dropout(dropout), zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x)
        scale, shift = self.emb_layers(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.out_norm(h) * (1 + scale) + shift
        return self.skip(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over spatial positions, residual with a zero-initialised output.

    With ``context_dim`` set, the keys and values also include projected context tokens (e.g. a
    caption's token embeddings): GLIDE's cross-attention (Nichol et al. 2022, Sec. 3); padded tokens
    are masked out."""

    def __init__(self, channels: int, num_heads: int, groups: int, context_dim: int | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.context_kv = None if context_dim is None else nn.Linear(context_dim, 2 * channels)
        self.proj_out = zero_module(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor, context: Tensor | None = None, context_mask: Tensor | None = None) -> Tensor:
        b, c, h, w = x.shape
        heads, head_dim = self.num_heads, c // self.num_heads
        qkv = self.qkv(self.norm(x)).reshape(b, 3, heads, head_dim, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)
        mask = None
        if self.context_kv is not None and context is not None:
            context_k, context_v = (
                self.context_kv(context).reshape(b, -1, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            )
            k, v = torch.cat([k, context_k.to(k.dtype)], dim=2), torch.cat([v, context_v.to(v.dtype)], dim=2)
            if context_mask is not None:
                image_tokens = torch.ones(b, h * w, dtype=torch.bool, device=x.device)
                mask = torch.cat([image_tokens, context_mask], dim=1)[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))


class ResAttnLayer(nn.Module):
    """A ResBlock optionally followed by (self- or cross-) attention: one layer of a U-Net level."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_dim: int,
        dropout: float,
        groups: int,
        num_heads: int | None,
        context_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.res = ResBlock(in_channels, out_channels, emb_dim, dropout, groups)
        self.attn = (
            None if num_heads is None else AttentionBlock(out_channels, num_heads, groups, context_dim)
        )

    def forward(
        self, x: Tensor, emb: Tensor, context: Tensor | None = None, context_mask: Tensor | None = None
    ) -> Tensor:
        h = self.res(x, emb)
        return h if self.attn is None else self.attn(h, context, context_mask)


class Downsample(nn.Module):
    """Halve height and width with a stride-2 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double height and width by nearest-neighbour interpolation followed by a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def validate_architecture(
    channels: Sequence[int], num_res_blocks: int, attention_levels: Sequence[int], num_heads: int, groups: int
) -> None:
    """Raise ``ConfigError`` naming the bad argument if the U-Net hyperparameters cannot build a net."""
    if not channels or any(c <= 0 for c in channels):
        raise ConfigError(f"channels must be a non-empty list of positive widths, got {list(channels)}")
    if groups < 1:
        raise ConfigError(f"groups must be at least 1, got {groups}")
    if num_res_blocks < 1:
        raise ConfigError(f"num_res_blocks must be at least 1, got {num_res_blocks}")
    bad_levels = [level for level in attention_levels if not 0 <= level < len(channels)]
    if bad_levels:
        raise ConfigError(
            f"attention_levels {bad_levels} are out of range: with {len(channels)} levels "
            f"the valid indices are 0..{len(channels) - 1}"
        )
    widths = [channels[level] for level in attention_levels] + [channels[-1]]
    if num_heads < 1 or any(width % num_heads for width in widths):
        raise ConfigError(
            f"num_heads={num_heads} must be positive and divide the width of every attention level "
            f"(widths {sorted(set(widths))}, the last one being the middle block)"
        )


class DownPath(nn.Module):
    """Input convolution, the down levels and the middle block of an ADM U-Net.

    ``forward`` returns the middle-block features and the skip activations (input conv, every
    ResAttnLayer and every Downsample, in order), whose widths are listed in ``skip_channels``.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        num_res_blocks: int,
        attention_levels: Sequence[int],
        num_heads: int,
        dropout: float,
        groups: int,
        emb_dim: int,
        context_dim: int | None = None,
    ) -> None:
        super().__init__()
        validate_architecture(channels, num_res_blocks, attention_levels, num_heads, groups)
        self.in_channels = in_channels
        self.size_factor = 2 ** (len(channels) - 1)
        self.input_conv = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.levels = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        self.skip_channels = [channels[0]]
        width = channels[0]
        for level, level_width in enumerate(channels):
            heads = num_heads if level in attention_levels else None
            layers = nn.ModuleList()
            for _ in range(num_res_blocks):
                layers.append(ResAttnLayer(width, level_width, emb_dim, dropout, groups, heads, context_dim))
                width = level_width
                self.skip_channels.append(width)
            self.levels.append(layers)
            if level < len(channels) - 1:
                self.downsamples.append(Downsample(width))
                self.skip_channels.append(width)
        self.middle = nn.ModuleList(
            [
                ResAttnLayer(width, width, emb_dim, dropout, groups, num_heads, context_dim),
                ResAttnLayer(width, width, emb_dim, dropout, groups, None),
            ]
        )
        self.out_channels = width

    def check_input(self, x: Tensor, noise_level: Tensor) -> None:
        """Raise ``ValueError`` saying what is wrong if ``x`` or ``noise_level`` cannot go through the net."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        if height % self.size_factor or width % self.size_factor:
            levels = len(self.levels)
            fit = "x".join(
                str(self.size_factor * max(1, round(n / self.size_factor))) for n in (height, width)
            )
            raise ValueError(
                f"image size {height}x{width} does not fit a network with {levels} levels: height and "
                f"width must be multiples of 2**({levels}-1) = {self.size_factor} (e.g. {fit}), "
                "so pad/resize the images or use fewer levels in `channels`"
            )
        if noise_level.shape != (x.shape[0],):
            raise ValueError(
                f"noise_level must have shape (B,) = ({x.shape[0]},), got {tuple(noise_level.shape)}"
            )

    def forward(
        self, x: Tensor, emb: Tensor, context: Tensor | None = None, context_mask: Tensor | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        h = self.input_conv(x)
        skips = [h]
        for index, layers in enumerate(self.levels):
            for layer in layers:
                h = layer(h, emb, context, context_mask)
                skips.append(h)
            if index < len(self.downsamples):
                h = self.downsamples[index](h)
                skips.append(h)
        for layer in self.middle:
            h = layer(h, emb, context, context_mask)
        return h, skips


def output_head(in_channels: int, out_channels: int, groups: int) -> nn.Sequential:
    """GroupNorm, SiLU and a zero-initialised 3x3 convolution: the U-Net's output layer."""
    return nn.Sequential(
        group_norm(in_channels, groups),
        nn.SiLU(),
        zero_module(nn.Conv2d(in_channels, out_channels, 3, padding=1)),
    )
