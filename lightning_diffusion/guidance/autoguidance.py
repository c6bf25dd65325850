"""Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself").

CFG's formula with the unconditional term replaced by a weaker model under the same condition:
  D~ = D_guide + s (D_main - D_guide),
where the guide is a smaller or less-trained checkpoint of the same task.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

from lightning_diffusion.guidance.base import Condition, DiffusionModel, Guidance, Guided
from lightning_diffusion.guidance.registry import GuidanceMethod, register_method


class Denoising(Protocol):
    """Anything with the denoised estimate D(z, t, cond): another denoiser checkpoint serves as guide."""

    def denoise(self, z: Tensor, t: Tensor, cond: Condition | None = None) -> Tensor: ...


class AutoGuidance(Guidance):
    """Guide ``model`` away from ``guide_model`` at scale s; s = 1 runs the main model alone, s = 0 the guide.

    The reference is the main model's D (None at s = 0, where it is not computed)."""

    def __init__(self, guide_model: Denoising, scale: float) -> None:
        self.guide_model = guide_model
        self.scale = float(scale)

    def guide(self, model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition) -> Guided:
        if self.scale == 0.0:
            return Guided(self.guide_model.denoise(z, t, cond), None)
        main = model.denoise(z, t, cond)
        if self.scale == 1.0:
            return Guided(main, main)
        weak = self.guide_model.denoise(z, t, cond).to(main.dtype)
        return Guided(weak.lerp(main, self.scale), main)


AUTOGUIDANCE = register_method(
    GuidanceMethod(
        "autoguidance",
        build=lambda inputs: AutoGuidance(inputs.guide, inputs.scale),
        needs=("guide",),
        conditional_denoiser=False,
    )
)
register_method(AUTOGUIDANCE.requiring("interval"))
