"""The diffusion core against closed forms for Gaussian data: schedule, parameterisations, loss (the
samplers are in test_samplers.py)."""

from __future__ import annotations

import pytest
import torch
from gaussian import DIM, SHAPE, GaussianData

from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import (
    CosineSchedule,
    denoised_from_output,
    denoised_from_score,
    diffusion_loss,
    eps_from_denoised,
    noised,
    score_from_denoised,
)

N = 20000


def test_schedule_is_variance_preserving_and_monotone():
    schedule = CosineSchedule()
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    alpha, sigma = schedule.alpha_sigma(t)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(t))
    logsnr = schedule.logsnr(t)
    assert torch.all(logsnr[1:] < logsnr[:-1])
    assert logsnr[0].item() == pytest.approx(15.0) and logsnr[-1].item() == pytest.approx(-15.0)
    torch.testing.assert_close(schedule.time(logsnr), t)


def test_schedule_rejects_inverted_bounds():
    with pytest.raises(ConfigError, match="logsnr_min"):
        CosineSchedule(logsnr_min=5.0, logsnr_max=1.0)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_each_parameterisation_recovers_the_clean_image_from_its_true_target(prediction):
    generator = torch.Generator().manual_seed(0)
    y, eps = torch.randn(2, 8, *SHAPE, generator=generator, dtype=torch.float64)
    t = torch.rand(8, generator=generator, dtype=torch.float64) * 0.9 + 0.05
    alpha, sigma = CosineSchedule().alpha_sigma(t)
    z = noised(y, eps, t, CosineSchedule())
    a, s = alpha.reshape(-1, 1, 1, 1), sigma.reshape(-1, 1, 1, 1)
    target = {"eps": eps, "v": a * eps - s * y, "x0": y}[prediction]
    denoised = denoised_from_output(target, z, alpha, sigma, prediction)
    torch.testing.assert_close(denoised, y)
    torch.testing.assert_close(eps_from_denoised(denoised, z, alpha, sigma), eps)
    score = score_from_denoised(denoised, z, alpha, sigma)
    torch.testing.assert_close(score, -eps / s)
    torch.testing.assert_close(denoised_from_score(score, z, alpha, sigma), y)


def test_unknown_prediction_is_a_clear_error():
    z = torch.zeros(1, *SHAPE)
    with pytest.raises(ConfigError, match="eps, v, x0"):
        denoised_from_output(z, z, 1.0, 1.0, "score")


@pytest.mark.parametrize("weighting", ["eps", "v", "x0"])
def test_loss_at_the_exact_denoiser_equals_its_analytic_value(weighting):
    """E[w(t) |D*(z_t) - y|^2 / d] = w(t) tr Cov[y | z_t] / d at fixed t."""
    data = GaussianData.example()
    generator = torch.Generator().manual_seed(1)
    for t_value in (0.2, 0.5, 0.8):
        y = data.sample(N, generator)
        noise = torch.randn(y.shape, generator=generator, dtype=torch.float64)
        t = torch.full((N,), t_value, dtype=torch.float64)
        losses = diffusion_loss(data.denoise, y, t, noise, data.schedule, weighting)
        logsnr = data.schedule.logsnr(t[:1])
        weight = {"eps": logsnr.exp(), "v": logsnr.exp() + 1, "x0": torch.ones(1)}[weighting]
        expected = (weight * data.posterior_trace(t[:1]) / DIM).item()
        standard_error = (losses.std() / N**0.5).item()
        assert losses.mean().item() == pytest.approx(expected, abs=4 * standard_error)
