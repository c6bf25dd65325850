"""The diffusion core against closed forms for Gaussian data."""

from __future__ import annotations

import pytest
import torch
from gaussian import DIM, SHAPE, GaussianData, moments

from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import (
    CosineSchedule,
    ddim,
    ddpm,
    denoised_from_output,
    denoised_from_score,
    diffusion_loss,
    eps_from_denoised,
    heun,
    network_evaluations,
    noised,
    randn,
    run_sampler,
    sample_generators,
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


SAMPLER_CASES = [  # (sampler, steps, samples, tolerance): DDIM with eta = 1 is DDPM (tested below)
    ("ddim", 200, 20000, 0.03),
    ("heun", 100, 20000, 0.03),
    ("ddpm", 200, 10000, 0.05),  # one generator call per sample and step: fewer samples keep it fast
]


@pytest.mark.parametrize(("sampler", "steps", "count", "tolerance"), SAMPLER_CASES, ids=lambda c: str(c))
def test_samplers_reproduce_gaussian_mean_and_covariance(sampler, steps, count, tolerance):
    """With the exact denoiser every sampler recovers mu and Sigma (max abs error <= tolerance)."""
    data = GaussianData.example()
    generators = sample_generators(seed=0, indices=range(count))
    noise = randn(generators, SHAPE, dtype=torch.float64)
    samples = run_sampler(sampler, data.denoise, noise, data.schedule, steps, generators=generators)
    mean, covariance = moments(samples)
    assert (mean - data.mean).abs().max().item() < tolerance
    assert (covariance - data.covariance).abs().max().item() < tolerance


def test_ddpm_equals_ddim_with_eta_one():
    """The ancestral posterior step is DDIM's eta = 1 step: same noise, same samples."""
    data = GaussianData.example()
    noise = randn(sample_generators(3, range(64)), SHAPE, dtype=torch.float64)
    a = ddpm(data.denoise, noise, data.schedule, 20, generators=sample_generators(4, range(64)))
    b = ddim(data.denoise, noise, data.schedule, 20, eta=1.0, generators=sample_generators(4, range(64)))
    torch.testing.assert_close(a, b)


def test_samples_do_not_depend_on_the_batch_they_are_drawn_in():
    data = GaussianData.example()
    whole = ddpm(
        data.denoise,
        randn(sample_generators(5, range(10)), SHAPE),
        data.schedule,
        10,
        generators=sample_generators(6, range(10)),
    )
    part = ddpm(
        data.denoise,
        randn(sample_generators(5, range(7, 10)), SHAPE),
        data.schedule,
        10,
        generators=sample_generators(6, range(7, 10)),
    )
    torch.testing.assert_close(whole[7:], part)


def test_network_evaluations_are_counted():
    calls = []
    data = GaussianData.example()

    def counting(z, t):
        calls.append(z.shape[0])
        return data.denoise(z, t)

    noise = torch.randn(3, *SHAPE)
    for sampler, steps in (("ddim", 7), ("heun", 7), ("ddpm", 7)):
        calls.clear()
        run_sampler(sampler, counting, noise, data.schedule, steps, generators=sample_generators(0, range(3)))
        assert len(calls) == network_evaluations(sampler, steps)
    assert network_evaluations("heun", 7) == 13


def test_stochastic_samplers_refuse_to_draw_from_the_global_generator():
    data = GaussianData.example()
    with pytest.raises(ConfigError, match="generator"):
        ddpm(data.denoise, torch.randn(2, *SHAPE), data.schedule, 5)
    with pytest.raises(ConfigError, match="unknown sampler"):
        run_sampler("euler", data.denoise, torch.randn(2, *SHAPE), data.schedule, 5)
    with pytest.raises(ConfigError, match="at least 1"):
        heun(data.denoise, torch.randn(2, *SHAPE), data.schedule, 0)
