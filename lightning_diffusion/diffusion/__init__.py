"""The diffusion math, free of Lightning: noise process, parameterisations, loss and samplers."""

from lightning_diffusion.diffusion.grids import GRIDS, noise_grid
from lightning_diffusion.diffusion.loss import diffusion_loss, loss_weight, noised, random_time_loss
from lightning_diffusion.diffusion.noise import randn, sample_generators, sample_seed
from lightning_diffusion.diffusion.parameterization import (
    PREDICTIONS,
    denoised_from_output,
    denoised_from_score,
    eps_from_denoised,
    score_from_denoised,
)
from lightning_diffusion.diffusion.samplers import (
    SOLVERS,
    Denoised,
    ddim,
    ddpm,
    dpmpp_2m,
    dpmpp_2m_sde,
    edm,
    heun,
    unipc,
)
from lightning_diffusion.diffusion.schedule import CosineSchedule
from lightning_diffusion.diffusion.spec import SamplerSpec

__all__ = [
    "GRIDS",
    "PREDICTIONS",
    "SOLVERS",
    "CosineSchedule",
    "Denoised",
    "SamplerSpec",
    "ddim",
    "ddpm",
    "denoised_from_output",
    "denoised_from_score",
    "diffusion_loss",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "edm",
    "eps_from_denoised",
    "heun",
    "loss_weight",
    "noise_grid",
    "noised",
    "randn",
    "random_time_loss",
    "sample_generators",
    "sample_seed",
    "score_from_denoised",
    "unipc",
]
