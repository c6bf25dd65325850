"""CFG-Zero* in our D parameterisation: the optimized scale on rectified-flow velocities and zero-init."""

from __future__ import annotations

import pytest
import torch
from gaussian import SHAPE
from test_guidance import NULL, PATTERN, SCHEDULE, ToyModel, batch, close
from torch import Tensor

from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import SamplerSpec, eps_from_denoised
from lightning_diffusion.guidance import CFGZeroStar, GuidedDenoiser
from lightning_diffusion.guidance.cfg_zero_star import denoised_from_flow_velocity, flow_velocity


class VelocityModel:
    """Outputs the D whose rectified-flow velocity eps - y is a given image per label (NULL: ∅)."""

    def __init__(self, velocities: dict[int, Tensor]) -> None:
        self.schedule = SCHEDULE
        self.velocities = velocities

    def denoise(self, z: Tensor, t: Tensor, cond: dict) -> Tensor:
        velocity = torch.stack([self.velocities[int(label)] for label in cond["label"]])
        return denoised_from_flow_velocity(velocity, z, *self.schedule.alpha_sigma(t))

    def null_condition(self, batch_size: int, device: torch.device) -> dict[str, Tensor]:
        return {"label": torch.full((batch_size,), NULL, device=device)}


def image(*values: float) -> Tensor:
    return torch.tensor(values, dtype=torch.float64).reshape(SHAPE)


def guided_velocity(model: VelocityModel, scale: float, n: int = 2) -> Tensor:
    z, t, _ = batch(n)
    guided = CFGZeroStar(scale, zero_init_steps=0)(model, z, t, {"label": torch.ones(n, dtype=torch.long)})
    return flow_velocity(guided, z, *SCHEDULE.alpha_sigma(t))


def test_flow_velocity_is_eps_minus_the_data_and_inverts():
    z, t, _ = batch()
    alpha, sigma = SCHEDULE.alpha_sigma(t)
    denoised = ToyModel().expected(z, torch.tensor([0, 1, 2]))
    velocity = flow_velocity(denoised, z, alpha, sigma)
    close(velocity, eps_from_denoised(denoised, z, alpha, sigma) - denoised)
    close(denoised_from_flow_velocity(velocity, z, alpha, sigma), denoised)


@pytest.mark.parametrize("scale", [0.0, 3.0, 7.5])
def test_parallel_velocities_make_the_optimized_scale_their_ratio(scale):
    """u_c = 4 u_u: s* = 4, so s* u_u = u_c and the guidance term s (u_c - s* u_u) vanishes at any s."""
    model = VelocityModel({1: 2.0 * PATTERN, NULL: 0.5 * PATTERN})
    close(guided_velocity(model, scale), (2.0 * PATTERN).expand(2, *SHAPE))


def test_optimized_scale_matches_a_hand_computation():
    # u_c = (1, 0, 0, 0), u_u = (1, 1, 0, 0): s* = 1/2, s* u_u = (1/2, 1/2, 0, 0);
    # at s = 3: u = s* u_u + 3 (u_c - s* u_u) = (2, -1, 0, 0).
    model = VelocityModel({1: image(1, 0, 0, 0), NULL: image(1, 1, 0, 0)})
    close(guided_velocity(model, 3.0), image(2, -1, 0, 0).expand(2, *SHAPE))


def test_scale_one_is_the_conditional_model_in_one_pass():
    model = ToyModel()
    z, t, cond = batch()
    guided = CFGZeroStar(1.0, zero_init_steps=0).guide(model, z, t, cond)
    close(guided.denoised, model.expected(z, cond["label"]))
    assert model.calls == [3]


def ddim_states(guidance: CFGZeroStar, model: ToyModel, steps: int = 6) -> list[tuple[Tensor, float]]:
    """The (z, t) of every evaluation of one DDIM run."""
    noise = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    denoise = GuidedDenoiser(model, guidance, {"label": torch.tensor([1, 2])})
    states = []

    def recording(z: Tensor, t: Tensor) -> Tensor:
        states.append((z.clone(), float(t[0])))
        return denoise(z, t)

    SamplerSpec("ddim", steps).sample(recording, noise, SCHEDULE)
    return states


def flow_state(z: Tensor, t: float) -> Tensor:
    """The rectified flow's state x = z / (alpha + sigma) at the same noise level."""
    alpha, sigma = SCHEDULE.alpha_sigma(torch.tensor(t, dtype=torch.float64))
    return z / (alpha + sigma)


def test_zero_init_steps_leave_the_flow_state_unchanged_without_network_calls_in_every_run():
    model, guidance = ToyModel(), CFGZeroStar(3.0, zero_init_steps=2)
    for _ in range(2):  # counted per run: the second run zero-inits again
        model.calls.clear()
        states = ddim_states(guidance, model)
        start = flow_state(*states[0])
        close(flow_state(*states[1]), start)
        close(flow_state(*states[2]), start)  # after two zeroed steps the state has not moved
        assert not torch.allclose(flow_state(*states[3]), start)
        assert model.calls == [4] * 4  # 6 steps, the first 2 cost nothing


def test_zero_init_needs_one_time_per_batch():
    z, t, cond = batch()
    with pytest.raises(ConfigError, match="share one time"):
        CFGZeroStar(3.0)(ToyModel(), z, t, cond)


@pytest.mark.parametrize("steps", [-1, 1.5, True])
def test_zero_init_steps_must_be_a_count(steps):
    with pytest.raises(ConfigError, match="zero_init_steps"):
        CFGZeroStar(3.0, zero_init_steps=steps)
