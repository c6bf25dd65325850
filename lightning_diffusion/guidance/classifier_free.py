"""Classifier-free guidance (Ho & Salimans 2021) in the project's scale convention.

Scores are affine in D with coefficients that depend only on (z, t) (Tweedie), so
  grad ln P~(z|x) = s grad ln P_t(z|x) - (s - 1) grad ln P_t(z|∅)
is the same combination of denoised estimates: D~ = D(z|∅) + s (D(z|x) - D(z|∅)).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_diffusion.guidance.base import Condition, DiffusionModel, Guidance, Guided, concat_conditions
from lightning_diffusion.guidance.registry import GuidanceMethod, register_method


class ClassifierFree(Guidance):
    """CFG at scale ``s``: conditional and null condition in one batched forward pass.

    The null condition replaces the keys the model drops (label, caption) and keeps the others (e.g.
    an upsampler's low-resolution image). At s = 1 (conditional) and s = 0 (unconditional) only one
    of the two is needed: one pass."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = float(scale)

    def guide(self, model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition) -> Guided:
        if self.scale == 1.0:
            conditional = model.denoise(z, t, cond)
            return Guided(conditional, conditional)
        if self.scale == 0.0:
            return Guided(unconditional_estimate(model, z, t, cond), None)
        conditional, unconditional = conditional_and_unconditional(model, z, t, cond)
        return Guided(unconditional.lerp(conditional, self.scale), conditional)


def unconditional_estimate(model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition) -> Tensor:
    """D(z | ∅): the null condition replaces the keys the model drops and keeps the others."""
    return model.denoise(z, t, {**cond, **model.null_condition(z.shape[0], z.device)})


def conditional_and_unconditional(
    model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition
) -> tuple[Tensor, Tensor]:
    """(D(z | x), D(z | ∅)) from one batched forward pass, for every method built on the two estimates."""
    null_keys = model.null_condition(z.shape[0], z.device)
    null = {**cond, **null_keys}
    cond = {**null_keys, **cond}  # a key the condition leaves out means ∅: batch it as such
    both = model.denoise(torch.cat([z, z]), torch.cat([t, t]), concat_conditions(cond, null))
    conditional, unconditional = both.chunk(2)
    return conditional, unconditional


CFG = register_method(GuidanceMethod("cfg", build=lambda inputs: ClassifierFree(inputs.scale)))
register_method(CFG.requiring("interval"))
