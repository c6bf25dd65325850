"""Guidance by the gradient of a log-likelihood of the condition given the noisy image.

A model of ln p(x | z_t, t) (a noisy classifier, a noise-aware CLIP) tilts the base score:
  grad ln P~(z|x) = grad ln P_base(z|x) + s grad_z ln p(x | z_t, t)   (Dhariwal & Nichol 2021, Sec. 4).
Tweedie (D = (z + sigma^2 score) / alpha) turns the added score into an added denoised term:
  D~ = D_base + (sigma_t^2 / alpha_t) s grad_z ln p(x | z_t, t).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor

from lightning_diffusion.diffusion.parameterization import broadcast_to
from lightning_diffusion.guidance.base import Condition, DiffusionModel, Guidance, Guided


def input_gradient(log_likelihood: Callable[[Tensor, Tensor], Tensor], z: Tensor, t: Tensor) -> Tensor:
    """grad_z of the summed per-sample ``log_likelihood(z, t)``, even under ``no_grad``/``inference_mode``
    (z and t are cloned into ordinary tensors first). Only z gets a gradient (``autograd.grad``), so the
    guiding model's parameters accumulate nothing."""
    with torch.inference_mode(False), torch.enable_grad():
        z = z.detach().clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(log_likelihood(z, t.detach().clone()).sum(), z)
    return gradient


class GradientGuidance(Guidance):
    """Adds ``s sigma^2/alpha grad_z ln p(x | z_t, t)`` to a ``base`` method's estimate; s = 0 is the base.

    Subclasses define ``log_likelihood`` (per sample, up to a constant in z) and what ``cond`` must hold."""

    def __init__(self, scale: float, base: Guidance) -> None:
        self.scale = float(scale)
        self.base = base

    @abstractmethod
    def log_likelihood(self, z: Tensor, t: Tensor, cond: Condition) -> Tensor:
        """ln p(x | z_t, t) per sample (B,), differentiable in z."""

    @abstractmethod
    def check_condition(self, cond: Condition) -> None:
        """Raise ConfigError when ``cond`` lacks what the method guides towards."""

    def guide(self, model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition) -> Guided:
        if self.scale == 0.0:
            return self.base.guide(model, z, t, cond)
        self.check_condition(cond)
        t = t.to(z.device, non_blocking=True)
        guided = self.base.guide(model, z, t, cond)
        gradient = input_gradient(lambda zz, tt: self.log_likelihood(zz, tt, cond), z, t)
        alpha, sigma = model.schedule.alpha_sigma(t)
        step = broadcast_to(sigma**2 / alpha, z) * self.scale
        return Guided(guided.denoised + step * gradient.to(guided.denoised.dtype), guided.reference)

    def unguided(self, model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition) -> Guided:
        """The base method's own unguided estimate."""
        return self.base.unguided(model, z, t, cond)

    def reset(self) -> None:
        self.base.reset()
