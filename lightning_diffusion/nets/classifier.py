"""A small CNN for clean images: the evaluator's network, which supplies logits and features for metrics."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lightning_diffusion.config import ConfigError, Configurable
from lightning_diffusion.nets.blocks import group_norm

GROUPS = 8


def conv_block(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """3x3 convolution (``stride`` 2 halves H and W), GroupNorm and SiLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
        group_norm(out_channels, GROUPS),
        nn.SiLU(),
    )


class ConvClassifier(Configurable, nn.Module):
    """Two conv blocks per level (each level after the first starts by halving H and W), average
    pooling to a ``pool_grid`` x ``pool_grid`` grid (1: global, translation invariant; 2 keeps which
    quadrant holds what, for data whose labels name positions) and a ``feature_dim``-wide layer whose
    activations are ``features``; ``forward`` adds dropout and a linear head on top of them."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        channels: Sequence[int] = (32, 64),
        feature_dim: int = 128,
        dropout: float = 0.1,
        pool_grid: int = 1,
    ) -> None:
        super().__init__()
        if pool_grid < 1:
            raise ConfigError(f"pool_grid must be a positive number of cells per side, got {pool_grid}.")
        if not channels or any(c <= 0 for c in channels):
            raise ConfigError(f"channels must be a non-empty list of positive widths, got {list(channels)}.")
        if feature_dim < 1 or num_classes < 2:
            raise ConfigError(
                f"feature_dim must be positive and num_classes at least 2, got feature_dim={feature_dim} "
                f"and num_classes={num_classes}."
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout is a probability and must lie in [0, 1), got {dropout}.")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        blocks = []
        width = in_channels
        for level, level_width in enumerate(channels):
            blocks += [
                conv_block(width, level_width, 1 if level == 0 else 2),
                conv_block(level_width, level_width, 1),
            ]
            width = level_width
        self.body = nn.Sequential(
            *blocks,
            nn.AdaptiveAvgPool2d(pool_grid),
            nn.Flatten(),
            nn.Linear(width * pool_grid**2, feature_dim),
            nn.SiLU(),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations (B, feature_dim) of images ``x`` (B, in_channels, H, W)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (B, num_classes) of images ``x``."""
        return self.head(self.dropout(self.features(x)))
