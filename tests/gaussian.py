"""A Gaussian data distribution y ~ N(mu, Sigma) on tiny 1x2x2 "images", whose denoiser is exact.

For z = alpha y + sigma eps: E[y | z] = mu + alpha Sigma (alpha^2 Sigma + sigma^2 I)^-1 (z - alpha mu)
and Cov[y | z] = Sigma - alpha^2 Sigma (alpha^2 Sigma + sigma^2 I)^-1 Sigma (Gaussian conditioning).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_diffusion.config import Configurable
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


class GaussianMeanNet(Configurable, nn.Module):
    """An x0-predicting network that is exact for Gaussian data N(m, Sigma) with a known ``covariance`` and a
    mean m read from the condition vector by a small MLP: out = m + G_t (z - alpha_t m), G_t = alpha_t Sigma
    (alpha_t^2 Sigma + sigma_t^2 I)^-1. Its only parameters are the mean head's, so a denoiser around it is
    exact when the head maps each condition to its mean (``fit_means``)."""

    def __init__(self, covariance: list[list[float]], cond_dim: int = 8, hidden: int = 32) -> None:
        super().__init__()
        self.cond_dim = cond_dim
        self.in_channels = self.out_channels = 1
        self.schedule = CosineSchedule()
        self.register_buffer("covariance", torch.tensor(covariance, dtype=torch.float64), persistent=False)
        self.mean = nn.Sequential(nn.Linear(cond_dim, hidden), nn.SiLU(), nn.Linear(hidden, DIM))

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        alpha, sigma = self.schedule.alpha_sigma(t.double())
        data = GaussianData(torch.zeros(DIM), self.covariance, self.schedule)
        gain = data._gain(alpha, sigma)
        mean = self.mean(cond).double()
        centred = x.double().reshape(-1, DIM) - alpha.reshape(-1, 1) * mean
        return (mean + (gain @ centred.unsqueeze(-1)).squeeze(-1)).reshape(x.shape).float()

    def fit_means(self, conditions: Tensor, means: Tensor) -> None:
        """Set the head's last layer so that condition vector i maps exactly to mean i (least squares on
        the hidden features, exact while there are fewer conditions than hidden units)."""
        with torch.no_grad():
            hidden = self.mean[1](self.mean[0](conditions)).double()
            features = torch.cat([hidden, torch.ones(len(hidden), 1, dtype=torch.float64)], dim=1)
            solution = torch.linalg.lstsq(features, means.double()).solution
            self.mean[2].weight.copy_(solution[:-1].T)
            self.mean[2].bias.copy_(solution[-1])
