"""The upsampler component: SR3 super-resolution with Gaussian conditioning augmentation.

SR3 (Saharia et al. 2021, Sec. 2.4) learns D(z_t, t, low_res, x): the network sees z_t concatenated
with the low-resolution image interpolated to the output size. Cascaded Diffusion Models (Ho et al.
2021, Sec. 3, "Gaussian conditioning augmentation") noise that low-resolution condition during
training, z_aug = alpha_s low_res + sigma_s eps with s ~ U(0, aug_max_t) on the same VP schedule, and
tell the network s; at sampling time s is a knob, so the upsampler can be made robust to the
artefacts of the stage below it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_diffusion.components.denoiser import Denoiser, NetConditions
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import CosineSchedule, noised, randn
from lightning_diffusion.nets.blocks import NoiseLevelEmbedding
from lightning_diffusion.registry import register
from lightning_diffusion.resampling import (
    check_aug_level,
    check_downsample_mode,
    downsample_images,
    upsample_images,
)


@register("upsampler")
class Upsampler(Denoiser):
    """SR3 upsampler from ``low_res_size`` to ``image_shape``, optionally label- or text-conditional.

    Condition keys: ``"low_res"`` (B, C, low_res_size, low_res_size) in [-1, 1], ``"aug_level"`` (B,)
    the augmentation level s in [0, 1] the low-res image was noised at (0, i.e. clean, when missing),
    and the Denoiser's ``"label"``/``"caption"``. The network's input is z_t concatenated with the
    low-res image upsampled bilinearly (SR3 uses bicubic; bilinear does not overshoot [-1, 1]), so
    ``net.in_channels = 2 * C``. The level s is embedded like a noise level and added to the condition
    vector, so the network needs ``cond_dim`` even without labels. Condition dropout (``p_uncond``)
    drops the label or caption only: the null condition keeps the low-res image.
    ``downsample`` says how the low-res condition is made from a training image (``"area"``: box
    filter; ``"bilinear"``: antialiased bilinear).
    """

    def __init__(
        self,
        net: nn.Module,
        image_shape: Sequence[int] = (1, 8, 8),
        low_res_size: int = 4,
        num_classes: int | None = 10,
        text_encoder: nn.Module | None = None,
        p_uncond: float = 0.1,
        prediction: str = "v",
        loss_weighting: str | None = None,
        schedule: CosineSchedule | None = None,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 200,
        aug_max_t: float = 0.5,
        downsample: str = "area",
    ) -> None:
        height, width = image_shape[-2:]
        if low_res_size < 1 or height % low_res_size or width % low_res_size:
            raise ConfigError(
                f"low_res_size must divide the image size {height}x{width} (the upsampling factor is an "
                f"integer), got {low_res_size}; e.g. low_res_size: {height // 2}."
            )
        if not 0.0 <= aug_max_t <= 1.0:
            raise ConfigError(
                f"aug_max_t is the largest augmentation time t in [0, 1] (0 turns augmentation off), "
                f"got {aug_max_t}."
            )
        check_downsample_mode(downsample)
        super().__init__(
            net,
            image_shape,
            num_classes,
            text_encoder,
            p_uncond,
            prediction,
            loss_weighting,
            schedule,
            lr,
            weight_decay,
            warmup_steps,
        )
        self.low_res_size = low_res_size
        self.aug_max_t = aug_max_t
        self.downsample = downsample
        self.aug_embedding = NoiseLevelEmbedding(net.cond_dim, net.cond_dim)

    @staticmethod
    def network_in_channels(image_shape: Sequence[int]) -> int:
        """The noisy image and the upsampled low-res image, concatenated along channels."""
        return 2 * image_shape[0]

    @property
    def conditions_vector(self) -> bool:
        """Always: the augmentation level feeds the condition vector."""
        return True

    def _check_condition_inputs(self, net: nn.Module) -> int | None:
        if getattr(net, "cond_dim", None) is None:
            raise ConfigError(
                "the upsampler feeds its augmentation level to the network's condition vector: set "
                "net.init_args.cond_dim (e.g. 128)."
            )
        return super()._check_condition_inputs(net)

    @property
    def low_res_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the low-resolution condition."""
        return (self.image_shape[0], self.low_res_size, self.low_res_size)

    def low_res_of(self, images: Tensor) -> Tensor:
        """The clean low-res condition of full-size images, made with this upsampler's ``downsample``."""
        return downsample_images(images, self.low_res_size, self.downsample)

    def augment_low_res(
        self, low_res: Tensor, level: float | Tensor, generators: Sequence[torch.Generator]
    ) -> Tensor:
        """Noise ``low_res`` to augmentation level ``level`` on the diffusion schedule (Ho et al. 2021,
        Sec. 3), sample i's noise drawn from ``generators[i]``; pass the same level as ``aug_level``.
        A number is checked here; a tensor of levels is trusted (reading it back would stall the device)."""
        levels = self._levels(level, low_res.shape[0], low_res.device)
        noise = randn(generators, low_res.shape[1:]).to(low_res.device, low_res.dtype)
        return noised(low_res, noise, levels, self.schedule)

    def low_res_condition(
        self, low_res: Tensor, level: float, generators: Sequence[torch.Generator]
    ) -> dict[str, Tensor]:
        """The sampling-time condition for ``low_res``: the image noised at augmentation ``level`` and
        that level per sample (``"low_res"``, ``"aug_level"``)."""
        levels = self._levels(float(level), low_res.shape[0], low_res.device)
        return {"low_res": self.augment_low_res(low_res, levels, generators), "aug_level": levels}

    @staticmethod
    def _levels(level: float | Tensor | None, batch_size: int, device: torch.device) -> Tensor:
        """Per-sample augmentation levels (B,) from a number (range-checked on the host), a (B,) tensor
        or None (0: clean). Per network call this reads nothing back from the device: levels made by
        ``low_res_condition`` or training are in range by construction."""
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

    def condition_inputs(self, cond: Mapping[str, Any] | None, batch_size: int) -> NetConditions:
        """The Denoiser's inputs with the embedded augmentation level added to the condition vector."""
        inputs = super().condition_inputs(cond, batch_size)
        device = self.aug_embedding.mlp[0].weight.device
        augmentation = self.aug_embedding(self._levels((cond or {}).get("aug_level"), batch_size, device))
        vector = augmentation if inputs.vector is None else inputs.vector + augmentation
        return inputs._replace(vector=vector)

    def network_input(self, z: Tensor, cond: Mapping[str, Any] | None) -> Tensor:
        """z_t concatenated with the low-res condition upsampled to z's size."""
        low_res = (cond or {}).get("low_res")
        expected = (z.shape[0], *self.low_res_shape)
        if low_res is None or tuple(low_res.shape) != expected:
            got = "no low_res" if low_res is None else f"low_res of shape {tuple(low_res.shape)}"
            raise ConfigError(
                f"the upsampler expects low_res of shape {expected} in [-1, 1] (its images "
                f"{tuple(self.image_shape)} downsampled to {self.low_res_size}x{self.low_res_size}), got "
                f"{got}; downsample the images with Upsampler.low_res_of ({self.downsample} filter) or use "
                "the upsampler whose low_res_size matches."
            )
        return torch.cat([z, upsample_images(low_res.to(z.dtype), z.shape[-2:])], dim=1)

    def batch_condition(self, batch: Mapping[str, Any], drop: Tensor | None = None) -> dict[str, Any]:
        """The Denoiser's condition plus the clean low-res image of the batch (augmentation level 0)."""
        cond = super().batch_condition(batch, drop)
        images = batch["image"]
        cond["low_res"] = self.low_res_of(images)
        cond["aug_level"] = torch.zeros(images.shape[0], device=images.device)
        return cond

    def training_condition(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Condition dropout, then the low-res image noised at a random level s ~ U(0, aug_max_t)."""
        cond = super().training_condition(batch)
        low_res = cond["low_res"]
        levels = torch.rand(low_res.shape[0], device=low_res.device) * self.aug_max_t
        cond["low_res"] = noised(low_res, torch.randn_like(low_res), levels, self.schedule)
        cond["aug_level"] = levels
        return cond
