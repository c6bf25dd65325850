"""ADM-style U-Net denoiser conditioned on the noise level and, optionally, a condition vector."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightning_diffusion.config import ConfigError, Configurable
from lightning_diffusion.nets.blocks import DownPath, NoiseLevelEmbedding, ResAttnLayer, Upsample, output_head


class UNet(Configurable, nn.Module):
    """ADM U-Net: AdaGN residual blocks, attention at chosen levels, skip connections, zero-init output.

    ``channels[i]`` is the width at level ``i`` (level 0 is full resolution, each further level halves
    H and W); ``attention_levels`` lists the levels with self-attention (the middle block always has
    it). With ``cond_dim`` set, ``forward`` requires a ``cond`` vector of that size, projected and
    added to the noise-level embedding of width ``emb_dim = 4 * channels[0]``. With ``context_dim``
    set, the attention layers also attend to ``context`` tokens of that width (cross-attention).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        channels: Sequence[int] = (32, 64),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (1,),
        num_heads: int = 4,
        dropout: float = 0.0,
        cond_dim: int | None = None,
        groups: int = 8,
        context_dim: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("cond_dim", cond_dim), ("context_dim", context_dim)):
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be a positive int or None, got {value}")
        self.in_channels = in_channels
        self.out_channels = in_channels if out_channels is None else out_channels
        self.cond_dim = cond_dim
        self.context_dim = context_dim
        self.emb_dim = 4 * channels[0]
        self.noise_embed = NoiseLevelEmbedding(channels[0], self.emb_dim)
        self.cond_proj = None if cond_dim is None else nn.Linear(cond_dim, self.emb_dim)
        self.down = DownPath(
            in_channels,
            channels,
            num_res_blocks,
            attention_levels,
            num_heads,
            dropout,
            groups,
            self.emb_dim,
            context_dim,
        )
        self.up_levels, self.upsamples = self._build_up_path(
            channels, num_res_blocks, attention_levels, num_heads, dropout, groups
        )
        self.out = output_head(channels[0], self.out_channels, groups)

    def _build_up_path(
        self,
        channels: Sequence[int],
        num_res_blocks: int,
        attention_levels: Sequence[int],
        num_heads: int,
        dropout: float,
        groups: int,
    ) -> tuple[nn.ModuleList, nn.ModuleList]:
        """Up levels (deepest first), each consuming ``num_res_blocks + 1`` skips, and their upsamplers."""
        skip_channels = list(self.down.skip_channels)
        width = self.down.out_channels
        up_levels, upsamples = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(channels))):
            heads = num_heads if level in attention_levels else None
            layers = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                in_width = width + skip_channels.pop()
                width = channels[level]
                layers.append(
                    ResAttnLayer(in_width, width, self.emb_dim, dropout, groups, heads, self.context_dim)
                )
            up_levels.append(layers)
            if level > 0:
                upsamples.append(Upsample(width))
        return up_levels, upsamples

    def forward(
        self,
        x: Tensor,
        noise_level: Tensor,
        cond: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
    ) -> Tensor:
        """Predict the (B, out_channels, H, W) target for noisy images ``x`` at ``noise_level`` (B,);
        ``context`` (B, L, context_dim) with ``context_mask`` (B, L, True = real token) if built for it."""
        self.down.check_input(x, noise_level)
        self._check_context(context, x.shape[0])
        emb = self.noise_embed(noise_level) + self._embed_condition(cond, x.shape[0])
        h, skips = self.down(x, emb, context, context_mask)
        for index, layers in enumerate(self.up_levels):
            for layer in layers:
                h = layer(torch.cat([h, skips.pop()], dim=1), emb, context, context_mask)
            if index < len(self.upsamples):
                h = self.upsamples[index](h)
        return self.out(h)

    def check_image_size(self, height: int, width: int) -> None:
        """Refuse (at fit start, with the fix) images this U-Net cannot halve at each of its levels."""
        factor = self.down.size_factor
        if height % factor == 0 and width % factor == 0:
            return
        levels = len(self.down.levels)
        fitting = 1 + min((size & -size).bit_length() - 1 for size in (height, width))
        multiple = factor * -(-max(height, width) // factor)
        raise ConfigError(
            f"the U-Net halves the images {levels - 1} times (channels lists {levels} levels), so height "
            f"and width must be multiples of 2**{levels - 1} = {factor}, but they are {height}x{width}; "
            f"use at most {fitting} levels in model.init_args.net.init_args.channels, or pad the images to "
            f"{multiple}x{multiple} (data.init_args.image_size: {multiple}, resize: pad, and model "
            f"image_shape to match)."
        )

    def _check_context(self, context: Tensor | None, batch: int) -> None:
        """Errors saying what is wrong when context tokens are missing, unexpected or of the wrong shape."""
        if (context is None) != (self.context_dim is None):
            raise ValueError(
                f"this UNet was built with context_dim={self.context_dim} but forward got "
                f"{'no' if context is None else 'a'} `context`; pass context tokens exactly when "
                "context_dim is set"
            )
        if context is not None and (
            context.ndim != 3 or context.shape[0] != batch or context.shape[2] != self.context_dim
        ):
            raise ValueError(
                f"context must have shape ({batch}, L, {self.context_dim}), got {tuple(context.shape)}"
            )

    def _embed_condition(self, cond: Tensor | None, batch: int) -> Tensor | float:
        """The projected condition to add to the noise embedding; errors when it is missing or unexpected."""
        if self.cond_proj is None:
            if cond is not None:
                raise ValueError(
                    "this UNet was built with cond_dim=None but forward got a `cond` tensor; "
                    "build it with cond_dim set or call it without cond"
                )
            return 0.0
        if cond is None:
            raise ValueError(
                f"this UNet was built with cond_dim={self.cond_dim} and needs `cond` of shape "
                f"(B, {self.cond_dim}) in forward, but cond is None"
            )
        if cond.shape != (batch, self.cond_dim):
            raise ValueError(f"cond must have shape ({batch}, {self.cond_dim}), got {tuple(cond.shape)}")
        return self.cond_proj(cond)
