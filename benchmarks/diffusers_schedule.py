"""Our cosine schedule as diffusers' discrete schedule, shared by the benchmarks that run a diffusers
scheduler around our network: alpha_bar_k = sigmoid(logsnr(t_k)) at t_k = (k + 1) / 1000, and the
network sees t_k for diffusers' integer timestep k. With ``timestep_spacing="trailing"`` and a step count
dividing 1000, diffusers then visits our ``uniform_t`` grid t = 1, 1 - 1/N, ..., 1/N."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lightning_diffusion.diffusion.schedule import CosineSchedule

TRAIN_TIMESTEPS = 1000


def alphas_cumprod(schedule: CosineSchedule) -> Tensor:
    """alpha_bar_k = sigmoid(logsnr(t_k)), t_k = (k + 1) / 1000, k = 0 ... 999 (float64)."""
    times = torch.arange(1, TRAIN_TIMESTEPS + 1, dtype=torch.float64) / TRAIN_TIMESTEPS
    return torch.sigmoid(schedule.logsnr(times))


def network_time(timestep: Tensor | int) -> float:
    """The continuous time t_k our network sees for diffusers' integer timestep k."""
    return (int(timestep) + 1) / TRAIN_TIMESTEPS


def scheduler_on(scheduler_class: type, schedule: CosineSchedule, **config: Any) -> Any:
    """A diffusers scheduler of ``scheduler_class`` (with ``config``) on our schedule: ``trained_betas``
    whose cumulative product is ``alphas_cumprod(schedule)``, and then the exact values themselves in
    place of their float32 cumulative product."""
    alpha_bar = alphas_cumprod(schedule)
    betas = 1.0 - alpha_bar / torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
    scheduler = scheduler_class(num_train_timesteps=TRAIN_TIMESTEPS, trained_betas=betas.tolist(), **config)
    scheduler.alphas_cumprod = alpha_bar.float()
    return scheduler


def run_scheduler(
    scheduler: Any, denoise: Callable[[Tensor, Tensor], Tensor], noise: Tensor, steps: int
) -> Tensor:
    """diffusers' sampling loop over ``steps`` timesteps with ``denoise(z, t)`` (our D, for a scheduler
    configured with ``prediction_type="sample"``) as the model output."""
    scheduler.set_timesteps(steps)
    z = noise * scheduler.init_noise_sigma
    for k in scheduler.timesteps:
        t = torch.full((z.shape[0],), network_time(k), dtype=z.dtype)
        z = scheduler.step(denoise(scheduler.scale_model_input(z, k), t), k, z).prev_sample
    return z
