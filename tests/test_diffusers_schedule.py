"""Our multistep samplers against diffusers' on the same schedule: with the mapping of
benchmarks/diffusers_schedule.py and "trailing" spacing, diffusers walks our uniform_t grid, so its
DPM-Solver++(2M) and UniPC-2 (bh2) must give our dpmpp_2m and unipc images from the same noise."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from gaussian import SHAPE, GaussianData

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from diffusers_schedule import run_scheduler, scheduler_on

from lightning_diffusion.diffusion import SamplerSpec

diffusers = pytest.importorskip("diffusers")
DATA = GaussianData.example()
STEPS = 20  # divides 1000, so diffusers' trailing timesteps are exactly our grid
COMMON = {"prediction_type": "sample", "timestep_spacing": "trailing", "final_sigmas_type": "zero"}


@pytest.mark.parametrize(
    ("ours", "scheduler_class", "config"),
    [
        ("dpmpp_2m", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
        ("unipc", "UniPCMultistepScheduler", {"solver_type": "bh2", "predict_x0": True}),
    ],
)
def test_our_multistep_samplers_match_diffusers_on_the_uniform_t_grid(
    ours: str, scheduler_class: str, config: dict
) -> None:
    noise = torch.randn(64, *SHAPE, generator=torch.Generator().manual_seed(0))
    scheduler = scheduler_on(getattr(diffusers, scheduler_class), DATA.schedule, **config, **COMMON)
    theirs = run_scheduler(scheduler, DATA.denoise, noise, STEPS)
    mine = SamplerSpec(name=ours, steps=STEPS).sample(DATA.denoise, noise, DATA.schedule)
    difference = (theirs - mine).abs().max().item()
    assert difference < 1e-4, f"{ours} vs diffusers: max |difference| {difference:.2e}"
    assert (
        theirs - SamplerSpec(name="ddim", steps=STEPS).sample(DATA.denoise, noise, DATA.schedule)
    ).abs().max() > 1e-3
