"""Adaptive projected guidance against CFG and hand computations on a two-pixel image."""

from __future__ import annotations

import math

import pytest
import torch
from test_guidance import NULL, SCHEDULE, ToyModel, batch, close
from torch import Tensor

from lightning_diffusion.config import ConfigError
from lightning_diffusion.guidance import AdaptiveProjectedGuidance, APGOptions, ClassifierFree, GuidedDenoiser

SQRT2 = math.sqrt(2.0)


class TwoEstimates:
    """D_c for a real label, D_u for the null label, whatever z is: one-sample, two-pixel images."""

    def __init__(self, conditional: list[float], unconditional: list[float]) -> None:
        self.schedule = SCHEDULE
        self.conditional, self.unconditional = pixels(conditional), pixels(unconditional)

    def denoise(self, z: Tensor, t: Tensor, cond: dict) -> Tensor:
        null = (cond["label"] == NULL).reshape(-1, 1, 1, 1)
        return torch.where(null, self.unconditional, self.conditional)

    def null_condition(self, batch_size: int, device: torch.device) -> dict[str, Tensor]:
        return {"label": torch.full((batch_size,), NULL, device=device)}


def pixels(values: list[float]) -> Tensor:
    return torch.tensor(values, dtype=torch.float64).reshape(1, 1, 1, 2)


def step(model: TwoEstimates, guidance: AdaptiveProjectedGuidance) -> Tensor:
    z, t = torch.zeros(1, 1, 1, 2, dtype=torch.float64), torch.full((1,), 0.5, dtype=torch.float64)
    return guidance.guide(model, z, t, {"label": torch.tensor([1])}).denoised


@pytest.mark.parametrize("scale", [0.0, 0.5, 3.0, 7.5])
def test_apg_with_eta_one_no_threshold_and_no_momentum_is_cfg(scale):
    model = ToyModel()
    apg = AdaptiveProjectedGuidance(scale, eta=1.0, norm_threshold=math.inf, momentum=0.0)
    for seed in range(2):  # two steps: no state carries over
        z, t, cond = batch(seed=seed)
        close(apg(model, z, t, cond), ClassifierFree(scale)(ToyModel(), z, t, cond))


def test_apg_projects_the_update_on_the_conditional_estimate():
    # dD = D_c - D_u = (1, 1); its part parallel to D_c = (2, 0) is (<dD, D_c> / |D_c|^2) D_c = (1, 0),
    # the orthogonal part (0, 1).
    model = TwoEstimates([2.0, 0.0], [1.0, -1.0])
    guided = step(model, AdaptiveProjectedGuidance(3.0, eta=0.5, momentum=0.0))
    close(guided, pixels([2.0 + 2.0 * 0.5, 2.0 * 1.0]))  # D_c + (s - 1)(orthogonal + eta parallel)
    close(step(model, AdaptiveProjectedGuidance(3.0, eta=0.0, momentum=0.0)), pixels([2.0, 2.0]))


def test_apg_rescales_the_update_to_the_norm_threshold():
    # |dD| = sqrt(2) > r = 1: dD -> (1, 1) / sqrt(2), split into (1/sqrt(2), 0) and (0, 1/sqrt(2)).
    model = TwoEstimates([2.0, 0.0], [1.0, -1.0])
    guided = step(model, AdaptiveProjectedGuidance(3.0, eta=0.5, norm_threshold=1.0, momentum=0.0))
    close(guided, pixels([2.0 + 1 / SQRT2, SQRT2]))
    unchanged = step(model, AdaptiveProjectedGuidance(3.0, eta=0.5, norm_threshold=2.0, momentum=0.0))
    close(unchanged, pixels([3.0, 2.0]))  # |dD| <= r: no rescaling


def test_apg_momentum_adds_the_previous_update_and_resets_between_runs():
    model = TwoEstimates([2.0, 0.0], [1.0, -1.0])  # dD_1 = (1, 1)
    apg = AdaptiveProjectedGuidance(2.0, eta=1.0, momentum=-0.5)
    GuidedDenoiser(model, apg, {})
    close(step(model, apg), pixels([3.0, 1.0]))  # first step: dD_1 alone
    model.unconditional = pixels([2.0, -2.0])  # dD_2 = (0, 2); with momentum (0, 2) - 0.5 (1, 1)
    close(step(model, apg), pixels([2.0 - 0.5, 1.5]))
    model.unconditional = pixels([1.0, -1.0])
    GuidedDenoiser(model, apg, {})  # a new run forgets the momentum
    close(step(model, apg), pixels([3.0, 1.0]))


def test_apg_at_scale_one_is_the_conditional_model_in_one_pass():
    model = ToyModel()
    z, t, cond = batch()
    guided = AdaptiveProjectedGuidance(1.0).guide(model, z, t, cond)
    close(guided.denoised, model.expected(z, cond["label"]))
    assert model.calls == [3]


def test_apg_defaults_follow_the_paper():
    assert APGOptions() == APGOptions(eta=0.0, norm_threshold=math.inf, momentum=-0.5)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"eta": math.nan}, "eta"),
        ({"norm_threshold": 0.0}, "norm_threshold"),
        ({"momentum": 1.0}, "momentum"),
    ],
)
def test_apg_refuses_bad_options(options, match):
    with pytest.raises(ConfigError, match=match):
        AdaptiveProjectedGuidance(2.0, **options)
