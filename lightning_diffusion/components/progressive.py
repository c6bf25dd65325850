"""Guidance distillation, stage 2 (Meng et al. 2023, Sec. 4.2): progressive distillation (Salimans & Ho
2022, Algorithm 2) of a scale-conditioned student on the deterministic DDIM path. Each round trains a
student whose one DDIM step matches two DDIM steps of its frozen teacher (the stage-1 student, or the
previous round), halving the steps: 32 -> 16 -> 8 -> 4. A round's checkpoint records its step count, and
it samples with exactly that many DDIM steps on the uniform-t grid (the grid whose N points are every other
point of the 2N-step one), which ``check_sampler`` enforces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from lightning_diffusion.components.carried import Source
from lightning_diffusion.components.conditions.guidance_scale import KEY as SCALE_KEY
from lightning_diffusion.components.distilled import DistilledDenoiser, load_teacher
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import SamplerSpec
from lightning_diffusion.diffusion.parameterization import broadcast_to
from lightning_diffusion.registry import register

SOLVER = "ddim"  # deterministic DDIM (eta 0) on the uniform-t grid: the path the rounds halve


@register("denoiser")
class ProgressiveDenoiser(DistilledDenoiser):
    """A round of progressive distillation: ``teacher`` is a distilled student (a ``DistilledDenoiser``
    path, or its own checkpoints' carried record), ``steps`` the student's DDIM steps (required after
    stage 1, whose student samples with any count; after a round it defaults to half the teacher's). The
    student starts as a copy of the teacher (scale embedding included) and keeps its scale range."""

    role = "the progressive student"

    def __init__(
        self,
        teacher: Source,  # a path, or (in its own checkpoints) the carried teacher
        steps: int | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 100,
    ) -> None:
        frozen = load_teacher(teacher, self.role)
        if not isinstance(frozen, DistilledDenoiser):
            raise ConfigError(
                f"the teacher of progressive distillation must be a distilled student (DistilledDenoiser or "
                f"ProgressiveDenoiser), got a {type(frozen).__name__}; distil the CFG teacher first "
                "(configs/<data>/distilled.yaml)."
            )
        student_steps = halved_steps(frozen.steps, steps)
        self._become_student(frozen, frozen.student_arguments, lr, weight_decay, warmup_steps)
        self.steps = student_steps
        self.teacher_grid = SamplerSpec(SOLVER, 2 * student_steps).times(self.schedule).float()
        self.save_hyperparameters(self.spec["init_args"])

    @property
    def spec(self) -> dict[str, Any]:
        """The spec with the resolved step count (a round that halved its teacher's records its own)."""
        spec = super().spec
        steps = self.__dict__.get("steps")
        return spec if steps is None else {**spec, "init_args": {**spec["init_args"], "steps": steps}}

    @property
    def sampler(self) -> SamplerSpec:
        """The sampler the student was distilled for: DDIM at its step count on the uniform-t grid."""
        return SamplerSpec(SOLVER, self.steps)

    def check_sampler(self, sampler: SamplerSpec) -> None:
        """Refuse a sampler other than DDIM at the distilled step count on the uniform-t grid."""
        if sampler.steps != self.steps:
            raise ConfigError(
                f"this student was progressively distilled for {self.steps} DDIM steps, and the sampler asks "
                f"for {sampler.steps}; sample it with {{name: ddim, steps: {self.steps}}} (--sampler.steps "
                f"{self.steps}), or use the round distilled for {sampler.steps} steps."
            )
        if sampler != self.sampler and SamplerSpec.of({**vars(sampler), "eta": None}) != self.sampler:
            raise ConfigError(
                f"this student was progressively distilled on deterministic DDIM at {self.steps} steps on "
                f"the uniform_t grid, and the sampler is {sampler}; sample it with {{name: ddim, steps: "
                f"{self.steps}}} (grid uniform_t, no sigma_max/sigma_min, eta 0)."
            )

    def _times(self, batch_size: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
        """Training times: the student's grid points t_i, i ~ U{0, ..., N - 1} (Algorithm 2's t = i / N)."""
        index = torch.randint(self.steps, (batch_size,), device=device, generator=generator)
        return self.teacher_grid.to(device)[2 * index]

    def target(self, z: Tensor, t: Tensor, cond: Mapping[str, Any], scales: Tensor) -> Tensor:
        """x~ such that one student DDIM step from t to t'' lands where two teacher steps (t -> t' -> t'')
        do: x~ = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t)
        (Salimans & Ho 2022, Algorithm 2), at the sample's scale."""
        grid = self.teacher_grid.to(z.device)
        index = 2 * (grid[None, 0:-1:2] - t[:, None]).abs().argmin(dim=1)
        t_mid, t_next = grid[index + 1], grid[index + 2]
        cond = {**cond, SCALE_KEY: scales}
        z_mid = self._teacher_step(z, t, t_mid, cond)
        z_next = self._teacher_step(z_mid, t_mid, t_next, cond)
        alpha, sigma = self._alpha_sigma(t)
        alpha_next, sigma_next = self._alpha_sigma(t_next)
        ratio = sigma_next / sigma
        return (z_next - broadcast_to(ratio, z) * z) / broadcast_to(alpha_next - ratio * alpha, z)

    def _teacher_step(self, z: Tensor, t: Tensor, s: Tensor, cond: Mapping[str, Any]) -> Tensor:
        """One deterministic DDIM step of the teacher (Song et al. 2021, eq. 12, eta = 0):
        z_s = alpha_s D + sigma_s (z_t - alpha_t D) / sigma_t."""
        denoised = self.teacher.denoise(z, t, cond)
        alpha, sigma = self._alpha_sigma(t)
        alpha_s, sigma_s = self._alpha_sigma(s)
        eps = (z - broadcast_to(alpha, z) * denoised) / broadcast_to(sigma, z)
        return broadcast_to(alpha_s, z) * denoised + broadcast_to(sigma_s, z) * eps

    def _alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """alpha_t, sigma_t, with t = 0 the clean end (1, 0), as samplers treat a grid's last point."""
        alpha, sigma = self.schedule.alpha_sigma(t)
        clean = t == 0
        return torch.where(clean, 1.0, alpha), torch.where(clean, 0.0, sigma)


def halved_steps(teacher_steps: int | None, steps: int | None) -> int:
    """The student's step count: ``steps`` (required when the teacher samples with any count), else half
    the teacher's, refusing a count that is not half of it."""
    if teacher_steps is None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(
                "the first round of progressive distillation needs the student's DDIM step count: set steps "
                f"(e.g. 16: the stage-1 teacher then takes 32), got {steps!r}."
            )
        return steps
    if teacher_steps % 2 or teacher_steps < 2:
        raise ConfigError(
            f"the teacher was distilled for {teacher_steps} DDIM steps, which cannot be halved; distil from "
            "a round with an even step count."
        )
    if steps is not None and steps != teacher_steps // 2:
        raise ConfigError(
            f"a round of progressive distillation halves its teacher's {teacher_steps} steps to "
            f"{teacher_steps // 2}, got steps {steps}; leave steps unset or set it to {teacher_steps // 2}."
        )
    return teacher_steps // 2
