"""The Fréchet distance between two Gaussians (Dowson & Landau 1982; FID, Heusel et al. 2017, Sec. 4),

    d² = ‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½),

computed from factors Σi = Li Liᵀ: Tr((Σ1 Σ2)^½) is the nuclear norm ‖L1ᵀ L2‖_* (the eigenvalues of
Σ1 Σ2 = L1 L1ᵀ L2 L2ᵀ are those of (L1ᵀ L2)ᵀ (L1ᵀ L2)), so a singular value decomposition replaces
the matrix square root of a product that is not symmetric. From n ≤ d samples the factor is the centred
samples themselves (an n × n problem, exact where the covariance is singular); batched over leading
dimensions, in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor


def psd_sqrt(covariance: Tensor) -> Tensor:
    """The symmetric square root of a positive semi-definite (..., d, d) matrix (eigenvalues below 0 from
    round-off are taken as 0)."""
    values, vectors = torch.linalg.eigh(covariance.double())
    return (vectors * values.clamp(min=0).sqrt().unsqueeze(-2)) @ vectors.mT


def sample_moments(samples: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (..., d) and a factor L (..., d, k) of the unbiased covariance L Lᵀ of samples (..., n, d):
    the centred samples over √(n − 1) when n ≤ d (k = n), else the covariance's square root (k = d)."""
    x = samples.double()
    mean = x.mean(dim=-2)
    centred = (x - mean.unsqueeze(-2)).mT / (x.shape[-2] - 1) ** 0.5
    if x.shape[-2] <= x.shape[-1]:
        return mean, centred
    return mean, psd_sqrt(centred @ centred.mT)


def frechet_from_factors(mean1: Tensor, factor1: Tensor, mean2: Tensor, factor2: Tensor) -> Tensor:
    """d² between N(mean1, factor1 factor1ᵀ) and N(mean2, factor2 factor2ᵀ), batched over leading dims."""
    cross = torch.linalg.svdvals(factor1.mT @ factor2).sum(dim=-1)
    traces = factor1.square().sum(dim=(-2, -1)) + factor2.square().sum(dim=(-2, -1))
    return (mean1 - mean2).square().sum(dim=-1) + traces - 2 * cross


def frechet_distance(mean1: Tensor, covariance1: Tensor, mean2: Tensor, covariance2: Tensor) -> Tensor:
    """d² between N(mean1, covariance1) and N(mean2, covariance2): the exact value from the moments."""
    return frechet_from_factors(mean1.double(), psd_sqrt(covariance1), mean2.double(), psd_sqrt(covariance2))


def sample_frechet_distance(samples1: Tensor, samples2: Tensor) -> Tensor:
    """d² between the Gaussians fitted to two sample sets (..., n1, d) and (..., n2, d): FID on features."""
    return frechet_from_factors(*sample_moments(samples1), *sample_moments(samples2))
