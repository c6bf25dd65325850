"""The denoising loss: w(lambda) * ||D(z_t) - y||^2, averaged over pixels.

Training a network on the MSE of its own target is this loss with the matching weight
(Kingma et al. 2021/2023 write every such loss as a weighting of the x0 error):
  eps target: ||eps_hat - eps||^2 = snr * ||D - y||^2
  v target:   ||v_hat - v||^2     = (snr + 1) * ||D - y||^2
  x0 target:  weight 1
with snr = exp(lambda) = alpha^2 / sigma^2.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion.parameterization import PREDICTIONS, broadcast_to
from lightning_diffusion.diffusion.schedule import CosineSchedule


def loss_weight(logsnr: Tensor, weighting: str) -> Tensor:
    """Per-sample weight of the x0 error that makes the loss the MSE of the named target."""
    if weighting == "eps":
        return torch.exp(logsnr)
    if weighting == "v":
        return torch.exp(logsnr) + 1.0
    if weighting == "x0":
        return torch.ones_like(logsnr)
    raise ConfigError(f"unknown loss weighting {weighting!r}; choose one of {', '.join(PREDICTIONS)}.")


def noised(y: Tensor, noise: Tensor, t: Tensor, schedule: CosineSchedule) -> Tensor:
    """Sample z_t = alpha_t y + sigma_t eps for per-sample times t."""
    alpha, sigma = schedule.alpha_sigma(t)
    return broadcast_to(alpha, y) * y + broadcast_to(sigma, y) * noise


def diffusion_loss(
    denoise: Callable[[Tensor, Tensor], Tensor],
    y: Tensor,
    t: Tensor,
    noise: Tensor,
    schedule: CosineSchedule,
    weighting: str,
) -> Tensor:
    """Per-sample weighted loss w(lambda_t) * mean_pixels (D(z_t, t) - y)^2, shape (B,)."""
    denoised = denoise(noised(y, noise, t, schedule), t)
    squared_error = (denoised.float() - y.float()).square().flatten(1).mean(dim=1)
    return loss_weight(schedule.logsnr(t), weighting) * squared_error


def random_time_loss(
    denoise: Callable[[Tensor, Tensor], Tensor],
    y: Tensor,
    schedule: CosineSchedule,
    weighting: str,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """``diffusion_loss`` at t ~ U(0, 1) and standard normal noise per sample (drawn from ``generator``
    when given, e.g. a fixed draw for validation); returns the per-sample losses (B,) and t (B,)."""
    t = torch.rand(y.shape[0], device=y.device, generator=generator)
    noise = torch.randn(y.shape, device=y.device, generator=generator)
    return diffusion_loss(denoise, y, t, noise, schedule, weighting), t
