"""CFG-Zero* (Fan et al. 2025, "CFG-Zero*: Improved Classifier-Free Guidance for Flow Matching Models",
Sec. 4: optimized scale and zero-init), translated from flow-matching velocities to our D.

The paper's models are rectified flows, x_t = (1 - t) y + t eps, predicting the velocity u = eps - y. At
our (z, t) the same quantities follow from D alone: eps = (z - alpha D) / sigma, and the rectified flow at
the same signal-to-noise ratio is the state x = z / (alpha + sigma) at time sigma / (alpha + sigma), so
  u(D) = eps(D) - D = (z - (alpha + sigma) D) / sigma,     D(u) = (z - sigma u) / (alpha + sigma)
is exactly the velocity such a model would output, not an analogy. The method therefore works on u:
  optimized scale:  s* = <u_c, u_u> / ||u_u||^2 per sample (the projection of u_c on u_u),
                    u~ = s* u_u + s (u_c - s* u_u)   (the paper's (1 - w) s* v_u + w v_c, w = s),
  zero-init:        u~ = 0 for the first K solver steps, i.e. D = z / (alpha + sigma): the flow's state
                    x = z / (alpha + sigma) does not move (DDIM is Euler on that state).
Why not project D itself, eps, or our VP velocity alpha eps - sigma D: the ratio s* is not invariant under
u -> a z + b D, so each would be another method; only u is the paper's. Likewise "zero velocity" in EDM's
form (dx/dsigma = 0 with x = z / alpha, i.e. D = z / alpha) would hold x = z / alpha fixed, which from the
schedule's top (sigma / alpha ~ 1800) multiplies z by alpha_next / alpha_top, hundreds of times the data's
range; the rectified flow's rest keeps the state at the data's scale, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion.parameterization import broadcast_to, eps_from_denoised
from lightning_diffusion.guidance.base import (
    Condition,
    DiffusionModel,
    Guidance,
    Guided,
    per_sample_dot,
    shared_time,
)
from lightning_diffusion.guidance.classifier_free import conditional_and_unconditional
from lightning_diffusion.guidance.registry import GuidanceMethod, register_method, with_options


@dataclass(frozen=True)
class CFGZeroStarOptions:
    """CFG-Zero*'s setting: ``zero_init_steps`` K, the solver steps of each run whose velocity is zeroed
    (0: none; the authors' default zeroes the first step)."""

    zero_init_steps: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.zero_init_steps, bool) or not isinstance(self.zero_init_steps, int):
            raise ConfigError(f"CFG-Zero*'s zero_init_steps must be an int, got {self.zero_init_steps!r}.")
        if self.zero_init_steps < 0:
            raise ConfigError(f"CFG-Zero*'s zero_init_steps must be >= 0, got {self.zero_init_steps}.")


def flow_velocity(denoised: Tensor, z: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """The rectified-flow velocity eps - y implied by D: (z - (alpha + sigma) D) / sigma."""
    return eps_from_denoised(denoised, z, alpha, sigma) - denoised


def denoised_from_flow_velocity(velocity: Tensor, z: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """Inverse of ``flow_velocity``: D = (z - sigma u) / (alpha + sigma)."""
    alpha, sigma = broadcast_to(alpha, z), broadcast_to(sigma, z)
    return (z - sigma * velocity) / (alpha + sigma)


class CFGZeroStar(Guidance):
    """CFG-Zero* at scale s (s = 1: the conditional model, one pass; s = 0 gives s* u_u, the paper's
    formula at w = 0, not the plain unconditional model). The first ``zero_init_steps`` distinct times
    of a run (the first K steps of a one-evaluation-per-step sampler; for Heun-type samplers the first
    K - 1 steps and the predictor of the K-th) cost no network evaluation.

    Counting steps reads the time once per evaluation until zero-init is over (on the host where samplers
    pass it); all samples of a batch must share it. The zeroed steps evaluate no network, so sweep rows
    have nothing to share there (``scale_free`` stays False; under a guidance interval they share its
    prefix, the step count carrying over since the method itself runs in every replay)."""

    def __init__(self, scale: float, *, zero_init_steps: int = CFGZeroStarOptions.zero_init_steps) -> None:
        self.scale = float(scale)
        self.options = CFGZeroStarOptions(zero_init_steps)
        self.reset()

    def reset(self) -> None:
        self._steps_seen = 0
        self._last_time: float | None = None

    def _zero_init(self, t: Tensor) -> bool:
        """Whether this evaluation falls in the first K distinct times of the run."""
        if self._steps_seen > self.options.zero_init_steps or self.options.zero_init_steps == 0:
            return False
        time = shared_time(t, "CFG-Zero*'s zero-init")
        if time != self._last_time:
            self._steps_seen, self._last_time = self._steps_seen + 1, time
        return self._steps_seen <= self.options.zero_init_steps

    def guide(self, model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition) -> Guided:
        zero_init = self._zero_init(t)
        t = t.to(z.device, non_blocking=True)
        alpha, sigma = model.schedule.alpha_sigma(t)
        if zero_init:
            return Guided(z / broadcast_to(alpha + sigma, z), None)  # u = 0
        if self.scale == 1.0:
            conditional = model.denoise(z, t, cond)
            return Guided(conditional, conditional)
        conditional, unconditional = conditional_and_unconditional(model, z, t, cond)
        u_conditional = flow_velocity(conditional, z, alpha, sigma)
        u_unconditional = flow_velocity(unconditional, z, alpha, sigma)
        optimized = per_sample_dot(u_conditional, u_unconditional) / per_sample_dot(
            u_unconditional, u_unconditional
        ).clamp_min(1e-30)
        projected = broadcast_to(optimized.to(z.dtype), z) * u_unconditional
        velocity = projected + self.scale * (u_conditional - projected)
        return Guided(denoised_from_flow_velocity(velocity, z, alpha, sigma), conditional)


register_method(GuidanceMethod("cfg_zero_star", build=with_options(CFGZeroStar), options=CFGZeroStarOptions))
