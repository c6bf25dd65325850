"""Samplers: turn a denoiser D(z, t) and initial noise into samples. They know nothing of conditions
or guidance: the caller binds those into ``denoise``. Every random draw uses the caller's per-sample
generators (``diffusion.noise``), so a sample does not depend on its batch.

All samplers walk the grid t_0 = 1 > t_1 > ... > t_N = 0 (uniform in t, i.e. cosine in log-SNR); the
last step lands on clean data (alpha = 1, sigma = 0), where no network evaluation is needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion.noise import randn
from lightning_diffusion.diffusion.parameterization import eps_from_denoised
from lightning_diffusion.diffusion.schedule import CosineSchedule

Denoise = Callable[[Tensor, Tensor], Tensor]
SAMPLERS = ("ddim", "ddpm", "heun")


Step = tuple[float, float, float, float, float]


def check_steps(steps: int) -> int:
    """Return ``steps`` if it is a usable number of sampling steps, else raise a clear error."""
    if steps < 1:
        raise ConfigError(f"the number of sampling steps must be at least 1, got {steps}.")
    return steps


def _steps(schedule: CosineSchedule, steps: int, progress: bool, name: str) -> Iterator[Step]:
    """Yield (t, alpha_t, sigma_t, alpha_s, sigma_s) for each step t -> s of the grid."""
    check_steps(steps)
    times = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    alphas, sigmas = (values.tolist() for values in schedule.alpha_sigma(times))
    alphas[-1], sigmas[-1] = 1.0, 0.0
    for i in tqdm(range(steps), desc=name, disable=not progress, leave=False):
        yield times[i].item(), alphas[i], sigmas[i], alphas[i + 1], sigmas[i + 1]


def _call(denoise: Denoise, z: Tensor, t: float) -> Tensor:
    return denoise(z, torch.full((z.shape[0],), t, dtype=z.dtype, device=z.device)).to(z.dtype)


def _initial(noise: Tensor, schedule: CosineSchedule) -> Tensor:
    _, sigma = schedule.alpha_sigma(torch.tensor(1.0, dtype=torch.float64))
    return noise * sigma.item()


def _require(generators: Sequence[torch.Generator] | None, z: Tensor, name: str) -> Sequence[torch.Generator]:
    if generators is None or len(generators) != z.shape[0]:
        raise ConfigError(f"the {name} sampler draws noise: pass one generator per sample ({z.shape[0]}).")
    return generators


def ddim(
    denoise: Denoise,
    noise: Tensor,
    schedule: CosineSchedule,
    steps: int,
    eta: float = 0.0,
    generators: Sequence[torch.Generator] | None = None,
    progress: bool = False,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12): z_s = alpha_s D + sqrt(sigma_s^2 - c^2) eps + c xi,
    c = eta * (sigma_s / sigma_t) * sqrt(1 - alpha_t^2 / alpha_s^2) (eq. 16); eta = 0 is deterministic."""
    if eta < 0:
        raise ConfigError(f"DDIM eta must be non-negative, got {eta}.")
    z = _initial(noise, schedule)
    for t, alpha_t, sigma_t, alpha_s, sigma_s in _steps(schedule, steps, progress, "ddim"):
        denoised = _call(denoise, z, t)
        eps = eps_from_denoised(denoised, z, alpha_t, sigma_t)
        c = eta * (sigma_s / sigma_t) * math.sqrt(max(1 - (alpha_t / alpha_s) ** 2, 0.0))
        z = alpha_s * denoised + math.sqrt(max(sigma_s**2 - c**2, 0.0)) * eps
        if c > 0:
            z = z + c * randn(_require(generators, z, "ddim"), z.shape[1:], z.dtype)
    return z


def ddpm(
    denoise: Denoise,
    noise: Tensor,
    schedule: CosineSchedule,
    steps: int,
    generators: Sequence[torch.Generator] | None = None,
    progress: bool = False,
) -> Tensor:
    """Ancestral sampling from the posterior q(z_s | z_t, y = D) (Ho et al. 2020, eq. 6-7; Kingma et al.
    2021, eq. 33): mean = alpha_ts sigma_s^2/sigma_t^2 z + alpha_s sigma_ts^2/sigma_t^2 D,
    variance = sigma_ts^2 sigma_s^2 / sigma_t^2,
    with alpha_ts = alpha_t/alpha_s and sigma_ts^2 = sigma_t^2 - alpha_ts^2 sigma_s^2."""
    z = _initial(noise, schedule)
    for t, alpha_t, sigma_t, alpha_s, sigma_s in _steps(schedule, steps, progress, "ddpm"):
        denoised = _call(denoise, z, t)
        alpha_ts = alpha_t / alpha_s
        sigma_ts_sq = max(sigma_t**2 - alpha_ts**2 * sigma_s**2, 0.0)
        z = (alpha_ts * sigma_s**2 / sigma_t**2) * z + (alpha_s * sigma_ts_sq / sigma_t**2) * denoised
        std = math.sqrt(sigma_ts_sq) * sigma_s / sigma_t
        if std > 0:
            z = z + std * randn(_require(generators, z, "ddpm"), z.shape[1:], z.dtype)
    return z


def heun(
    denoise: Denoise, noise: Tensor, schedule: CosineSchedule, steps: int, progress: bool = False
) -> Tensor:
    """Deterministic 2nd-order Heun on the probability-flow ODE (Karras et al. 2022, Algorithm 1) in the
    coordinates x = z / alpha, s = sigma / alpha where dx/ds = (x - D) / s; Euler on the last step."""
    z = _initial(noise, schedule)
    grid = list(_steps(schedule, steps, progress, "heun"))
    for i, (t, alpha_t, sigma_t, alpha_s, sigma_s) in enumerate(grid):
        x, level_t, level_s = z / alpha_t, sigma_t / alpha_t, sigma_s / alpha_s
        slope = (x - _call(denoise, z, t)) / level_t
        x_next = x + (level_s - level_t) * slope
        if sigma_s > 0:
            t_next = grid[i + 1][0]
            slope_next = (x_next - _call(denoise, alpha_s * x_next, t_next)) / level_s
            x_next = x + (level_s - level_t) * 0.5 * (slope + slope_next)
        z = alpha_s * x_next
    return z


def network_evaluations(sampler: str, steps: int) -> int:
    """Denoiser calls per sample for a sampler run (before guidance multiplies them)."""
    check_sampler(sampler)
    return 2 * steps - 1 if sampler == "heun" else steps


def check_sampler(sampler: str) -> str:
    """Return ``sampler`` if it names a sampler, else raise a clear error listing them."""
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}.")
    return sampler


def run_sampler(
    sampler: str,
    denoise: Denoise,
    noise: Tensor,
    schedule: CosineSchedule,
    steps: int,
    generators: Sequence[torch.Generator] | None = None,
    eta: float = 0.0,
    progress: bool = False,
) -> Tensor:
    """Dispatch to a sampler by name (``ddim``, ``ddpm`` or ``heun``)."""
    check_sampler(sampler)
    if sampler == "ddim":
        return ddim(denoise, noise, schedule, steps, eta=eta, generators=generators, progress=progress)
    if sampler == "ddpm":
        return ddpm(denoise, noise, schedule, steps, generators=generators, progress=progress)
    return heun(denoise, noise, schedule, steps, progress=progress)
