"""The conditions of a super-resolution model: the low-resolution image (SR3, Saharia et al. 2021,
Sec. 2.4: concatenated to z_t) and its Gaussian augmentation level (Cascaded Diffusion Models, Ho et al.
2021, Sec. 3: z_aug = alpha_s low_res + sigma_s eps, s ~ U(0, max_t), and the network is told s)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_diffusion.components.conditions.base import Condition, NetConditions, NetworkSlots
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import noised, randn
from lightning_diffusion.nets.blocks import NoiseLevelEmbedding
from lightning_diffusion.resampling import (
    check_aug_level,
    check_downsample_mode,
    downsample_images,
    upsample_images,
)


class LowResImage(Condition):
    """Key ``"low_res"``: (B, C, size, size) in [-1, 1], the model's images shrunk with ``downsample``
    (``"area"``: box filter; ``"bilinear"``: antialiased bilinear). It is upsampled bilinearly to z's size
    (SR3 uses bicubic; bilinear does not overshoot [-1, 1]) and concatenated to z_t, so the network takes
    twice the image's channels. It is never dropped."""

    keys = ("low_res",)

    def __init__(self, size: int = 4, downsample: str = "area") -> None:
        super().__init__()
        self.size = size
        self.downsample = check_downsample_mode(downsample)

    def build(self, slots: NetworkSlots) -> None:
        height, width = slots.image_shape[-2:]
        if self.size < 1 or height % self.size or width % self.size:
            raise ConfigError(
                f"low_res_size must divide the image size {height}x{width} (the upsampling factor is an "
                f"integer), got {self.size}; e.g. low_res_size: {height // 2}."
            )
        self.image_shape = slots.image_shape

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the low-resolution condition."""
        return (self.image_shape[0], self.size, self.size)

    def extra_channels(self, image_shape: Sequence[int]) -> int:
        return image_shape[0]

    def of(self, images: Tensor) -> Tensor:
        """The clean low-res condition of full-size images."""
        return downsample_images(images, self.size, self.downsample)

    def read(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        return {"low_res": self.of(batch["image"])}

    def channels(self, cond: Mapping[str, Any], z: Tensor) -> Tensor:
        low_res = cond.get("low_res")
        expected = (z.shape[0], *self.shape)
        if low_res is None or tuple(low_res.shape) != expected:
            got = "no low_res" if low_res is None else f"low_res of shape {tuple(low_res.shape)}"
            raise ConfigError(
                f"the upsampler expects low_res of shape {expected} in [-1, 1] (its images "
                f"{self.image_shape} downsampled to {self.size}x{self.size}), got {got}; downsample the "
                f"images with Upsampler.low_res_of ({self.downsample} filter) or use the upsampler whose "
                "low_res_size matches."
            )
        return upsample_images(low_res.to(z.dtype), z.shape[-2:])


class AugmentationLevel(Condition):
    """Key ``"aug_level"``: (B,) the diffusion time s in [0, 1] the low-res image was noised at (0, i.e.
    clean, when missing), embedded like a noise level and added to the condition vector. Training noises
    the ``"low_res"`` condition at s ~ U(0, max_t) on the model's schedule. It is never dropped."""

    keys = ("aug_level",)
    gives_vector = True
    requires = ("low_res",)

    def __init__(self, max_t: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= max_t <= 1.0:
            raise ConfigError(
                f"aug_max_t is the largest augmentation time t in [0, 1] (0 turns augmentation off), "
                f"got {max_t}."
            )
        self.max_t = max_t

    def build(self, slots: NetworkSlots) -> None:
        self.schedule = slots.schedule
        self.embedding = NoiseLevelEmbedding(slots.cond_dim, slots.cond_dim)

    def read(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        images = batch["image"]
        return {"aug_level": torch.zeros(images.shape[0], device=images.device)}

    def augment(self, cond: dict[str, Any]) -> None:
        low_res = cond["low_res"]
        levels = torch.rand(low_res.shape[0], device=low_res.device) * self.max_t
        cond["low_res"] = noised(low_res, torch.randn_like(low_res), levels, self.schedule)
        cond["aug_level"] = levels

    def noise(self, low_res: Tensor, level: float | Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """``low_res`` noised to augmentation ``level``, sample i's noise drawn from ``generators[i]``."""
        levels = self.levels(level, low_res.shape[0], low_res.device)
        noise = randn(generators, low_res.shape[1:]).to(low_res.device, low_res.dtype)
        return noised(low_res, noise, levels, self.schedule)

    @staticmethod
    def levels(level: float | Tensor | None, batch_size: int, device: torch.device) -> Tensor:
        """Per-sample augmentation levels (B,) from a number (range-checked on the host), a (B,) tensor
        or None (0: clean). Per network call this reads nothing back from the device: levels made by
        ``Upsampler.low_res_condition`` or training are in range by construction."""
        if level is None or isinstance(level, (int, float)):
            return torch.full((batch_size,), check_aug_level(float(level or 0.0)), device=device)
        levels = level.to(device, torch.float32, non_blocking=True)
        if levels.ndim == 0:
            levels = levels.expand(batch_size)
        if levels.shape != (batch_size,):
            raise ConfigError(
                f"aug_level must be a number or one level per sample ({batch_size},), "
                f"got shape {tuple(levels.shape)}."
            )
        return levels

    def inputs(self, cond: Mapping[str, Any], batch_size: int) -> NetConditions:
        device = self.embedding.mlp[0].weight.device
        return NetConditions(vector=self.embedding(self.levels(cond.get("aug_level"), batch_size, device)))
