"""KID (Bińkowski et al. 2018) against closed forms: for Gaussians the expected value of the cubic polynomial
kernel follows from moments, so the population MMD² is exact, and the unbiased estimator must average to it
over repeated small samples (to 0 for one distribution), where the biased one is off by O(1/N)."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.image.kid import poly_kernel, poly_mmd

from lightning_diffusion.metrics import METRIC_KEYS, SampleMetrics
from lightning_diffusion.metrics.kid import kernel_inception_distance
from lightning_diffusion.metrics.mmd import kernel_sum

DIM, REAL, GENERATED, REPEATS = 3, 12, 7, 2000  # m != n: the estimator's two within-set normalisations


def expected_kernel(a: torch.Tensor, A: torch.Tensor, b: torch.Tensor, B: torch.Tensor) -> float:
    """E[(xᵀy / d + 1)³] for independent x ~ N(a, A), y ~ N(b, B), from E[(xᵀy)^p], p = 1, 2, 3:
    E xᵀy = aᵀb; E (xᵀy)² = tr((A + aaᵀ)(B + bbᵀ)); given y, xᵀy ~ N(aᵀy, yᵀAy), so E[(xᵀy)³ | y] =
    (aᵀy)³ + 3 (aᵀy)(yᵀAy), whose mean over y = b + z, z ~ N(0, B) is (aᵀb)³ + 3 (aᵀb)(aᵀBa)
    + 3 [(aᵀb)(bᵀAb) + (aᵀb) tr(AB) + 2 aᵀBAb]."""
    ab = a @ b
    first = ab
    second = torch.trace((A + torch.outer(a, a)) @ (B + torch.outer(b, b)))
    third = (
        ab**3 + 3 * ab * (a @ B @ a) + 3 * (ab * (b @ A @ b) + ab * torch.trace(A @ B) + 2 * (a @ B @ A @ b))
    )
    d = DIM
    return (third / d**3 + 3 * second / d**2 + 3 * first / d + 1).item()


def population_mmd2(p: tuple[torch.Tensor, torch.Tensor], q: tuple[torch.Tensor, torch.Tensor]) -> float:
    """MMD² = E k(x, x') + E k(y, y') - 2 E k(x, y) for x, x' ~ P and y, y' ~ Q independent."""
    return expected_kernel(*p, *p) + expected_kernel(*q, *q) - 2 * expected_kernel(*p, *q)


def gaussian(mean: list[float], scales: list[float], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """N(mean, L Lᵀ) with a random rotation L of the given scales (a full covariance)."""
    rotation, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(seed)))
    root = rotation.double() * torch.tensor(scales, dtype=torch.float64)
    return torch.tensor(mean, dtype=torch.float64), root @ root.T


def draw(p: tuple[torch.Tensor, torch.Tensor], count: int, generator: torch.Generator) -> torch.Tensor:
    mean, covariance = p
    noise = torch.randn(count, DIM, generator=generator, dtype=torch.float64)
    return mean + noise @ torch.linalg.cholesky(covariance).T


def biased_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """The V-statistic (diagonals kept, 1/m² and 1/n²): what forgetting i != j would compute."""
    m, n = len(x), len(y)
    sums = [kernel_sum(poly_kernel, a, b, 5) for a, b in ((x, x), (y, y), (x, y))]
    return (sums[0] / m**2 + sums[1] / n**2 - 2 * sums[2] / (m * n)).item()


P = gaussian([0.5, -1.0, 0.0], [1.0, 0.5, 1.5], seed=0)
Q = gaussian([0.0, -0.5, 1.0], [0.8, 1.2, 0.6], seed=1)


@pytest.mark.parametrize(("p", "q"), [(P, P), (P, Q)], ids=["same distribution: 0", "two Gaussians"])
def test_kid_averages_to_the_closed_form_mmd2_at_small_n(p, q):
    """Over 2000 draws of 12 real and 7 generated samples the mean estimate is within 4 standard errors of
    the closed form; the biased estimator, at the same tolerance, is not."""
    generator = torch.Generator().manual_seed(2)
    samples = [(draw(p, REAL, generator), draw(q, GENERATED, generator)) for _ in range(REPEATS)]
    estimates = torch.tensor([kernel_inception_distance(x, y, block=5) for x, y in samples])
    target = population_mmd2(p, q)
    tolerance = 4 * estimates.std().item() / REPEATS**0.5
    assert abs(estimates.mean().item() - target) < tolerance
    biased = torch.tensor([biased_mmd2(x, y) for x, y in samples])
    assert abs(biased.mean().item() - target) > tolerance
    if p is q:
        assert target == pytest.approx(0.0, abs=1e-12)


def test_kid_equals_torchmetrics_estimator_on_sets_of_equal_size_in_any_block_size():
    generator = torch.Generator().manual_seed(3)
    x, y = draw(P, 9, generator), draw(Q, 9, generator)
    reference = poly_mmd(x, y).item()  # torchmetrics' KID of one subset (needs m = n)
    assert kernel_inception_distance(x, y) == pytest.approx(reference, rel=1e-12)
    assert kernel_inception_distance(x, y, block=2) == pytest.approx(reference, rel=1e-12)


def test_kid_is_a_column_of_every_row():
    generator = torch.Generator().manual_seed(4)
    real, generated = draw(P, 20, generator).float(), draw(Q, 15, generator).float()
    metrics = SampleMetrics(DIM)
    metrics.update_real(real)
    metrics.update_generated({"features": generated, "logits": torch.randn(15, 4, generator=generator)})
    assert "kid" in METRIC_KEYS
    assert metrics.compute()["kid"] == pytest.approx(kernel_inception_distance(real, generated), rel=1e-9)
