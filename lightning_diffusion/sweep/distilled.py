"""The sweep method ``distilled``: a guidance-distilled student (``DistilledDenoiser`` or a progressive
round) sampled with the row's scale as its condition, one network pass per step, on the same noise as the
teacher's ``cfg`` rows (the sweep's denoiser is the teacher; the student is the ``student`` role)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lightning_diffusion.components.conditions.guidance_scale import KEY as SCALE_KEY
from lightning_diffusion.components.distilled import DistilledDenoiser
from lightning_diffusion.config import ConfigError
from lightning_diffusion.guidance import ClassifierFree
from lightning_diffusion.sampling import CountingModel, generate
from lightning_diffusion.sweep.methods import RowSampler, SweepMethod, register_sweep_method

if TYPE_CHECKING:
    from lightning_diffusion.sweep.models import SweepModels
    from lightning_diffusion.sweep.plans import RowPlan
    from lightning_diffusion.sweep.prompts import Prompts


class DistilledMethod(SweepMethod):
    """The student at the row's scale (its ``guidance_scale`` condition), one pass per step: plain
    conditional sampling (CFG at s = 1, a single pass). Before the first sample it refuses a student that is
    not distilled, a scale outside the range it was trained on and, for a progressive round, a sampler with
    another step count than the one it was distilled for."""

    name, needs, prompts = "distilled", ("student",), ("label",)

    def check_modifiers(self, given: Mapping[str, Any]) -> None:
        for modifier, value in given.items():
            if value is not None:
                raise ConfigError(
                    f"method {self.name} does not use {modifier}: the student has its guidance distilled in "
                    "(the row's scale is its condition); remove it from its rows."
                )

    def check(self, models: SweepModels, plan: RowPlan, prompts: Prompts) -> None:
        super().check(models, plan, prompts)
        student, path = models["student"], models.paths.get("student")
        where = "" if path is None else f" ({path})"
        if not isinstance(student, DistilledDenoiser):
            raise ConfigError(
                f"--student{where} is a {type(student).__name__}, not a guidance-distilled student; pass a "
                "DistilledDenoiser or ProgressiveDenoiser checkpoint (configs/<data>/distilled.yaml)."
            )
        try:
            student.check_scales(plan.scales)
            student.check_sampler(plan.sampler)
        except ConfigError as error:
            raise ConfigError(f"row {plan.label!r}, --student{where}: {error}") from None

    def conditioned(self, models: SweepModels) -> bool:
        return True

    def sampler(self, models: SweepModels, plan: RowPlan, scale: float) -> RowSampler:
        """The student with ``scale`` as its condition; NFE counts the student's rows."""
        student = CountingModel(models["student"])
        guidance = ClassifierFree(1.0)

        def sample_batch(generators: Sequence[torch.Generator], cond: dict[str, Any]) -> Tensor:
            return generate(student, guidance, generators, {**cond, SCALE_KEY: scale}, plan.sampler)

        return RowSampler(sample_batch, lambda: student.rows)


register_sweep_method(DistilledMethod())
