"""Changing image resolution: how low-res conditions and low-res training data are made, and how the
upsampler's network sees its condition (one place, so data, upsampler and metrics agree)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from lightning_diffusion.config import ConfigError

DOWNSAMPLE_MODES = ("area", "bilinear")


def check_downsample_mode(mode: str) -> str:
    """``mode`` if it names a downsampling filter, else a ConfigError listing them."""
    if mode not in DOWNSAMPLE_MODES:
        raise ConfigError(f"unknown downsample mode {mode!r}; choose one of {', '.join(DOWNSAMPLE_MODES)}.")
    return mode


def check_aug_level(level: float) -> float:
    """``level`` if it is a valid augmentation level of a low-res condition (a diffusion time in
    [0, 1]), else a ConfigError."""
    if not 0.0 <= level <= 1.0:
        raise ConfigError(f"aug_level is a diffusion time in [0, 1] (0: clean low-res input), got {level}.")
    return level


def downsample_images(images: Tensor, size: int, mode: str = "area") -> Tensor:
    """Shrink (B, C, H, W) images to ``size`` x ``size``: ``"area"`` averages boxes of pixels (exact
    for integer factors), ``"bilinear"`` is an antialiased bilinear filter."""
    if check_downsample_mode(mode) == "area":
        return F.interpolate(images, size=(size, size), mode="area")
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def upsample_images(images: Tensor, size: Sequence[int]) -> Tensor:
    """Enlarge images to ``size`` (H, W) by bilinear interpolation: how the network sees the condition,
    and the classical baseline the upsampler is compared with."""
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False)
