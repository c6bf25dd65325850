"""Lightning callbacks of lightning-diffusion (EMA is Lightning's own ``EMAWeightAveraging``; post-hoc EMA
snapshots are ``PostHocEMA``)."""

from callbacks.budget import TrainingBudget
from callbacks.finite_loss import FiniteLossGuard, TrainingDiverged
from callbacks.gpu_speedups import GPUSpeedups
from callbacks.guidance_sweep import GuidanceSweep
from callbacks.posthoc_ema import PostHocEMA
from callbacks.sample_grid import SampleGrid

__all__ = [
    "FiniteLossGuard",
    "GPUSpeedups",
    "GuidanceSweep",
    "PostHocEMA",
    "SampleGrid",
    "TrainingBudget",
    "TrainingDiverged",
]
