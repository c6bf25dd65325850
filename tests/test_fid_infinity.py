"""The Fréchet distance and FID∞ (Chong & Forsyth 2020) against closed forms on Gaussians: the distance
from exact moments equals ‖μ1 − μ2‖² + Σ (√a_i − √b_i)² for covariances with common eigenvectors, and on
N = 200 samples FID∞ removes most of the bias that plain FID has against the exact value."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.image.fid import _compute_fid

from lightning_diffusion.metrics import METRIC_KEYS
from lightning_diffusion.metrics.fid_infinity import FIDInfinity, fid_at_fractions, fid_infinity
from lightning_diffusion.metrics.frechet import frechet_distance, sample_frechet_distance
from lightning_diffusion.metrics.registry import Gathered

DIM, SAMPLES, REPEATS = 32, 200, 30


def rotation(dim: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed)).double())
    return q


def random_gaussian(dim: int, shift: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """N(shift · 1, A Aᵀ / d + I / 2) with a random A: a full covariance."""
    root = torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed)).double() / dim**0.5
    return torch.full((dim,), shift, dtype=torch.float64), root @ root.T + torch.eye(dim).double() / 2


def draw(mean: torch.Tensor, covariance: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(SAMPLES, len(mean), generator=generator, dtype=torch.float64)
    return mean + noise @ torch.linalg.cholesky(covariance).T


def test_frechet_distance_of_exact_moments_is_the_closed_form():
    a, b = torch.tensor([0.5, 1.0, 2.0, 4.0]).double(), torch.tensor([1.0, 0.25, 2.0, 9.0]).double()
    mu1, mu2 = torch.tensor([0.0, 1.0, -1.0, 2.0]).double(), torch.tensor([1.0, 1.0, 0.5, 0.0]).double()
    exact = (mu1 - mu2).square().sum() + (a.sqrt() - b.sqrt()).square().sum()
    q = rotation(4, 0)  # common eigenvectors Q: (Σ1 Σ2)^½ = Q (ab)^½ Qᵀ
    distance = frechet_distance(q @ mu1, q @ a.diag() @ q.T, q @ mu2, q @ b.diag() @ q.T)
    assert float(distance) == pytest.approx(float(exact), rel=1e-10)
    assert float(frechet_distance(mu1, a.diag(), mu1, a.diag())) == pytest.approx(0, abs=1e-10)


def test_frechet_distance_of_samples_matches_torchmetrics_fid_and_singular_covariances():
    generator = torch.Generator().manual_seed(0)
    for count, dim in [(50, 8), (10, 30)]:  # a full and a singular (rank 9 of 30) sample covariance
        x = torch.randn(count, dim, generator=generator).double()
        y = 1.5 * torch.randn(count + 3, dim, generator=generator).double() + 0.2
        reference = _compute_fid(x.mean(0), torch.cov(x.T), y.mean(0), torch.cov(y.T))
        assert float(sample_frechet_distance(x, y)) == pytest.approx(float(reference), rel=1e-6)


def test_fid_infinity_removes_most_of_plain_fids_bias_at_200_samples():
    p, q = random_gaussian(DIM, 0.0, 1), random_gaussian(DIM, 0.3, 2)
    exact = float(frechet_distance(*p, *q))
    generator = torch.Generator().manual_seed(3)
    fids, infinities = [], []
    for _ in range(REPEATS):
        real, generated = draw(*p, generator), draw(*q, generator)
        fids.append(float(sample_frechet_distance(real, generated)))
        infinities.append(fid_infinity(real.float(), generated.float()))
    fid_bias = torch.tensor(fids).mean() - exact
    infinity_bias = torch.tensor(infinities).mean() - exact
    standard_error = torch.tensor(infinities).std() / REPEATS**0.5
    assert fid_bias > 10 * standard_error  # plain FID's bias is far above the test's noise ...
    assert abs(infinity_bias) < 0.25 * fid_bias  # ... and FID∞ removes at least three quarters of it


def test_fid_infinity_does_not_depend_on_the_order_of_the_gathered_features():
    generator = torch.Generator().manual_seed(4)
    real, generated = torch.randn(40, 6, generator=generator), torch.randn(30, 6, generator=generator) + 0.5
    value = fid_infinity(real, generated)
    shuffled = fid_infinity(real[torch.randperm(40)], generated[torch.randperm(30)])
    assert shuffled == pytest.approx(value, rel=1e-9)
    inverse_sizes, fids = fid_at_fractions(real, generated, torch.tensor([1.0]), draws=2)
    assert inverse_sizes.tolist() == [1 / 30]  # the whole set: plain FID
    assert float(fids[0]) == pytest.approx(float(sample_frechet_distance(real, generated)), rel=1e-9)


def test_fid_inf_is_a_row_column_and_null_below_its_minimum():
    assert "fid_inf" in METRIC_KEYS
    generator = torch.Generator().manual_seed(5)
    metric = FIDInfinity(4)
    generated = torch.randn(20, 4, generator=generator)
    assert metric.compute(Gathered(torch.randn(6, 4, generator=generator), generated)) == {"fid_inf": None}
    value = metric.compute(Gathered(torch.randn(20, 4, generator=generator), generated))["fid_inf"]
    assert value is not None and torch.isfinite(torch.tensor(value))
