"""Noise-aware image encoder: the down half of the ADM U-Net with a pooled linear head."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lightning_diffusion.config import Configurable
from lightning_diffusion.nets.blocks import DownPath, NoiseLevelEmbedding, group_norm


class EncoderUNet(Configurable, nn.Module):
    """Maps noisy images and their noise level to ``out_dim`` outputs (noisy classifier, CLIP tower).

    The architecture arguments mean the same as in ``UNet``; after the middle block come GroupNorm,
    SiLU, global average pooling and a linear head.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_dim: int = 10,
        channels: Sequence[int] = (32, 64),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (1,),
        num_heads: int = 4,
        dropout: float = 0.0,
        groups: int = 8,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_dim = out_dim
        self.emb_dim = 4 * channels[0]
        self.noise_embed = NoiseLevelEmbedding(channels[0], self.emb_dim)
        self.down = DownPath(
            in_channels, channels, num_res_blocks, attention_levels, num_heads, dropout, groups, self.emb_dim
        )
        width = self.down.out_channels
        self.head = nn.Sequential(
            group_norm(width, groups),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, out_dim),
        )

    def forward(self, x: Tensor, noise_level: Tensor) -> Tensor:
        """Encode noisy images ``x`` at ``noise_level`` (B,) into (B, out_dim) outputs."""
        self.down.check_input(x, noise_level)
        h, _ = self.down(x, self.noise_embed(noise_level))
        return self.head(h)
