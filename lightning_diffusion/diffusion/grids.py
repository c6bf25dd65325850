"""Noise-level grids: the decreasing times t_0 > t_1 > ... > t_N = 0 a sampler walks.

Levels are written as EDM's sigma = sigma_t / alpha_t (Karras et al. 2022, sec. 2: z / alpha = y + sigma n),
so log-SNR = -2 log sigma. The grid runs from ``sigma_max`` (default: the schedule's highest level, about
1800 for log-SNR -15) down to ``sigma_min`` at t_{N-1}, then jumps to t_N = 0, which samplers treat as
clean data (alpha = 1, sigma = 0; no network evaluation there), as k-diffusion's sigmas end in 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion.schedule import CosineSchedule

EDM_RHO = 7.0  # Karras et al. 2022, eq. 5 and Table 1
EDM_SIGMA_MIN = 0.002  # Karras et al. 2022, Table 1: the lowest level before the jump to 0


def schedule_levels(schedule: CosineSchedule) -> tuple[float, float]:
    """The lowest and highest sigma / alpha (= exp(-logsnr / 2)) the schedule reaches, at t = 0 and t = 1."""
    return math.exp(-0.5 * schedule.logsnr_max), math.exp(-0.5 * schedule.logsnr_min)


def time_of_level(schedule: CosineSchedule, level: float) -> float:
    """The time t in [0, 1] at which sigma / alpha = ``level`` (log-SNR = -2 log level)."""
    return float(schedule.time(torch.tensor(-2 * math.log(level), dtype=torch.float64)).clamp(0, 1))


def _uniform_t(top: float, bottom: float | None, schedule: CosineSchedule, steps: int) -> Tensor:
    """Uniform in t from t(sigma_max): down to t = 0 (the seed's grid, t_{N-1} = t_0 / N), or to
    t(sigma_min) at i = N - 1 when ``sigma_min`` is given."""
    t_top = time_of_level(schedule, top)
    if bottom is None:
        return torch.linspace(t_top, 0.0, steps + 1, dtype=torch.float64)[:-1]
    return torch.linspace(t_top, time_of_level(schedule, bottom), steps, dtype=torch.float64)


def _uniform_logsnr(top: float, bottom: float, schedule: CosineSchedule, steps: int) -> Tensor:
    """Uniform in log-SNR between the two levels (the 'logSNR' time steps of DPM-Solver, Lu et al. 2022)."""
    logsnr = torch.linspace(-2 * math.log(top), -2 * math.log(bottom), steps, dtype=torch.float64)
    return schedule.time(logsnr)


def _edm(top: float, bottom: float, schedule: CosineSchedule, steps: int) -> Tensor:
    """Karras et al. 2022, eq. 5: sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) -
    sigma_max^(1/rho)))^rho for i < N, rho = 7."""
    roots = torch.linspace(top ** (1 / EDM_RHO), bottom ** (1 / EDM_RHO), steps, dtype=torch.float64)
    return schedule.time(-2.0 * torch.log(roots**EDM_RHO))


GridFunction = Callable[[float, "float | None", CosineSchedule, int], Tensor]
GRIDS: dict[str, GridFunction] = {"uniform_t": _uniform_t, "logsnr": _uniform_logsnr, "edm": _edm}


def noise_grid(
    schedule: CosineSchedule,
    steps: int,
    grid: str = "uniform_t",
    sigma_max: float | None = None,
    sigma_min: float | None = None,
) -> Tensor:
    """The N + 1 decreasing times (float64) of an N-step grid, from t(sigma_max) to t(sigma_min) and a
    final 0. ``sigma_max`` defaults to the schedule's highest level; ``sigma_min`` to EDM's 0.002 (kept
    inside the schedule) on the ``logsnr`` and ``edm`` grids and, on ``uniform_t``, to the seed's grid."""
    if grid not in GRIDS:
        raise ConfigError(f"unknown noise-level grid {grid!r}; choose one of {', '.join(GRIDS)}.")
    lowest, highest = schedule_levels(schedule)
    top = highest if sigma_max is None else sigma_max
    bottom = sigma_min if sigma_min is not None or grid == "uniform_t" else max(EDM_SIGMA_MIN, lowest)
    if not lowest <= top <= highest * (1 + 1e-9):
        raise ConfigError(
            f"sigma_max={top:g} is outside the schedule's noise levels [{lowest:.3g}, {highest:.4g}] "
            "(sigma / alpha); pick a level inside them, or null for the highest."
        )
    if bottom is not None and not lowest * (1 - 1e-9) <= bottom < top:
        raise ConfigError(
            f"sigma_min={bottom:g} must lie in [{lowest:.3g}, sigma_max={top:g}) (sigma / alpha levels of "
            "the schedule)."
        )
    times = GRIDS[grid](min(top, highest), bottom, schedule, steps).clamp(0.0, 1.0)
    return torch.cat([times, times.new_zeros(1)])
