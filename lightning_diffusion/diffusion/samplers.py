"""Samplers: turn a denoiser D(z, t) and initial noise into samples. They know nothing of conditions
or guidance: the caller binds those into ``denoise``. Every random draw uses the caller's per-sample
generators (``diffusion.noise``), so a sample does not depend on its batch.

Each sampler walks a grid of times t_0 > ... > t_N = 0 (``diffusion.grids``; like k-diffusion's sigmas,
the grid carries the whole discretisation) and has one signature,
``sampler(denoise, noise, schedule, times, generators=None, progress=False, **options)``. The last point
is clean data (alpha = 1, sigma = 0), where no network evaluation is needed.

Starting point: in VP, z_{t_0} = alpha_0 y + sigma_0 eps with y ~ data; samplers start from sigma_0 * noise,
dropping alpha_0 y. At the schedule's top (sigma / alpha about 1800, alpha_0 = 5.5e-4) that is exact to
float precision; starting lower (e.g. EDM's sigma / alpha = 80, alpha_0 = 0.0125) it is the approximation
EDM makes (x = sigma_max n), off by alpha_0 y relative to noise of size sigma_0.

Notation: lambda = log(alpha / sigma) (half the log-SNR; DPM-Solver's lambda), h = lambda_next - lambda,
and EDM's level s = sigma / alpha with x = z / alpha, in which the probability-flow ODE is
dx/ds = (x - D) / s (Karras et al. 2022, eq. 4 with s(t) = 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion.grids import schedule_levels, time_of_level
from lightning_diffusion.diffusion.noise import randn
from lightning_diffusion.diffusion.parameterization import eps_from_denoised
from lightning_diffusion.diffusion.schedule import CosineSchedule


class Denoised(NamedTuple):
    """What a denoise callable may return instead of a bare D: the data estimate and, for guidance that
    renoises with another estimate (CFG++ renoises with the unconditional one), the D whose implied
    noise eps = (z - alpha D_renoise) / sigma the sampler puts back. Only samplers registered with
    ``renoises=True`` use it; the others refuse it rather than ignore it."""

    data: Tensor
    renoise: Tensor | None = None


Denoise = Callable[[Tensor, Tensor], "Tensor | Denoised"]
Generators = Sequence[torch.Generator] | None


class _Grid(NamedTuple):
    times: list[float]
    alphas: list[float]
    sigmas: list[float]

    @property
    def steps(self) -> int:
        return len(self.times) - 1

    def level(self, i: int) -> float:
        """EDM's sigma / alpha at point i (0 at the clean end)."""
        return self.sigmas[i] / self.alphas[i]

    def half_logsnr(self, i: int) -> float:
        """lambda_i = log(alpha_i / sigma_i) (finite: the clean end is never used here)."""
        return math.log(self.alphas[i] / self.sigmas[i])


def _grid(schedule: CosineSchedule, times: Tensor) -> _Grid:
    """alpha and sigma along a grid, after refusing one that is not decreasing to 0."""
    times = times.detach().double().cpu()
    if times.ndim != 1 or times.numel() < 2 or times[-1] != 0 or not bool((times[1:] < times[:-1]).all()):
        raise ConfigError(
            f"a sampler's grid must be 1-d times decreasing to 0, got {times.tolist()}; make it with "
            "diffusion.noise_grid."
        )
    alphas, sigmas = schedule.alpha_sigma(times)
    alphas[-1], sigmas[-1] = 1.0, 0.0
    return _Grid(times.tolist(), alphas.tolist(), sigmas.tolist())


def _progress(steps: int, progress: bool, name: str) -> Iterable[int]:
    return tqdm(range(steps), desc=name, disable=not progress, leave=False)


def _evaluate(denoise: Denoise, z: Tensor, t: float, name: str, renoises: bool = False) -> Denoised:
    """One network evaluation at (z, t), as a ``Denoised`` whose ``renoise`` is filled (with D when the
    callable gave none); a separate renoise estimate is refused by samplers that cannot use it."""
    # t stays on the host (pinned on CUDA, so its copy is asynchronous): guidance that branches on the
    # noise level (the guidance interval) then reads nothing back from the device.
    host_t = torch.full((z.shape[0],), t, dtype=z.dtype, pin_memory=z.is_cuda)
    out = denoise(z, host_t)
    if not isinstance(out, Denoised):
        return Denoised(out.to(z.dtype), out.to(z.dtype))
    if out.renoise is not None and not renoises:
        raise ConfigError(
            f"the {name} sampler cannot renoise with a separate estimate (guidance such as CFG++ asks for "
            "it); use a sampler that can, such as ddim."
        )
    renoise = out.data if out.renoise is None else out.renoise
    return Denoised(out.data.to(z.dtype), renoise.to(z.dtype))


def _noise(generators: Generators, z: Tensor, name: str) -> Tensor:
    if generators is None or len(generators) != z.shape[0]:
        raise ConfigError(f"the {name} sampler draws noise: pass one generator per sample ({z.shape[0]}).")
    return randn(generators, z.shape[1:], z.dtype).to(z.device)


def ddim(
    denoise: Denoise,
    noise: Tensor,
    schedule: CosineSchedule,
    times: Tensor,
    generators: Generators = None,
    progress: bool = False,
    eta: float = 0.0,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12): z_s = alpha_s D + sqrt(sigma_s^2 - c^2) eps + c xi,
    c = eta * (sigma_s / sigma_t) * sqrt(1 - alpha_t^2 / alpha_s^2) (eq. 16); eta = 0 is deterministic.
    eps comes from the renoise estimate when the denoiser gives one (``Denoised``)."""
    grid = _grid(schedule, times)
    z = grid.sigmas[0] * noise
    for i in _progress(grid.steps, progress, "ddim"):
        (alpha_t, alpha_s), (sigma_t, sigma_s) = grid.alphas[i : i + 2], grid.sigmas[i : i + 2]
        estimate = _evaluate(denoise, z, grid.times[i], "ddim", renoises=True)
        eps = eps_from_denoised(estimate.renoise, z, alpha_t, sigma_t)
        c = eta * (sigma_s / sigma_t) * math.sqrt(max(1 - (alpha_t / alpha_s) ** 2, 0.0))
        z = alpha_s * estimate.data + math.sqrt(max(sigma_s**2 - c**2, 0.0)) * eps
        if c > 0:
            z = z + c * _noise(generators, z, "ddim")
    return z


def ddpm(
    denoise: Denoise,
    noise: Tensor,
    schedule: CosineSchedule,
    times: Tensor,
    generators: Generators = None,
    progress: bool = False,
) -> Tensor:
    """Ancestral sampling from the posterior q(z_s | z_t, y = D) (Ho et al. 2020, eq. 6-7; Kingma et al.
    2021, eq. 33): mean = alpha_ts sigma_s^2/sigma_t^2 z + alpha_s sigma_ts^2/sigma_t^2 D,
    variance = sigma_ts^2 sigma_s^2 / sigma_t^2,
    with alpha_ts = alpha_t/alpha_s and sigma_ts^2 = sigma_t^2 - alpha_ts^2 sigma_s^2."""
    grid = _grid(schedule, times)
    z = grid.sigmas[0] * noise
    for i in _progress(grid.steps, progress, "ddpm"):
        (alpha_t, alpha_s), (sigma_t, sigma_s) = grid.alphas[i : i + 2], grid.sigmas[i : i + 2]
        denoised = _evaluate(denoise, z, grid.times[i], "ddpm").data
        alpha_ts = alpha_t / alpha_s
        sigma_ts_sq = max(sigma_t**2 - alpha_ts**2 * sigma_s**2, 0.0)
        z = (alpha_ts * sigma_s**2 / sigma_t**2) * z + (alpha_s * sigma_ts_sq / sigma_t**2) * denoised
        std = math.sqrt(sigma_ts_sq) * sigma_s / sigma_t
        if std > 0:
            z = z + std * _noise(generators, z, "ddpm")
    return z


def edm(
    denoise: Denoise,
    noise: Tensor,
    schedule: CosineSchedule,
    times: Tensor,
    generators: Generators = None,
    progress: bool = False,
    S_churn: float = 0.0,  # the paper's names
    S_tmin: float = 0.0,
    S_tmax: float = math.inf,
    S_noise: float = 1.0,
) -> Tensor:
    """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2) in x = z / alpha, s = sigma / alpha:
    for s_i in [S_tmin, S_tmax], gamma = min(S_churn / N, sqrt(2) - 1), s_hat = (1 + gamma) s_i and
    x_hat = x + sqrt(s_hat^2 - s_i^2) S_noise xi; then an Euler step of dx/ds = (x - D) / s from s_hat to
    s_{i+1} with Heun's correction (2nd order) unless s_{i+1} = 0. s_hat never exceeds the schedule's
    highest level, the network's training range. S_churn = 0 is Algorithm 1 (``heun``)."""
    grid = _grid(schedule, times)
    highest = schedule_levels(schedule)[1]
    gamma = min(S_churn / grid.steps, math.sqrt(2) - 1)
    name = "edm" if S_churn > 0 else "heun"  # as the user named the sampler, in messages and progress

    def slope(x: Tensor, level: float, t: float) -> Tensor:
        alpha = 1 / math.sqrt(1 + level**2)
        return (x - _evaluate(denoise, alpha * x, t, name).data) / level

    x = grid.level(0) * noise
    for i in _progress(grid.steps, progress, name):
        level, level_next, t = grid.level(i), grid.level(i + 1), grid.times[i]
        if gamma > 0 and S_tmin <= level <= S_tmax:
            raised = max(min(level * (1 + gamma), highest), level)
            x = x + math.sqrt(raised**2 - level**2) * S_noise * _noise(generators, x, "edm")
            level, t = raised, time_of_level(schedule, raised)
        d = slope(x, level, t)
        x_next = x + (level_next - level) * d
        if level_next > 0:
            x_next = x + (level_next - level) * 0.5 * (d + slope(x_next, level_next, grid.times[i + 1]))
        x = x_next
    return x


def heun(
    denoise: Denoise,
    noise: Tensor,
    schedule: CosineSchedule,
    times: Tensor,
    generators: Generators = None,
    progress: bool = False,
) -> Tensor:
    """Deterministic 2nd-order Heun on the probability-flow ODE (Karras et al. 2022, Algorithm 1): ``edm``
    without churn; Euler on the last step."""
    return edm(denoise, noise, schedule, times, generators, progress)


def dpmpp_2m_sde(
    denoise: Denoise,
    noise: Tensor,
    schedule: CosineSchedule,
    times: Tensor,
    generators: Generators = None,
    progress: bool = False,
    eta: float = 1.0,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2), with eta > 0 its stochastic
    variant (SDE-DPM-Solver++, same paper; eta scales the injected noise as k-diffusion's dpmpp_2m_sde):
      z_s = (sigma_s / sigma_t) e^{-eta h} z_t + alpha_s (1 - e^{-(1 + eta) h}) D'
            + sigma_s sqrt(1 - e^{-2 eta h}) xi,
      D' = (1 + 1/(2r)) D_t - 1/(2r) D_prev, r = h_prev / h (D' = D_t on the first step).
    eta = 0 is DPM-Solver++(2M); eta = 1 with D' = D_t is the DDPM posterior step. The last step, to
    sigma = 0 where h is infinite, is first order: z = D_t."""
    grid = _grid(schedule, times)
    name = "dpmpp_2m_sde" if eta > 0 else "dpmpp_2m"
    z = grid.sigmas[0] * noise
    previous: tuple[Tensor, float] | None = None
    for i in _progress(grid.steps, progress, name):
        denoised = _evaluate(denoise, z, grid.times[i], name).data
        if grid.sigmas[i + 1] == 0:
            return denoised
        h = grid.half_logsnr(i + 1) - grid.half_logsnr(i)
        extrapolated = denoised
        if previous is not None:
            previous_denoised, previous_h = previous
            extrapolated = denoised + (h / (2 * previous_h)) * (denoised - previous_denoised)
        z = (grid.sigmas[i + 1] / grid.sigmas[i]) * math.exp(-eta * h) * z - grid.alphas[i + 1] * math.expm1(
            -(1 + eta) * h
        ) * extrapolated
        if eta > 0:
            z = z + grid.sigmas[i + 1] * math.sqrt(-math.expm1(-2 * eta * h)) * _noise(generators, z, name)
        previous = denoised, h
    return z


def dpmpp_2m(
    denoise: Denoise,
    noise: Tensor,
    schedule: CosineSchedule,
    times: Tensor,
    generators: Generators = None,
    progress: bool = False,
) -> Tensor:
    """DPM-Solver++(2M), data-prediction multistep in lambda (Lu et al. 2022, Algorithm 2):
    z_s = (sigma_s / sigma_t) z_t - alpha_s (e^{-h} - 1) D'; ``dpmpp_2m_sde`` at eta = 0."""
    return dpmpp_2m_sde(denoise, noise, schedule, times, generators, progress, eta=0.0)


def _unic_weights(h: float, ratio: float) -> tuple[float, float]:
    """UniC-2's (rho_1, rho_2) for B(h) = e^h - 1 ("bh2"; Zhao et al. 2023, UniPC, sec. 3.1): the solution
    of [[1, 1], [r_1, 1]] rho = (psi_1, 2 psi_2) / B with B = e^{-h} - 1 (data prediction steps in -h),
    psi_1 = B / (-h) - 1 and psi_2 = psi_1 / (-h) - 1/2 (the scaled phi-functions of the exponential
    integrator's Taylor terms), r_1 = ``ratio``."""
    b_h = math.expm1(-h)
    phi_2 = b_h / -h - 1
    phi_3 = phi_2 / -h - 0.5
    g_1, g_2 = phi_2 / b_h, 2 * phi_3 / b_h
    rho_1 = (g_1 - g_2) / (1 - ratio)
    return rho_1, g_1 - rho_1


def unipc(
    denoise: Denoise,
    noise: Tensor,
    schedule: CosineSchedule,
    times: Tensor,
    generators: Generators = None,
    progress: bool = False,
) -> Tensor:
    """UniPC, order 2, data prediction, B(h) = e^h - 1 (Zhao et al. 2023). Each step predicts with UniP-2
    (with this B, the DPM-Solver++(2M) step; UniP-1 = DDIM on the first), evaluates D once at the
    prediction, and corrects the prediction with UniC using that same D:
      predicted z_s = (sigma_s / sigma_t) z_t + alpha_s (1 - e^{-h}) (D_t + D_1 / 2),
      corrected z_s = (sigma_s / sigma_t) z_t + alpha_s (1 - e^{-h}) (D_t + rho_1 D_1 + rho_2 (D_s - D_t)),
      D_1 = (D_prev - D_t) / r_1, r_1 = (lambda_prev - lambda_t) / h, D_s = D(predicted z_s)
    (UniP-1 / UniC-1 on the first step: no D_1, rho_2 = 1/2). The next step starts from the corrected z_s
    with D_s, the evaluation it already has.
    So NFE = steps; the last step, to sigma = 0, is first order (z = D_t) and needs no corrector."""
    grid = _grid(schedule, times)
    z = grid.sigmas[0] * noise
    denoised = _evaluate(denoise, z, grid.times[0], "unipc").data
    previous: tuple[Tensor, float] | None = None
    for i in _progress(grid.steps, progress, "unipc"):
        if grid.sigmas[i + 1] == 0:
            return denoised
        h = grid.half_logsnr(i + 1) - grid.half_logsnr(i)
        decay, gain = grid.sigmas[i + 1] / grid.sigmas[i], -grid.alphas[i + 1] * math.expm1(-h)
        base = decay * z + gain * denoised
        if previous is None:
            predicted = base
        else:
            ratio = -previous[1] / h
            difference = (previous[0] - denoised) / ratio
            predicted = base + 0.5 * gain * difference
        next_denoised = _evaluate(denoise, predicted, grid.times[i + 1], "unipc").data
        if previous is None:
            z = base + 0.5 * gain * (next_denoised - denoised)
        else:
            rho_1, rho_2 = _unic_weights(h, ratio)
            z = base + gain * (rho_1 * difference + rho_2 * (next_denoised - denoised))
        previous, denoised = (denoised, h), next_denoised
    return z


class Solver(NamedTuple):
    """A registered sampler: its function, order (also the fewest steps it takes), network evaluations
    per step (2 for Heun-type: NFE = 2N - 1, none at sigma = 0), whether it may draw noise (then it
    needs generators), the options it takes with their defaults, and whether it can renoise with a
    separate estimate (``Denoised.renoise``)."""

    function: Callable[..., Tensor]
    order: int
    evaluations_per_step: int
    stochastic: bool
    options: dict[str, float]
    renoises: bool = False


SOLVERS: dict[str, Solver] = {
    "ddim": Solver(ddim, 1, 1, False, {"eta": 0.0}, renoises=True),
    "ddpm": Solver(ddpm, 1, 1, True, {}),
    "heun": Solver(heun, 2, 2, False, {}),
    "edm": Solver(edm, 2, 2, True, {"S_churn": 0.0, "S_tmin": 0.0, "S_tmax": math.inf, "S_noise": 1.0}),
    "dpmpp_2m": Solver(dpmpp_2m, 2, 1, False, {}),
    "dpmpp_2m_sde": Solver(dpmpp_2m_sde, 2, 1, True, {"eta": 1.0}),
    "unipc": Solver(unipc, 2, 1, False, {}),
}
