"""CFG++: guided clean estimate, renoised with the unconditional noise, through DDIM by hand."""

from __future__ import annotations

import pytest
import torch
from gaussian import SHAPE
from test_guidance import NULL, SCHEDULE, ToyModel, batch, close
from torch import Tensor

from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import Denoised, SamplerSpec, ddim, eps_from_denoised
from lightning_diffusion.guidance import (
    CFGPlusPlus,
    CFGRescale,
    ClassifierFree,
    GuidanceInterval,
    GuidedDenoiser,
)

TIMES = torch.tensor([0.8, 0.5, 0.0], dtype=torch.float64)
LABELS = torch.tensor([1, 2])


def second_state(guidance, model: ToyModel) -> tuple[Tensor, Tensor]:
    """(z_0, z_1): the start of a two-step DDIM run and the state after its first step."""
    noise = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    denoise = GuidedDenoiser(model, guidance, {"label": LABELS})
    states = []

    def recording(z: Tensor, t: Tensor):
        states.append(z.clone())
        return denoise(z, t)

    ddim(recording, noise, SCHEDULE, TIMES)
    return states[0], states[1]


def test_one_ddim_step_is_the_papers_update():
    model, scale = ToyModel(), 0.6
    z, z_next = second_state(CFGPlusPlus(scale), model)
    (alpha, alpha_next), (sigma, sigma_next) = SCHEDULE.alpha_sigma(TIMES[:2])
    conditional = model.expected(z, LABELS)
    unconditional = model.expected(z, torch.full((2,), NULL))
    guided = unconditional + scale * (conditional - unconditional)
    close(z_next, alpha_next * guided + sigma_next * eps_from_denoised(unconditional, z, alpha, sigma))
    cfg_step = alpha_next * guided + sigma_next * eps_from_denoised(guided, z, alpha, sigma)
    assert not torch.allclose(z_next, cfg_step)  # CFG would renoise with the guided estimate


def test_cfgpp_is_ddim_cfg_at_the_time_varying_weight_it_implies():
    """lambda alpha_s = w (alpha_s - sigma_s alpha_t / sigma_t), i.e. w = lambda / (1 - l_s / l_t) with the
    EDM levels l = sigma / alpha."""
    scale = 0.6
    (alpha, alpha_next), (sigma, sigma_next) = SCHEDULE.alpha_sigma(TIMES[:2])
    weight = float(scale / (1 - (sigma_next / alpha_next) / (sigma / alpha)))
    cfgpp_step = second_state(CFGPlusPlus(scale), ToyModel())[1]
    close(cfgpp_step, second_state(ClassifierFree(weight), ToyModel())[1])


def test_scale_zero_is_unconditional_in_one_pass():
    model = ToyModel()
    z, t, cond = batch()
    guided = CFGPlusPlus(0.0).guide(model, z, t, cond)
    close(guided.denoised, model.expected(z, torch.full((3,), NULL)))
    assert guided.renoise is guided.denoised and model.calls == [3]


def test_renoise_passes_through_modifiers_and_is_merged_across_an_interval():
    model = ToyModel()
    z, _, cond = batch(4)
    t = torch.tensor([0.1, 0.5, 0.55, 0.95], dtype=torch.float64)
    unconditional = model.expected(z, torch.full((4,), NULL))
    assert CFGRescale(CFGPlusPlus(0.5)).guide(model, z, t, cond).renoise is not None
    levels = (SCHEDULE.alpha_sigma(t)[1] / SCHEDULE.alpha_sigma(t)[0]).tolist()
    merged = GuidanceInterval(CFGPlusPlus(0.5), levels[0], levels[2]).guide(model, z, t, cond)
    inside = torch.tensor([False, True, True, False])
    close(merged.renoise[inside], unconditional[inside])
    close(merged.renoise[~inside], model.expected(z, cond["label"])[~inside])  # plain conditional outside
    denoised = GuidedDenoiser(model, CFGPlusPlus(0.5), cond)(z, t)
    assert isinstance(denoised, Denoised)
    close(denoised.renoise, unconditional)


@pytest.mark.parametrize("sampler", ["heun", "unipc", "dpmpp_2m"])
def test_samplers_that_cannot_renoise_refuse_it(sampler):
    noise = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    denoise = GuidedDenoiser(ToyModel(), CFGPlusPlus(0.5), {"label": LABELS})
    with pytest.raises(ConfigError, match=r"sampler cannot renoise.*such as ddim"):
        SamplerSpec(sampler, 4).sample(denoise, noise, SCHEDULE)


@pytest.mark.parametrize("scale", [-0.1, 1.5])
def test_scale_outside_zero_one_is_refused(scale):
    with pytest.raises(ConfigError, match=r"lambda must lie in \[0, 1\]"):
        CFGPlusPlus(scale)
