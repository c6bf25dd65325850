"""The guidance interface: turn a diffusion model, a condition and a scale into a guided estimate D.

A method's ``guide`` returns the guided D together with its reference, the unguided conditional D
(s = 1), which modifiers such as CFG rescale need; ``__call__`` returns the guided D alone.
``GuidedDenoiser(model, guidance, cond)`` is the ``(z, t) -> D`` callable samplers take. All methods
share one scale convention (docs/design.md): s = 1 plain conditional, s = 0 unconditional / unguided,
s > 1 guided.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from lightning_diffusion.diffusion import CosineSchedule

Condition = Mapping[str, Any]


class DiffusionModel(Protocol):
    """What guidance needs of a model: its noise schedule, the denoised estimate and a null condition."""

    schedule: CosineSchedule

    def denoise(self, z: Tensor, t: Tensor, cond: Condition | None = None) -> Tensor: ...

    def null_condition(self, batch_size: int, device: torch.device) -> Condition: ...


class Guided(NamedTuple):
    """A guided estimate and its reference (the unguided conditional D; None where it was not computed)."""

    denoised: Tensor
    reference: Tensor | None


def concat_conditions(first: Condition, second: Condition) -> dict[str, Any]:
    """Stack two condition dicts along the batch (tensors with ``cat``, lists by concatenation)."""
    if set(first) != set(second):
        raise ValueError(f"cannot batch conditions with different keys: {sorted(first)} vs {sorted(second)}")
    return {
        key: torch.cat([first[key], second[key]])
        if isinstance(first[key], Tensor)
        else [*first[key], *second[key]]
        for key in first
    }


class Guidance(ABC):
    """One guidance method. ``reset`` clears per-run state (e.g. momentum) before each sampling run."""

    @abstractmethod
    def guide(self, model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition) -> Guided:
        """The guided denoised estimate at (z, t) for ``cond``, with its unguided reference."""

    def __call__(self, model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition) -> Tensor:
        return self.guide(model, z, t, cond).denoised

    def unguided(self, model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition) -> Guided:
        """What the method gives where it does not guide (outside a guidance interval): by default the
        plain conditional estimate, one pass."""
        plain = model.denoise(z, t, cond)
        return Guided(plain, plain)

    def reset(self) -> None:  # noqa: B027 - stateless methods keep this no-op
        """Forget state from a previous sampling run; stateless methods need nothing."""


class GuidedDenoiser:
    """Binds model, guidance and condition into the ``(z, t) -> D`` callable samplers take.

    Built once per sampling run: it resets the guidance's state and lets a model that can (one with
    ``check_condition``, e.g. the denoiser's label range) refuse a bad condition here, once, instead of
    reading values back from the device at every step."""

    def __init__(self, model: DiffusionModel, guidance: Guidance, cond: Condition) -> None:
        self.model, self.guidance, self.cond = model, guidance, cond
        check_condition = getattr(model, "check_condition", None)
        if check_condition is not None:
            check_condition(cond)
        guidance.reset()

    def __call__(self, z: Tensor, t: Tensor) -> Tensor:
        return self.guidance(self.model, z, t, self.cond)
