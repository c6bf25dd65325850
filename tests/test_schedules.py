"""Guidance schedules over the noise level, for any method, against hand-computed scales."""

from __future__ import annotations

import math

import pytest
import torch
from gaussian import SHAPE
from test_guidance import NULL, SCHEDULE, LinearClassifier, ToyModel, batch, close
from torch import Tensor

from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import SamplerSpec
from lightning_diffusion.guidance import (
    SCHEDULES,
    AdaptiveProjectedGuidance,
    AutoGuidance,
    CFGPlusPlus,
    CFGZeroStar,
    ClassifierFree,
    ClassifierGuidance,
    GuidanceInterval,
    GuidedDenoiser,
    ScaleSchedule,
    scheduled,
)


def at_time(time: float, n: int = 3) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    z, _, cond = batch(n)
    return z, torch.full((n,), time, dtype=torch.float64), cond


def ddim_sample(guidance, model: ToyModel, steps: int = 8) -> Tensor:
    noise = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    denoise = GuidedDenoiser(model, guidance, {"label": torch.tensor([1, 2])})
    return SamplerSpec("ddim", steps).sample(denoise, noise, SCHEDULE)


def test_no_schedule_and_the_constant_one_are_the_plain_method():
    cfg = ClassifierFree(3.0)
    assert scheduled(cfg, None) is cfg
    assert scheduled(cfg, {"name": "constant"}) is cfg


@pytest.mark.parametrize(
    ("spec", "scales"),
    [  # (time, scale) by hand at s = 2: linear 2 s (1 - t), cosine s (1 + cos(pi t))
        ({"name": "linear"}, [(1.0, 0.0), (0.75, 1.0), (0.0, 4.0)]),
        ({"name": "cosine"}, [(1.0, 0.0), (0.5, 2.0), (0.0, 4.0)]),
        ({"name": "linear", "start": 1.0, "end": 3.0}, [(1.0, 2.0), (0.5, 4.0), (0.0, 6.0)]),
        ({"name": "cosine", "start": 2.0, "end": 0.0}, [(1.0, 4.0), (0.0, 0.0)]),
    ],
)
def test_ramps_evaluate_the_method_at_the_hand_computed_scale(spec, scales):
    guidance = scheduled(ClassifierFree(2.0), spec)
    for time, scale in scales:
        assert math.isclose(guidance.scale_at(time), scale, abs_tol=1e-12)
        z, t, cond = at_time(time)
        close(guidance(ToyModel(), z, t, cond), ClassifierFree(scale)(ToyModel(), z, t, cond))


def test_linear_ramp_gives_the_end_scales_at_the_ends_of_a_sampler_grid():
    """The grid starts at t = 1 (scale 0: one unconditional pass) and ends at t = 1/N, near the end scale."""
    model, steps = ToyModel(), 8
    guidance = scheduled(ClassifierFree(2.0), {"name": "linear"})
    seen: list[float] = []

    def recording(z: Tensor, t: Tensor):
        seen.append(float(t[0]))
        return denoise(z, t)

    denoise = GuidedDenoiser(model, guidance, {"label": torch.tensor([1, 2])})
    noise = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    SamplerSpec("ddim", steps).sample(recording, noise, SCHEDULE)
    assert seen[0] == 1.0 and guidance.scale_at(seen[0]) == 0.0
    assert math.isclose(guidance.scale_at(seen[-1]), 4.0 * (1 - 1 / steps))  # uniform_t: t_{N-1} = 1/N
    assert model.calls == [2, 4, 2] + [4] * (steps - 3)  # t = 3/4 gives s = 1: the conditional pass alone


def test_interval_schedule_is_the_guidance_interval():
    spec = {"name": "interval", "sigma_min": 0.28, "sigma_max": 2.9}
    guidance = scheduled(ClassifierFree(3.0), spec)
    assert type(guidance) is GuidanceInterval and (guidance.sigma_min, guidance.sigma_max) == (0.28, 2.9)
    model, reference = ToyModel(), ToyModel()
    samples = ddim_sample(guidance, model)
    torch.testing.assert_close(
        samples, ddim_sample(GuidanceInterval(ClassifierFree(3.0), 0.28, 2.9), reference)
    )
    assert model.calls == reference.calls


WEAK_MODEL, CLASSIFIER = ToyModel(0.2), LinearClassifier()


@pytest.mark.parametrize(
    "make",
    [
        ClassifierFree,
        lambda scale: AdaptiveProjectedGuidance(scale, eta=0.3, norm_threshold=2.0, momentum=0.0),
        lambda scale: CFGZeroStar(scale, zero_init_steps=0),
        lambda scale: AutoGuidance(WEAK_MODEL, scale),
        lambda scale: ClassifierGuidance(CLASSIFIER, scale),
    ],
)
def test_a_schedule_serves_every_method(make):
    guidance = scheduled(make(2.0), {"name": "cosine", "start": 0.5, "end": 1.5})
    z, t, cond = at_time(0.25)
    scale = 2.0 * (0.5 + math.sin(math.pi * 0.75 / 2) ** 2)  # ramp (1 - cos(pi p)) / 2 = sin^2(pi p / 2)
    close(guidance(ToyModel(), z, t, cond), make(scale)(ToyModel(), z, t, cond))


@pytest.mark.parametrize(
    ("guidance", "spec", "match"),
    [
        (ClassifierFree(2.0), {"name": "linear", "start": -1.0}, "finite and >= 0"),
        (ClassifierFree(-2.0), {"name": "cosine"}, "scale >= 0"),
        (ClassifierFree(-2.0), {"name": "constant"}, "scale >= 0"),
        (ClassifierFree(2.0), {"name": "linaer"}, "did you mean linear.*constant, linear, cosine, interval"),
        (ClassifierFree(2.0), {}, "unknown guidance schedule None"),
        (ClassifierFree(2.0), {"name": "linear", "slope": 1.0}, "takes start, end; unknown: slope"),
        (ClassifierFree(2.0), {"name": "interval", "sigma_min": 0.3}, "missing: sigma_max"),
        (CFGPlusPlus(0.8), {"name": "linear"}, "reaches scale 1.6, which the method refuses"),
    ],
)
def test_bad_schedules_are_refused_before_sampling(guidance, spec, match):
    with pytest.raises(ConfigError, match=match):
        scheduled(guidance, spec)


def test_a_schedule_needs_one_time_per_batch():
    z, t, cond = batch()
    with pytest.raises(ConfigError, match="share one time"):
        ScaleSchedule(ClassifierFree(2.0), lambda p: p)(ToyModel(), z, t, cond)


def test_schedules_are_registered_by_name():
    assert set(SCHEDULES) == {"constant", "linear", "cosine", "interval"}
    z, t, cond = at_time(1.0)
    close(
        scheduled(ClassifierFree(5.0), {"name": "linear"})(ToyModel(), z, t, cond),
        ToyModel().expected(z, torch.full((3,), NULL)),
    )
