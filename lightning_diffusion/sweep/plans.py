"""Row plans: each sweep row resolved once from the settings, so that methods never read the settings.

A plan holds what one row runs: its label, its sweep method with the method's parsed options, the shared
modifiers (interval, rescale, threshold, schedule), its guidance scales, the sampler spec and the seed sets
it draws. The roles of the models it uses and the prompts it can follow come with its method. A new sweep
axis (seed sets, EMA length) is a field here, not a new argument threaded through the run loop.
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
    ``scales``, ``sampler`` and ``seed_sets``: the noise sets each scale is sampled with (sample i of set k
    from the generator of (seed, i, k); set 0 is the sweep's noise before seed sets existed), aggregated
    into one row per scale (``sweep.seed_sets``)."""

    label: str
    method: SweepMethod
    options: Any
    modifiers: Mapping[str, Any]
    scales: tuple[float, ...]
    sampler: SamplerSpec
    ema: float | None = None  # the denoiser's EMA length sigma_rel, rebuilt from post-hoc EMA snapshots
    seed_sets: tuple[int, ...] = (0,)

    @property
    def roles(self) -> tuple[str, ...]:
        """The model roles the row uses besides the denoiser (e.g. ``("classifier",)``)."""
        return self.method.needs

    @property
    def prompts(self) -> tuple[str, ...] | None:
        """The prompt kinds the row can guide towards (e.g. ``("label",)``; None: any the denoiser takes)."""
        return self.method.prompts
