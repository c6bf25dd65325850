"""Lightning callbacks of lightning-diffusion (EMA is Lightning's own ``EMAWeightAveraging``)."""

from callbacks.budget import TrainingBudget
from callbacks.finite_loss import FiniteLossGuard, TrainingDiverged
from callbacks.gpu_speedups import GPUSpeedups
from callbacks.guidance_sweep import GuidanceSweep
from callbacks.sample_grid import SampleGrid

__all__ = ["FiniteLossGuard", "GPUSpeedups", "GuidanceSweep", "SampleGrid", "TrainingBudget", "TrainingDiverged"]
