"""The metric registry: a metric of a sweep row is one registered class that declares its columns (name,
which way is better, axis label), what it consumes of each generated sample, how its states reduce over
ranks and the fewest samples it needs, and computes its values. ``SampleMetrics``, the row keys,
``frontier.csv``, ``curves.png`` and W&B all read this registry; adding a metric is one file that
registers itself (``metrics/kid.py`` is the worked example) and its import in ``metrics/__init__.py``.

A metric that can be recomputed from the gathered per-sample data on resampled indices (``Resamples``)
implements ``resampled``: the sweep's bootstrap intervals, the ``compare`` command and the ties in
``frontier.csv`` call it, at no extra network evaluation. A metric without it gets no interval.
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

import torch
from torch import Tensor, nn
from torchmetrics import Metric

BLOCK_ROWS = 10000  # rows of a distance or kernel matrix over the gathered features held at once
PAIRWISE_LIMIT = 10**8  # entries of a generated x real (or real x real) matrix a resampled metric may hold
CHUNK_ELEMENTS = 2**25  # elements of per-resample tensors (resamples x samples x dim) held at once
T = TypeVar("T")
Reduction = Literal["sum", "cat"]  # torchmetrics states summed over ranks, or concatenated (gathered)


@dataclass(frozen=True)
class Column:
    """One column of a sweep row: its key, which way is better, its axis label in ``curves.png``, and whether
    ``frontier.csv`` reports it beside the best FID at each class-accuracy level."""

    name: str
    higher_is_better: bool
    label: str
    frontier: bool = False

    def value(self, row: dict[str, Any]) -> float | None:
        """The row's value of the column, None where it was not measured (or the row predates it)."""
        return row.get(self.name)

    def at_least_as_good(self, a: float, b: float) -> bool:
        return a >= b if self.higher_is_better else a <= b


@dataclass(frozen=True)
class TradeOff:
    """Two columns drawn against each other in ``curves.png`` (x, y); ``front`` names its Pareto front in
    ``frontier.py`` and W&B (None: the panel shades no front)."""

    x: str
    y: str
    front: str | None = None


@dataclass(frozen=True)
class Gathered:
    """Every rank's features, gathered once per row for the metrics that need whole sets: the real
    reference features (N, D) and this row's finite generated samples' features (M, D), float32. ``inputs``
    holds every per-sample input of those samples by name (``features``, ``logits``, outcomes such as
    ``class_correct``; an input no sample had is absent), row j of each belonging to generated sample j,
    whose sample index is ``indices[j]`` (ascending; None where the caller did not give indices)."""

    real: Tensor
    generated: Tensor
    inputs: Mapping[str, Tensor] = field(default_factory=dict)
    indices: Tensor | None = None


@dataclass(frozen=True)
class Resamples:
    """B resamples with replacement of a row's samples: ``generated`` (B, M) indexes the rows of
    ``Gathered.generated`` (and of each ``Gathered.inputs`` tensor), ``real`` (B, N) those of
    ``Gathered.real``. Many metrics read them as counts: how often each sample is drawn."""

    generated: Tensor
    real: Tensor

    def __len__(self) -> int:
        return len(self.generated)

    def generated_counts(self) -> Tensor:
        """(B, M) float64: how many times each generated sample is drawn in each resample."""
        return _counts(self.generated)

    def real_counts(self) -> Tensor:
        """(B, N) float64: how many times each real sample is drawn in each resample."""
        return _counts(self.real)

    @staticmethod
    def identity(generated: int, real: int, device: torch.device | str = "cpu") -> Resamples:
        """One "resample" that draws every sample once: the metric on the samples themselves."""
        return Resamples(
            torch.arange(generated, device=device)[None], torch.arange(real, device=device)[None]
        )

    def chunks(self, elements_per_resample: int) -> Iterator[Resamples]:
        """The resamples in consecutive parts of at most ``CHUNK_ELEMENTS`` elements (at least one
        resample each), for metrics that materialise a tensor per resample."""
        size = max(1, CHUNK_ELEMENTS // max(1, elements_per_resample))
        for first in range(0, len(self), size):
            yield Resamples(self.generated[first : first + size], self.real[first : first + size])


def _counts(indices: Tensor) -> Tensor:
    counts = torch.zeros(indices.shape, dtype=torch.float64, device=indices.device)
    return counts.scatter_add_(1, indices, torch.ones_like(counts))


def memo(owner: Any, key: str, tensors: tuple[Tensor, ...], make: Callable[[], T]) -> T:
    """``make()``, kept on ``owner`` while ``tensors`` are the very objects it was made from (weak
    references: a freed tensor whose memory is reused never matches): e.g. the real features' ball radii,
    computed once for every row of a sweep that resamples against them."""
    store = owner.__dict__.setdefault("_memo", {})
    found = store.get(key)
    if found is not None and all(ref() is tensor for ref, tensor in zip(found[0], tensors, strict=True)):
        return found[1]
    value = make()
    store[key] = (tuple(weakref.ref(tensor) for tensor in tensors), value)
    return value


class RowMetric(nn.Module):
    """A metric of a sweep row. Its states are torchmetrics states (reduced over ranks: ``reduction``), or
    it reads the ``Gathered`` features; ``compute`` is a collective that every rank calls.

    Subclasses set ``name`` (the registry key), ``columns``, ``consumes`` (the per-sample inputs it reads:
    ``features``, ``logits`` or an outcome such as ``class_correct``; it is updated only where all of them
    are given), ``reduction``, ``min_samples`` (finite generated samples over all ranks below which its
    columns are None) and, optionally, ``trade_offs`` it draws."""

    name: ClassVar[str]
    columns: ClassVar[tuple[Column, ...]]
    consumes: ClassVar[tuple[str, ...]]
    reduction: ClassVar[Reduction]
    min_samples: ClassVar[int] = 1
    trade_offs: ClassVar[tuple[TradeOff, ...]] = ()

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.feature_dim = feature_dim

    def update_real(self, features: Tensor) -> None:
        """Add real features (each rank its shard); metrics that read ``Gathered.real`` need not."""

    def update(self, inputs: dict[str, Tensor]) -> None:
        """Add generated samples: ``inputs`` holds (at least) the tensors in ``consumes``, a row per sample.
        Metrics that read ``Gathered.generated`` need not."""

    def compute(self, gathered: Gathered) -> dict[str, float | None]:
        """The metric's columns over every rank's samples (a collective)."""
        raise NotImplementedError

    def resampled(self, gathered: Gathered, draws: Resamples) -> dict[str, Tensor]:
        """The metric's columns recomputed on each resample in ``draws`` from the gathered samples alone
        (no collective, no state): a (B,) float64 tensor per column (NaN where a resample has no value).
        With ``Resamples.identity`` it is the metric of the samples themselves. A metric that materialises
        a tensor per resample takes them in ``draws.chunks``; one that would need a pairwise matrix over
        ``PAIRWISE_LIMIT`` entries returns {}. The default, {}, means the metric has no interval."""
        return {}

    def reset(self) -> None:
        """Forget generated samples: reset every torchmetrics state it holds (one that keeps real-data
        states, like FID with ``reset_real_features=False``, keeps them)."""
        for module in self.children():
            if isinstance(module, Metric):
                module.reset()


METRICS: dict[str, type[RowMetric]] = {}


def register_metric(metric: type[RowMetric]) -> type[RowMetric]:
    """Class decorator: register ``metric`` under its ``name``; a name or column taken twice is refused."""
    taken = {column.name for column in columns()}
    clash = sorted(taken & {column.name for column in metric.columns})
    if metric.name in METRICS or clash:
        raise ValueError(f"metric {metric.name!r} is registered twice or repeats columns {clash}")
    METRICS[metric.name] = metric
    return metric


def columns() -> tuple[Column, ...]:
    """Every registered metric's columns, in registration order: the metric columns of a sweep row."""
    return tuple(column for metric in METRICS.values() for column in metric.columns)


def column(name: str) -> Column:
    """The registered column called ``name``."""
    found = {column.name: column for column in columns()}
    if name not in found:
        raise KeyError(f"no registered metric has a column {name!r}; columns: {', '.join(found)}")
    return found[name]


def trade_offs() -> tuple[TradeOff, ...]:
    """Every registered metric's trade-offs, in registration order: the panels of ``curves.png``."""
    return tuple(trade_off for metric in METRICS.values() for trade_off in metric.trade_offs)


def quiet_compute(metric: Metric) -> Tensor:
    """``metric.compute()`` (a collective) without torchmetrics' warning for a state no rank updated."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*compute.*before the ``update``.*")
        return metric.compute()


def mean_or_none(metric: Metric) -> float | None:
    """A mean metric's value over every rank (a collective), or None where no sample fed it on any rank
    (the reduced weight is 0, so the mean is NaN)."""
    value = float(quiet_compute(metric))
    return None if math.isnan(value) else value
