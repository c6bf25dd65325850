"""The guidance interface: turn a diffusion model, a condition and a scale into a guided estimate D.

A guided model is what samplers see: ``GuidedDenoiser(model, guidance, cond)`` is a ``(z, t) -> D``
callable. Guidance methods share one scale convention (DESIGN.md): s = 1 is plain conditional
sampling, s = 0 unconditional / unguided, s > 1 guided.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import Tensor

Condition = Mapping[str, Any]


class DiffusionModel(Protocol):
    """What guidance needs of a model: the denoised estimate and a null condition."""

    def denoise(self, z: Tensor, t: Tensor, cond: Condition | None = None) -> Tensor: ...

    def null_condition(self, batch_size: int, device: torch.device) -> Condition: ...


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
    def __call__(self, model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition) -> Tensor:
        """The guided denoised estimate at (z, t) for condition ``cond``."""

    def reset(self) -> None:  # noqa: B027 - stateless methods keep this no-op
        """Forget state from a previous sampling run; stateless methods need nothing."""


class GuidedDenoiser:
    """Binds model, guidance and condition into the ``(z, t) -> D`` callable samplers take."""

    def __init__(self, model: DiffusionModel, guidance: Guidance, cond: Condition) -> None:
        self.model, self.guidance, self.cond = model, guidance, cond
        guidance.reset()

    def __call__(self, z: Tensor, t: Tensor) -> Tensor:
        return self.guidance(self.model, z, t, self.cond)
