"""The guidance interface: turn a diffusion model, a condition and a scale into a guided estimate D.

A method's ``guide`` returns the guided D together with its reference, the unguided conditional D
(s = 1), which modifiers such as CFG rescale need; ``__call__`` returns the guided D alone.
``GuidedDenoiser(model, guidance, cond)`` is the ``(z, t) -> D`` callable samplers take (a
``Denoised(D, renoise)`` where the method renoises with another estimate, as CFG++ does). All methods
share one scale convention (docs/design.md): s = 1 plain conditional, s = 0 unconditional / unguided,
s > 1 guided.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import CosineSchedule, Denoised

Condition = Mapping[str, Any]


class DiffusionModel(Protocol):
    """What guidance needs of a model: its noise schedule, the denoised estimate and a null condition."""

    schedule: CosineSchedule

    def denoise(self, z: Tensor, t: Tensor, cond: Condition | None = None) -> Tensor: ...

    def null_condition(self, batch_size: int, device: torch.device) -> Condition: ...


class Guided(NamedTuple):
    """A guided estimate, its reference (the unguided conditional D; None where it was not computed) and,
    for guidance that renoises with another estimate than the one it steps to (CFG++), the D whose implied
    noise the sampler puts back (None: the guided D's own)."""

    denoised: Tensor
    reference: Tensor | None
    renoise: Tensor | None = None

    @property
    def renoise_estimate(self) -> Tensor:
        """The D whose implied noise the sampler puts back: ``renoise`` where set, else the guided D."""
        return self.denoised if self.renoise is None else self.renoise


def per_sample_dot(first: Tensor, second: Tensor) -> Tensor:
    """<first_i, second_i> over all pixel dimensions, shape (B,), accumulated in at least float32 (for
    projections of one estimate onto another: APG, CFG-Zero*)."""
    dtype = torch.promote_types(first.dtype, torch.float32)
    return (first.to(dtype) * second.to(dtype)).flatten(1).sum(1)


def shared_time(t: Tensor, needs: str) -> float:
    """The one time all samples of a batch share (samplers pass it so, on the host: no synchronisation),
    for a method that acts per step; ``needs`` says which, for the error when the times differ."""
    low, high = (float(value) for value in t.aminmax())
    if low != high:
        raise ConfigError(
            f"{needs} acts per sampler step, so all samples of a batch must share one time, as samplers pass "
            f"it; got times from {low:g} to {high:g}."
        )
    return high


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
    """One guidance method. ``reset`` clears per-run state (e.g. momentum) before each sampling run.

    Every method exposes its ``scale`` (DESIGN.md's convention), which a schedule may set per step."""

    scale: float

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

    def scale_free(self, model: DiffusionModel, t: Tensor) -> bool:
        """Whether the estimate at times ``t`` (one per sample, on the host as samplers pass them) is the
        same at every scale, so sweep rows that differ only in scale share their trajectory there (the
        guidance interval outside it, a schedule where it is zero). False unless a method knows better."""
        return False

    def reset(self) -> None:  # noqa: B027 - stateless methods keep this no-op
        """Forget state from a previous sampling run; stateless methods need nothing."""

    def check_model(self, model: DiffusionModel) -> None:  # noqa: B027 - most methods guide any model
        """Refuse, before any sampling, a model this method cannot guide (e.g. a PAG layer it lacks)."""


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

    def __call__(self, z: Tensor, t: Tensor) -> Tensor | Denoised:
        """The guided D, or ``Denoised(D, renoise)`` for guidance that renoises with another estimate."""
        guided = self.guidance.guide(self.model, z, t, self.cond)
        if guided.renoise is None:
            return guided.denoised
        return Denoised(guided.denoised, guided.renoise)
