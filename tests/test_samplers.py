"""Samplers, noise-level grids and the sampler spec, against closed forms for Gaussian data.

With the exact Gaussian denoiser every deterministic sampler is an affine map noise -> a + M noise, so
its output distribution is N(a, M M^T) exactly: pushing 0 and the unit vectors through it gives the
sampler's mean and covariance without Monte Carlo error. The probability-flow ODE from x = s0 n (the
samplers' start) has the closed form y = mu + Sigma^1/2 (Sigma + s0^2)^-1/2 (s0 n - mu).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from gaussian import DIM, SHAPE, GaussianData, moments
from jsonargparse import ArgumentParser

from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import (
    SOLVERS,
    CosineSchedule,
    Denoised,
    SamplerSpec,
    ddim,
    noise_grid,
    randn,
    sample_generators,
)
from lightning_diffusion.diffusion.grids import schedule_levels

DATA = GaussianData.example()
TOP = schedule_levels(DATA.schedule)[1]


def exact_moments(spec: SamplerSpec, data: GaussianData = DATA) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of a deterministic sampler's output (an affine map of the noise)."""
    basis = torch.cat([torch.zeros(1, DIM), torch.eye(DIM)]).double().reshape(-1, *SHAPE)
    out = spec.sample(data.denoise, basis, data.schedule).reshape(-1, DIM)
    gain = (out[1:] - out[0]).T
    return out[0], gain @ gain.T


def flow_moments(start: float, data: GaussianData = DATA) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of the exact probability-flow ODE solution started from x = start * n."""
    values, vectors = torch.linalg.eigh(data.covariance)
    gain = vectors @ torch.diag((values / (values + start**2)).sqrt()) @ vectors.T
    return data.mean - gain @ data.mean, start**2 * gain @ gain.T


def moment_error(spec: SamplerSpec) -> float:
    """Largest error in mean or covariance against the exact ODE solution from the same start."""
    mean, covariance = exact_moments(spec)
    exact_mean, exact_covariance = flow_moments(spec.sigma_max or TOP)
    return max((mean - exact_mean).abs().max().item(), (covariance - exact_covariance).abs().max().item())


ORDER_CASES = [  # (solver, grid, steps N; error(N) / error(2N) expected, tolerance)
    ("ddim", "logsnr", 20, 2.0, 0.4),  # 1st order
    ("heun", "edm", 40, 4.0, 1.0),  # 2nd order
    ("dpmpp_2m", "logsnr", 40, 4.0, 0.6),  # 2nd order
    ("unipc", "logsnr", 40, 8.0, 2.0),  # UniP-2 + UniC-2: order 3 (Zhao et al. 2023, the corrector adds one)
]


@pytest.mark.parametrize(("name", "grid", "steps", "ratio", "tolerance"), ORDER_CASES, ids=lambda c: str(c))
def test_deterministic_solvers_converge_at_their_order(name, grid, steps, ratio, tolerance):
    """Halving the step divides a p-th order solver's error in mean and covariance by about 2^p."""
    coarse = moment_error(SamplerSpec(name, steps, grid=grid))
    fine = moment_error(SamplerSpec(name, 2 * steps, grid=grid))
    assert coarse / fine == pytest.approx(ratio, abs=tolerance)


TOLERANCES = [("ddim", 0.03), ("heun", 3e-3), ("edm", 3e-3), ("dpmpp_2m", 3e-3), ("unipc", 3e-3)]


@pytest.mark.parametrize(("name", "tolerance"), TOLERANCES)
def test_deterministic_solvers_reach_the_data_distribution(name, tolerance):
    """At 200 steps the moments match the data's: within 0.03 for 1st-order DDIM, 3e-3 for the others."""
    mean, covariance = exact_moments(SamplerSpec(name, 200, grid="logsnr"))
    assert (mean - DATA.mean).abs().max().item() < tolerance
    assert (covariance - DATA.covariance).abs().max().item() < tolerance


STOCHASTIC = [
    SamplerSpec("ddpm", 200),
    SamplerSpec("ddim", 200, eta=1.0),
    SamplerSpec("dpmpp_2m_sde", 50, grid="logsnr"),
    SamplerSpec("edm", 50, grid="edm", sigma_max=80.0, S_churn=10.0, S_tmin=0.05, S_tmax=50.0),
]


@pytest.mark.parametrize("spec", STOCHASTIC, ids=lambda spec: spec.name)
def test_stochastic_solvers_reach_the_data_distribution(spec):
    """4000 samples: 4 standard errors of a covariance entry are about 0.06."""
    count = 4000
    generators = sample_generators(seed=0, indices=range(count))
    noise = randn(generators, SHAPE, dtype=torch.float64)
    mean, covariance = moments(spec.sample(DATA.denoise, noise, DATA.schedule, generators))
    assert (mean - DATA.mean).abs().max().item() < 0.06
    assert (covariance - DATA.covariance).abs().max().item() < 0.06


@pytest.mark.parametrize("spec", STOCHASTIC, ids=lambda spec: spec.name)
def test_stochastic_samples_do_not_depend_on_their_batch(spec):
    spec = dataclasses.replace(spec, steps=30)

    def draw(indices):
        noise = randn(sample_generators(5, indices), SHAPE)
        return spec.sample(DATA.denoise, noise, DATA.schedule, sample_generators(6, indices))

    torch.testing.assert_close(draw(range(10))[7:], draw(range(7, 10)))


def test_the_sde_variant_at_eta_zero_is_dpmpp_2m_and_edm_without_churn_is_heun():
    noise = randn(sample_generators(1, range(8)), SHAPE, dtype=torch.float64)
    for stochastic, deterministic in (
        (SamplerSpec("dpmpp_2m_sde", 7, eta=0.0), SamplerSpec("dpmpp_2m", 7)),
        (SamplerSpec("edm", 7, grid="edm"), SamplerSpec("heun", 7, grid="edm")),
    ):
        torch.testing.assert_close(
            stochastic.sample(DATA.denoise, noise, DATA.schedule),
            deterministic.sample(DATA.denoise, noise, DATA.schedule),
        )


def test_first_order_stochastic_steps_are_the_ddpm_posterior():
    """DDIM at eta = 1 and the SDE solver's first step at eta = 1 are the ancestral DDPM step."""
    noise = randn(sample_generators(3, range(16)), SHAPE, dtype=torch.float64)

    def run(spec):
        return spec.sample(DATA.denoise, noise, DATA.schedule, sample_generators(4, range(16)))

    torch.testing.assert_close(run(SamplerSpec("ddpm", 20)), run(SamplerSpec("ddim", 20, eta=1.0)))
    torch.testing.assert_close(run(SamplerSpec("ddpm", 2)), run(SamplerSpec("dpmpp_2m_sde", 2)))


@pytest.mark.parametrize("name", list(SOLVERS))
def test_network_evaluations_are_counted_exactly(name):
    calls = []

    def counting(z, t):
        calls.append(z.shape[0])
        return DATA.denoise(z, t)

    options = {"S_churn": 2.0} if name == "edm" else {}
    spec = SamplerSpec(name, 7, grid="logsnr", **options)
    spec.sample(counting, torch.randn(3, *SHAPE), DATA.schedule, sample_generators(0, range(3)))
    assert len(calls) == spec.nfe == (13 if name in ("heun", "edm") else 7)


def test_ddim_renoises_with_the_separate_estimate_and_others_refuse_it():
    """A denoiser returning Denoised(D, D_renoise): DDIM steps to alpha_s D + sigma_s eps(D_renoise)."""
    other = GaussianData.example(shift=0.5)

    def two_estimates(z, t):
        return Denoised(DATA.denoise(z, t), other.denoise(z, t))

    spec = SamplerSpec("ddim", 5, grid="logsnr")
    times = spec.times(DATA.schedule)
    alphas, sigmas = DATA.schedule.alpha_sigma(times)
    alphas[-1], sigmas[-1] = 1.0, 0.0
    noise = randn(sample_generators(2, range(4)), SHAPE, dtype=torch.float64)
    z = sigmas[0] * noise
    for i in range(5):
        t = times[i].expand(4)
        eps = (z - alphas[i] * other.denoise(z, t)) / sigmas[i]
        z = alphas[i + 1] * DATA.denoise(z, t) + sigmas[i + 1] * eps
    renoised = spec.sample(two_estimates, noise, DATA.schedule)
    torch.testing.assert_close(renoised, z)
    assert not torch.allclose(renoised, ddim(DATA.denoise, noise, DATA.schedule, times))
    with pytest.raises(ConfigError, match="cannot renoise"):
        SamplerSpec("dpmpp_2m", 5).sample(two_estimates, noise, DATA.schedule)
    single = SamplerSpec("unipc", 5).sample(lambda z, t: Denoised(DATA.denoise(z, t)), noise, DATA.schedule)
    torch.testing.assert_close(single, SamplerSpec("unipc", 5).sample(DATA.denoise, noise, DATA.schedule))


def test_grids_span_the_requested_levels_and_end_at_zero():
    schedule = CosineSchedule()
    torch.testing.assert_close(noise_grid(schedule, 10), torch.linspace(1, 0, 11, dtype=torch.float64))
    for grid in ("uniform_t", "logsnr", "edm"):
        times = noise_grid(schedule, 12, grid, sigma_max=80.0, sigma_min=0.01)
        assert times.shape == (13,) and times[-1] == 0 and bool((times[1:] < times[:-1]).all())
        levels = (-0.5 * schedule.logsnr(times[:-1])).exp()
        assert levels[0].item() == pytest.approx(80.0) and levels[-1].item() == pytest.approx(0.01)
    logsnr = schedule.logsnr(noise_grid(schedule, 8, "logsnr")[:-1])
    torch.testing.assert_close(logsnr.diff(), logsnr.diff()[:1].expand(7))
    roots = (-0.5 * schedule.logsnr(noise_grid(schedule, 8, "edm", sigma_max=80.0)[:-1])).exp() ** (1 / 7)
    torch.testing.assert_close(roots.diff(), roots.diff()[:1].expand(7))  # Karras et al. eq. 5, rho = 7
    assert (-0.5 * schedule.logsnr(noise_grid(schedule, 8, "edm")[-2])).exp().item() == pytest.approx(0.002)


def test_a_start_below_the_top_still_samples_the_data():
    """EDM's sigma_max = 80: the start drops alpha y, a bias of order |mu| / 80 in the mean."""
    mean, covariance = exact_moments(SamplerSpec("dpmpp_2m", 100, grid="logsnr", sigma_max=80.0))
    assert (mean - DATA.mean).abs().max().item() < 0.01
    assert (covariance - DATA.covariance).abs().max().item() < 2e-3


BAD_SPECS = [
    ({"name": "euler"}, "unknown sampler 'euler'; choose one of ddim, ddpm, heun, edm"),
    ({"grid": "karras"}, "unknown noise-level grid 'karras'; choose one of uniform_t, logsnr, edm"),
    ({"name": "dpmpp_2m", "steps": 1}, "at least 2"),
    ({"steps": 0}, "at least 1"),
    ({"name": "heun", "eta": 0.5}, "heun sampler does not use eta .*ddim, dpmpp_2m_sde"),
    ({"name": "unipc", "eta": 0.0}, "does not use eta"),
    ({"name": "ddim", "S_churn": 1.0}, "does not use S_churn .*edm"),
    ({"name": "edm", "steps": 10, "S_churn": 5.0}, "S_churn=5.0 is out of range for 10 steps"),
    ({"name": "edm", "S_tmin": 2.0, "S_tmax": 1.0}, "S_tmin=2.0 must be below S_tmax"),
    ({"name": "ddim", "eta": -0.1}, "must not be negative"),
    ({"sigma_max": -1.0}, "sigma_max .* must be positive"),
    ({"sigma_max": 1.0, "sigma_min": 2.0}, "sigma_min=2.0 must be below sigma_max"),
]


@pytest.mark.parametrize(("fields", "message"), BAD_SPECS, ids=lambda c: str(c))
def test_bad_specs_are_clear_errors(fields, message):
    with pytest.raises(ConfigError, match=message):
        SamplerSpec(**fields)


def test_bad_grids_and_missing_generators_are_clear_errors():
    with pytest.raises(ConfigError, match="sigma_max=5000 is outside the schedule"):
        SamplerSpec(sigma_max=5000.0).sample(DATA.denoise, torch.randn(2, *SHAPE), DATA.schedule)
    with pytest.raises(ConfigError, match="pass one generator per sample"):
        SamplerSpec("ddpm", 5).sample(DATA.denoise, torch.randn(2, *SHAPE), DATA.schedule)
    with pytest.raises(ConfigError, match="decreasing to 0"):
        ddim(DATA.denoise, torch.randn(2, *SHAPE), DATA.schedule, torch.tensor([1.0, 0.5]))
    with pytest.raises(ConfigError, match="unknown sampler setting"):
        SamplerSpec.of({"name": "ddim", "step": 5})


def test_spec_is_a_hashable_value_parsed_from_flags_and_yaml():
    assert SamplerSpec.of("heun") == SamplerSpec(name="heun") and len({SamplerSpec(), SamplerSpec()}) == 1
    assert SamplerSpec("edm", 10, S_churn=1.0).options == {
        "S_churn": 1.0,
        "S_tmin": 0.0,
        "S_tmax": math.inf,
        "S_noise": 1.0,
    }
    parser = ArgumentParser()
    parser.add_argument("--sampler", type=SamplerSpec, default=SamplerSpec())
    flags = parser.parse_args(["--sampler.name", "dpmpp_2m", "--sampler.steps", "20"])
    assert parser.instantiate_classes(flags).sampler == SamplerSpec("dpmpp_2m", 20)
    yaml = parser.parse_string("sampler: {name: ddim, steps: 25, eta: 0.5}")
    assert parser.instantiate_classes(yaml).sampler == SamplerSpec("ddim", 25, eta=0.5)
    with pytest.raises((ConfigError, SystemExit, ValueError)):
        parser.instantiate_classes(parser.parse_string("sampler: {name: heun, eta: 0.5}"))
