"""The guidance scale as a condition (Meng et al. 2023, "On distillation of guided diffusion models", Sec.
3.1: the student takes the guidance weight w through a Fourier embedding added to its time embedding), so
that a guidance-distilled student is a ``Denoiser`` with one more part and no new network code."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_diffusion.components.conditions.base import Condition, NetConditions, NetworkSlots
from lightning_diffusion.config import ConfigError

KEY = "guidance_scale"
LOWEST_FREQUENCY, HIGHEST_FREQUENCY = 1 / 8, 8.0  # radians per unit of scale


def check_scale_range(scale_range: Sequence[float]) -> tuple[float, float]:
    """``(low, high)``: two finite scales with 0 <= low < high (the project's s: 1 conditional, 0
    unconditional), or a ConfigError saying so."""
    values = tuple(float(value) for value in scale_range)
    if len(values) != 2 or not all(math.isfinite(v) for v in values) or not 0 <= values[0] < values[1]:
        raise ConfigError(
            f"scale_range is the interval [low, high] of guidance scales a student learns (s = 1 "
            f"conditional, s = 0 unconditional), two finite numbers with 0 <= low < high; got "
            f"{list(scale_range)}; e.g. [1, 5]."
        )
    return values


def fourier_features(scales: Tensor, dim: int) -> Tensor:
    """(cos, sin) of s times ``dim // 2`` frequencies spaced geometrically from 1/8 to 8 radians per unit
    of s (Tancik et al. 2020's Fourier features, deterministic), shape (B, dim), float32; the slow ones
    are nearly linear in s, the fast ones resolve small differences of it."""
    half = dim // 2
    frequencies = torch.logspace(
        math.log10(LOWEST_FREQUENCY), math.log10(HIGHEST_FREQUENCY), half, device=scales.device
    )
    angles = scales.float()[:, None] * frequencies[None]
    return torch.nn.functional.pad(torch.cat([angles.cos(), angles.sin()], dim=1), (0, dim - 2 * half))


class GuidanceScale(Condition):
    """Key ``"guidance_scale"``: the scale s (a number, or one per sample (B,)) a student was distilled to
    reproduce, within ``scale_range`` [low, high]. Its Fourier features go through a two-layer MLP into the
    condition vector (added to the time embedding); the last layer starts at zero, so a student initialised
    from its teacher starts as the conditional teacher. It is never dropped, and a missing scale is refused
    (there is no scale-free estimate to fall back on)."""

    keys = (KEY,)
    gives_vector = True

    def __init__(self, scale_range: Sequence[float] = (1.0, 5.0), features: int = 32) -> None:
        super().__init__()
        self.low, self.high = check_scale_range(scale_range)
        if features < 2:
            raise ConfigError(f"scale_features (Fourier features of s) must be at least 2, got {features}.")
        self.features = features

    @property
    def scale_range(self) -> tuple[float, float]:
        """The [low, high] scales the student was trained on."""
        return self.low, self.high

    def build(self, slots: NetworkSlots) -> None:
        output = nn.Linear(slots.cond_dim, slots.cond_dim)
        nn.init.zeros_(output.weight)
        nn.init.zeros_(output.bias)
        self.embedding = nn.Sequential(nn.Linear(self.features, slots.cond_dim), nn.SiLU(), output)

    def read(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def refusal(self, scales: str) -> ConfigError:
        """The refusal of scales outside the trained range, naming it."""
        return ConfigError(
            f"this distilled student was trained for guidance scales in [{self.low:g}, {self.high:g}] "
            f"(scale_range), got s = {scales}; sample it inside that range, or distil a student over a "
            "range that covers it (scale_range)."
        )

    def check(self, cond: Mapping[str, Any]) -> None:
        """Refuse scales outside [low, high] (it reads two numbers back from the device, once per run)."""
        scales = cond.get(KEY)
        if scales is None:
            return
        scales = torch.as_tensor(scales, dtype=torch.float64).reshape(-1)
        if not scales.numel():
            return
        low, high = torch.stack([scales.min(), scales.max()]).tolist()
        if not (self.low <= low and high <= self.high):
            raise self.refusal(f"{low:g}" if low == high else f"{low:g} to {high:g}")

    def scales(self, cond: Mapping[str, Any], batch_size: int, device: torch.device) -> Tensor:
        """The (B,) scales of ``cond`` (a number is given to every sample)."""
        scales = cond.get(KEY)
        if scales is None:
            raise ConfigError(
                "a distilled student takes the guidance scale as its condition: pass "
                f"cond['{KEY}'] (a number in [{self.low:g}, {self.high:g}], or one per sample), e.g. "
                "through the sweep method distilled."
            )
        scales = torch.as_tensor(scales, dtype=torch.float32).to(device, non_blocking=True)
        return scales.expand(batch_size) if scales.ndim == 0 else scales.reshape(batch_size)

    def inputs(self, cond: Mapping[str, Any], batch_size: int) -> NetConditions:
        weight = self.embedding[0].weight
        features = fourier_features(self.scales(cond, batch_size, weight.device), self.features)
        return NetConditions(vector=self.embedding(features.to(weight.dtype)))
