"""Row plans: each sweep row resolved once from the settings, so that methods never read the settings.

A plan holds what one row runs: its label, its sweep method with the method's parsed options, the shared
modifiers (interval, rescale, threshold, schedule), its guidance scales and the sampler spec. The roles
of the models it uses and the prompts it can follow come with its method. A new sweep axis (seed sets,
EMA length) is a field here, not a new argument threaded through the run loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lightning_diffusion.diffusion import SamplerSpec

if TYPE_CHECKING:
    from lightning_diffusion.sweep.methods import SweepMethod


@dataclass(frozen=True)
class RowPlan:
    """One sweep row: ``label`` (its name in sweep.json), ``method`` (the sweep method), ``options`` (an
    instance of the method's options dataclass, or None), ``modifiers`` by name (None where not given),
    ``scales`` and ``sampler``."""

    label: str
    method: SweepMethod
    options: Any
    modifiers: Mapping[str, Any]
    scales: tuple[float, ...]
    sampler: SamplerSpec
    ema: float | None = None  # the denoiser's EMA length sigma_rel, rebuilt from post-hoc EMA snapshots

    @property
    def roles(self) -> tuple[str, ...]:
        """The model roles the row uses besides the denoiser (e.g. ``("classifier",)``)."""
        return self.method.needs

    @property
    def prompts(self) -> tuple[str, ...] | None:
        """The prompt kinds the row can guide towards (e.g. ``("label",)``; None: any the denoiser takes)."""
        return self.method.prompts
