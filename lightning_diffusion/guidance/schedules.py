"""Guidance schedules: any method's scale as a function of the noise level (Wang et al. 2024, "Analysis of
Classifier-Free Guidance Weight Schedulers", TMLR, Sec. 3, the heuristic schedulers).

The paper varies the guidance weight over the normalised time t/T of the noise schedule (1: pure noise,
0: clean), which is our t in [0, 1], and recommends the increasing schedules, which keep the mean weight
of the constant one:
  linear:  s(t) = 2 s (1 - t),        cosine:  s(t) = s (1 + cos(pi t)).
Here both are s(t) = s (start + (end - start) ramp(1 - t)), ramp(p) = p or (1 - cos(pi p)) / 2, with the
paper's (start, end) = (0, 2) by default; other ends (decreasing: (2, 0)) are settings. The schedule acts
on the scale each method is given (for CFG, diffusers' guidance_scale), so it serves every method.
The guidance interval (Kynkäänniemi et al. 2024) is the schedule "s inside (sigma_min, sigma_max], the
method's unguided estimate outside": it is ``GuidanceInterval``, which saves the guided passes outside.

``scheduled(guidance, spec)`` builds one from a YAML mapping such as ``{name: linear, start: 0, end: 2}``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from lightning_diffusion.config import ConfigError, did_you_mean
from lightning_diffusion.guidance.base import Condition, DiffusionModel, Guidance, Guided, shared_time
from lightning_diffusion.guidance.modifiers import GuidanceInterval, Modifier

Ramp = Callable[[float], float]


def linear_ramp(progress: float) -> float:
    """0 at the start of sampling (t = 1), 1 at its clean end (t = 0), linear in t."""
    return progress


def cosine_ramp(progress: float) -> float:
    """(1 - cos(pi p)) / 2: the paper's cosine schedule, flat at both ends."""
    return (1.0 - math.cos(math.pi * progress)) / 2.0


class ScaleSchedule(Modifier):
    """The inner method evaluated at s(t) = s (start + (end - start) ramp(1 - t)) at each step, s being its
    scale when wrapped (``scale``). Both end scales are checked up front, against the method too (CFG++
    refuses scales above 1), so a bad schedule fails before the first sample. The time is read once per
    evaluation (on the host where samplers pass it); all samples of a batch must share it."""

    def __init__(self, inner: Guidance, ramp: Ramp, start: float = 0.0, end: float = 2.0) -> None:
        super().__init__(inner)
        self.ramp, self.start, self.end = ramp, float(start), float(end)
        self.scale = inner.scale

    @property
    def scale(self) -> float:
        """The nominal scale s the schedule multiplies (what a sweep sets)."""
        return self._scale

    @scale.setter
    def scale(self, value: float) -> None:
        ends = (value * self.start, value * self.end)
        if not all(math.isfinite(end) and end >= 0.0 for end in ends):
            raise ConfigError(
                f"a guidance schedule's scales must be finite and >= 0: at scale {value:g} with start "
                f"{self.start:g} and end {self.end:g} it runs from {ends[0]:g} to {ends[1]:g}."
            )
        for end in ends:
            try:
                self.inner.scale = end
            except ConfigError as error:
                raise ConfigError(
                    f"the schedule reaches scale {end:g}, which the method refuses: {error}"
                ) from None
        self._scale = float(value)

    def factor_at(self, t: float) -> float:
        """s(t) / s: start + (end - start) ramp(1 - t)."""
        return self.start + (self.end - self.start) * self.ramp(1.0 - t)

    def scale_at(self, t: float) -> float:
        """s(t) for a time t in [0, 1]."""
        return self._scale * self.factor_at(t)

    def scale_free(self, model: DiffusionModel, t: Tensor) -> bool:
        """Where the schedule is zero (the paper's increasing schedules at t = 1) every nominal scale runs
        the inner method at scale 0."""
        return self.factor_at(shared_time(t, "a guidance schedule")) == 0.0 or self.inner.scale_free(model, t)

    def guide(self, model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition) -> Guided:
        self.inner.scale = self.scale_at(shared_time(t, "a guidance schedule"))
        return self.inner.guide(model, z, t.to(z.device, non_blocking=True), cond)


def _constant(guidance: Guidance) -> Guidance:
    return guidance


def _linear(guidance: Guidance, start: float = 0.0, end: float = 2.0) -> Guidance:
    return ScaleSchedule(guidance, linear_ramp, start, end)


def _cosine(guidance: Guidance, start: float = 0.0, end: float = 2.0) -> Guidance:
    return ScaleSchedule(guidance, cosine_ramp, start, end)


def _interval(guidance: Guidance, sigma_min: float, sigma_max: float) -> Guidance:
    return GuidanceInterval(guidance, sigma_min, sigma_max)


SCHEDULES: dict[str, Callable[..., Guidance]] = {
    "constant": _constant,
    "linear": _linear,
    "cosine": _cosine,
    "interval": _interval,
}
"""Schedule name -> builder(guidance, **settings); the settings are the builder's keyword arguments."""


def scheduled(guidance: Guidance, spec: Mapping[str, Any] | None) -> Guidance:
    """``guidance`` under the schedule ``spec`` (``{name: ..., **settings}``; None: unchanged)."""
    if spec is None:
        return guidance
    settings = dict(spec)
    name = settings.pop("name", None)
    if name not in SCHEDULES:
        raise ConfigError(
            f"unknown guidance schedule {name!r}{did_you_mean(str(name), SCHEDULES)}; the registered "
            f"schedules are {', '.join(SCHEDULES)}."
        )
    parameters = list(inspect.signature(SCHEDULES[name]).parameters.values())[1:]
    known = [parameter.name for parameter in parameters]
    unknown = sorted(set(settings) - set(known))
    missing = [p.name for p in parameters if p.default is inspect.Parameter.empty and p.name not in settings]
    if unknown or missing:
        raise ConfigError(
            f"the {name} schedule takes {', '.join(known) or 'no settings'}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + "."
        )
    if guidance.scale < 0:
        raise ConfigError(f"a guidance schedule needs a scale >= 0, got {guidance.scale:g}.")
    return SCHEDULES[name](guidance, **settings)
