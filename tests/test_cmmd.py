"""CMMD's estimator (Jayasumana et al. 2024: Gaussian-kernel MMD², σ = 10) against a closed form: for
Gaussians, E exp(−‖x − y‖² / 2σ²) is exact, so the population MMD² is; the unbiased estimator must average
to it over repeated small samples (to 0 for one distribution), where the biased one (diagonals kept, as the
paper's reference code) is off by O(1/N)."""

from __future__ import annotations

import pytest
import torch

from lightning_diffusion.metrics import METRIC_KEYS
from lightning_diffusion.metrics.cmmd import CMMD, SCALE, SIGMA, gaussian_kernel, gaussian_mmd2
from lightning_diffusion.metrics.mmd import kernel_sum
from lightning_diffusion.metrics.registry import Gathered

DIM, REAL, GENERATED, REPEATS = 3, 12, 7, 2000
Gaussian = tuple[torch.Tensor, torch.Tensor]


def expected_kernel(p: Gaussian, q: Gaussian) -> float:
    """E exp(−‖x − y‖² / 2σ²) for independent x ~ N(a, A), y ~ N(b, B): with z = x − y ~ N(μ, S), μ = a − b,
    S = A + B, the Gaussian integral is det(I + S / σ²)^(−½) exp(−½ μᵀ (S + σ² I)⁻¹ μ)."""
    mu, s = p[0] - q[0], p[1] + q[1]
    eye = torch.eye(DIM, dtype=torch.float64)
    determinant = torch.linalg.det(eye + s / SIGMA**2)
    return float(determinant.rsqrt() * torch.exp(-0.5 * mu @ torch.linalg.solve(s + SIGMA**2 * eye, mu)))


def population_mmd2(p: Gaussian, q: Gaussian) -> float:
    return expected_kernel(p, p) + expected_kernel(q, q) - 2 * expected_kernel(p, q)


def gaussian(mean: float, scales: list[float], seed: int) -> Gaussian:
    """N(mean · 1, L Lᵀ) with a random rotation L of the given scales (on the kernel's scale, σ = 10)."""
    rotation, _ = torch.linalg.qr(
        torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(seed)).double()
    )
    root = rotation * torch.tensor(scales, dtype=torch.float64)
    return torch.full((DIM,), mean, dtype=torch.float64), root @ root.T


def draw(p: Gaussian, count: int, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(count, DIM, generator=generator, dtype=torch.float64)
    return p[0] + noise @ torch.linalg.cholesky(p[1]).T


def biased_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """The V-statistic (Gretton et al. 2012, Eq. 5), as google-research/cmmd computes it."""
    means = [kernel_sum(gaussian_kernel, a, b) / (len(a) * len(b)) for a, b in ((x, x), (y, y), (x, y))]
    return float(means[0] + means[1] - 2 * means[2])


@pytest.mark.parametrize("shift", [0.0, 4.0])
def test_unbiased_estimator_averages_to_the_population_mmd2(shift):
    p, q = gaussian(0.0, [6.0, 4.0, 2.0], seed=0), gaussian(shift, [5.0, 5.0, 3.0], seed=int(shift) + 1)
    exact = population_mmd2(p, q) if shift else 0.0
    if not shift:
        q = p  # one distribution: the population MMD² is 0
    generator = torch.Generator().manual_seed(2)
    samples = [(draw(p, REAL, generator), draw(q, GENERATED, generator)) for _ in range(REPEATS)]
    unbiased = torch.tensor([gaussian_mmd2(x, y) for x, y in samples])
    biased = torch.tensor([biased_mmd2(x, y) for x, y in samples])
    standard_error = float(unbiased.std()) / REPEATS**0.5
    assert abs(float(unbiased.mean()) - exact) < 3 * standard_error
    assert float(biased.mean()) - exact > 10 * standard_error  # the diagonal's bias, which the test can see


def test_blocks_do_not_change_the_kernel_sum_and_the_column_is_scaled():
    generator = torch.Generator().manual_seed(3)
    x, y = 8 * torch.randn(9, DIM, generator=generator), 8 * torch.randn(5, DIM, generator=generator)
    whole = kernel_sum(gaussian_kernel, x.double(), y.double())
    assert float(kernel_sum(gaussian_kernel, x.double(), y.double(), block=2)) == pytest.approx(float(whole))
    assert "cmmd" in METRIC_KEYS
    row = CMMD(DIM).compute(Gathered(x, y))
    assert row["cmmd"] == pytest.approx(SCALE * gaussian_mmd2(x, y))
