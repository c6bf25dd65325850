"""Shared trajectories in a sweep: the scales of one row sampled together, batch by batch, their common
prefix (``shared_prefix``) computed once per batch and replayed for each scale.

A row's pending scales form one group when sharing is on, the row samples through a guidance method
(chained methods' stages use their own CFG) and its guidance is scale-free at its first evaluation (a
free probe of the first batch); every other scale is a group of its own and samples as before. Samples
are bit-identical either way. A group's ``evaluations`` and ``seconds`` are amortised: each scale is
charged its own network rows and time plus an equal share of the prefix's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lightning_diffusion.shared_prefix import record, replaying, restored
from lightning_diffusion.sweep.methods import GuidedMethod, RowSampler, SweepMethod


@dataclass
class ScaleGroup:
    """Scales of one row (``samplers``, one per scale) that sample each batch together, with what their
    shared prefixes spent so far: network rows and seconds."""

    samplers: list[RowSampler]
    prefix_rows: int = 0
    prefix_seconds: float = 0.0
    own_seconds: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.own_seconds = [0.0] * len(self.samplers)

    def sample(self, generators: Sequence[torch.Generator], cond: dict[str, Any]) -> list[Tensor]:
        """One batch at every scale of the group, each exactly as an unshared run would draw it."""
        prefix = None
        if len(self.samplers) > 1:
            start = time.perf_counter()
            first = self.samplers[0]
            prefix = record(lambda: first.sample_batch(generators, cond), generators)
            self.prefix_rows += prefix.rows
            self.prefix_seconds += time.perf_counter() - start
        images = []
        for index, sampler in enumerate(self.samplers):
            start = time.perf_counter()
            with replaying(prefix), restored(generators):
                images.append(sampler.sample_batch(generators, cond))
            self.own_seconds[index] += time.perf_counter() - start
        return images

    def evaluations(self, index: int) -> float:
        """Network rows charged to scale ``index``: its own, plus its share of the prefixes'."""
        own = self.samplers[index].evaluations() - (self.prefix_rows if index == 0 else 0)
        return own + self.prefix_rows / len(self.samplers)

    def seconds(self, index: int) -> float:
        """Sampling seconds charged to scale ``index``: its own, plus its share of the prefixes'."""
        return self.own_seconds[index] + self.prefix_seconds / len(self.samplers)


def shares_prefix(
    method: SweepMethod, sampler: RowSampler, generators: Sequence[torch.Generator], cond: dict[str, Any]
) -> bool:
    """Whether a row's guidance is scale-free at its first evaluation, probed (no network evaluation) on
    one batch; the generators are left as they were."""
    if not isinstance(method, GuidedMethod):
        return False
    return record(lambda: sampler.sample_batch(generators, cond), generators, probe=True).shared
