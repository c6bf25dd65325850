"""A Gaussian data distribution y ~ N(mu, Sigma) on tiny 1x2x2 "images", whose denoiser is exact.

For z = alpha y + sigma eps: E[y | z] = mu + alpha Sigma (alpha^2 Sigma + sigma^2 I)^-1 (z - alpha mu)
and Cov[y | z] = Sigma - alpha^2 Sigma (alpha^2 Sigma + sigma^2 I)^-1 Sigma (Gaussian conditioning).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_diffusion.diffusion import CosineSchedule

SHAPE = (1, 2, 2)
DIM = 4


class GaussianData:
    """Closed forms for Gaussian data: exact denoiser, posterior covariance, samples."""

    def __init__(self, mean: Tensor, covariance: Tensor, schedule: CosineSchedule) -> None:
        self.mean = mean.double()
        self.covariance = covariance.double()
        self.schedule = schedule

    @classmethod
    def example(cls, schedule: CosineSchedule | None = None, shift: float = 0.0) -> GaussianData:
        factor = torch.tensor(
            [[0.8, 0.0, 0.0, 0.0], [0.3, 0.5, 0.0, 0.0], [-0.2, 0.1, 0.6, 0.0], [0.1, -0.3, 0.2, 0.4]],
            dtype=torch.float64,
        )
        mean = torch.tensor([0.5, -0.3, 0.2, 0.0], dtype=torch.float64) + shift
        return cls(mean, factor @ factor.T, schedule or CosineSchedule())

    def _gain(self, alpha: Tensor, sigma: Tensor) -> Tensor:
        """alpha Sigma (alpha^2 Sigma + sigma^2 I)^-1 per sample, shape (B, DIM, DIM)."""
        eye = torch.eye(DIM, dtype=torch.float64)
        a = alpha.double().reshape(-1, 1, 1)
        s = sigma.double().reshape(-1, 1, 1)
        return a * self.covariance @ torch.linalg.inv(a**2 * self.covariance + s**2 * eye)

    def denoise(self, z: Tensor, t: Tensor) -> Tensor:
        """Exact E[y | z_t]."""
        alpha, sigma = self.schedule.alpha_sigma(t.double())
        flat = z.double().reshape(-1, DIM)
        centred = flat - alpha.reshape(-1, 1) * self.mean
        if bool((t == t[0]).all()):  # a sampler step: one gain matrix serves the whole batch
            out = self.mean + centred @ self._gain(alpha[:1], sigma[:1])[0].T
        else:
            out = self.mean + (self._gain(alpha, sigma) @ centred.unsqueeze(-1)).squeeze(-1)
        return out.reshape(z.shape).to(z.dtype)

    def posterior_trace(self, t: Tensor) -> Tensor:
        """tr Cov[y | z_t] for each t."""
        alpha, _ = self.schedule.alpha_sigma(t.double())
        posterior = (
            self.covariance
            - alpha.reshape(-1, 1, 1) * self._gain(*self.schedule.alpha_sigma(t.double())) @ self.covariance
        )
        return torch.diagonal(posterior, dim1=-2, dim2=-1).sum(-1)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        eps = torch.randn(n, DIM, generator=generator, dtype=torch.float64)
        return (self.mean + eps @ torch.linalg.cholesky(self.covariance).T).reshape(n, *SHAPE)


def moments(samples: Tensor) -> tuple[Tensor, Tensor]:
    """Empirical mean and covariance of flattened samples."""
    flat = samples.double().reshape(samples.shape[0], -1)
    return flat.mean(0), torch.cov(flat.T)
