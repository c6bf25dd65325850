"""Variance-preserving noise process: z_t = alpha_t * y + sigma_t * eps, alpha_t^2 + sigma_t^2 = 1.

Time t runs over [0, 1] (0 clean, 1 pure noise) and is what networks receive as their noise level.
We use the cosine schedule of Nichol & Dhariwal (2021, eq. 17) written in log signal-to-noise ratio
lambda = log(alpha^2 / sigma^2) as in Kingma et al. (VDM, 2021): lambda(t) = -2 log tan(a + t (b - a)),
truncated to [logsnr_min, logsnr_max] so that t = 0 and t = 1 stay finite. VP keeps the network input at
unit variance for unit-variance data, and continuous time lets samplers use any number of steps.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_diffusion.config import ConfigError, Configurable


class CosineSchedule(Configurable):
    """Cosine VP schedule in log-SNR, truncated to ``[logsnr_min, logsnr_max]``."""

    def __init__(self, logsnr_min: float = -15.0, logsnr_max: float = 15.0) -> None:
        if not logsnr_min < logsnr_max:
            raise ConfigError(f"logsnr_min ({logsnr_min}) must be below logsnr_max ({logsnr_max}).")
        self.logsnr_min = logsnr_min
        self.logsnr_max = logsnr_max
        self._angle_min = math.atan(math.exp(-0.5 * logsnr_max))
        self._angle_max = math.atan(math.exp(-0.5 * logsnr_min))

    def logsnr(self, t: Tensor) -> Tensor:
        """lambda(t) = -2 log tan(a + t (b - a)), decreasing from logsnr_max at t=0 to logsnr_min at t=1."""
        angle = self._angle_min + t * (self._angle_max - self._angle_min)
        return -2.0 * torch.log(torch.tan(angle))

    def time(self, logsnr: Tensor) -> Tensor:
        """Inverse of ``logsnr``: the t at which the schedule reaches a given log-SNR."""
        angle = torch.atan(torch.exp(-0.5 * logsnr))
        return (angle - self._angle_min) / (self._angle_max - self._angle_min)

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha_t, sigma_t): alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda)."""
        logsnr = self.logsnr(t)
        return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()
