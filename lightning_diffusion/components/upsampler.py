"""The upsampler component: SR3 super-resolution with Gaussian conditioning augmentation.

SR3 (Saharia et al. 2021, Sec. 2.4) learns D(z_t, t, low_res, x): the network sees z_t concatenated
with the low-resolution image interpolated to the output size. Cascaded Diffusion Models (Ho et al.
2021, Sec. 3, "Gaussian conditioning augmentation") noise that low-resolution condition during
training, z_aug = alpha_s low_res + sigma_s eps with s ~ U(0, aug_max_t) on the same VP schedule, and
tell the network s; at sampling time s is a knob, so the upsampler can be made robust to the
artefacts of the stage below it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_diffusion.components.conditions import AugmentationLevel, Condition, LowResImage
from lightning_diffusion.components.denoiser import Denoiser
from lightning_diffusion.registry import register


@register("upsampler")
class Upsampler(Denoiser):
    """SR3 upsampler from ``low_res_size`` to ``image_shape``: a ``Denoiser`` (every other option, e.g.
    ``num_classes`` or ``text_encoder``, is the Denoiser's) with a ``LowResImage`` and an
    ``AugmentationLevel`` condition (before any further ``conditions``).

    Condition keys: ``"low_res"`` (B, C, low_res_size, low_res_size) in [-1, 1], ``"aug_level"`` (B,)
    the augmentation level s in [0, 1] the low-res image was noised at (0, i.e. clean, when missing),
    and the Denoiser's ``"label"``/``"caption"``. The network takes z_t and the upsampled low-res image
    (``net.in_channels = 2 * C``) and needs ``cond_dim`` even without labels (s joins the condition
    vector). Condition dropout (``p_uncond``) drops the label or caption only: ∅ keeps the low-res
    image. ``downsample`` says how the low-res condition is made from a training image (``"area"``: box
    filter; ``"bilinear"``: antialiased bilinear).
    """

    def __init__(
        self,
        net: nn.Module,
        low_res_size: int = 4,
        aug_max_t: float = 0.5,
        downsample: str = "area",
        conditions: Sequence[Condition] = (),
        **kwargs: Any,
    ) -> None:
        parts = [LowResImage(low_res_size, downsample), AugmentationLevel(aug_max_t), *conditions]
        super().__init__(net, conditions=parts, **kwargs)

    @property
    def _low_res(self) -> LowResImage:
        return self.conditioner["low_res"]

    @property
    def _augmentation(self) -> AugmentationLevel:
        return self.conditioner["aug_level"]

    @property
    def low_res_size(self) -> int:
        """Height and width of the low-resolution condition."""
        return self._low_res.size

    @property
    def downsample(self) -> str:
        """How the low-res condition is made from full-size images (``"area"`` or ``"bilinear"``)."""
        return self._low_res.downsample

    @property
    def aug_max_t(self) -> float:
        """The largest augmentation level training draws."""
        return self._augmentation.max_t

    @property
    def low_res_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the low-resolution condition."""
        return self._low_res.shape

    def low_res_of(self, images: Tensor) -> Tensor:
        """The clean low-res condition of full-size images, made with this upsampler's ``downsample``."""
        return self._low_res.of(images)

    def augment_low_res(
        self, low_res: Tensor, level: float | Tensor, generators: Sequence[torch.Generator]
    ) -> Tensor:
        """Noise ``low_res`` to augmentation level ``level`` on the diffusion schedule (Ho et al. 2021,
        Sec. 3), sample i's noise drawn from ``generators[i]``; pass the same level as ``aug_level``.
        A number is checked here; a tensor of levels is trusted (reading it back would stall the device)."""
        return self._augmentation.noise(low_res, level, generators)

    def low_res_condition(
        self, low_res: Tensor, level: float, generators: Sequence[torch.Generator]
    ) -> dict[str, Tensor]:
        """The sampling-time condition for ``low_res``: the image noised at augmentation ``level`` and
        that level per sample (``"low_res"``, ``"aug_level"``)."""
        levels = self._augmentation.levels(float(level), low_res.shape[0], low_res.device)
        return {"low_res": self.augment_low_res(low_res, levels, generators), "aug_level": levels}
