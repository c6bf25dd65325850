"""The metric registry: a metric of a sweep row is one registered class that declares its columns (name,
which way is better, axis label), what it consumes of each generated sample, how its states reduce over
ranks and the fewest samples it needs, and computes its values. ``SampleMetrics``, the row keys,
``frontier.csv``, ``curves.png`` and W&B all read this registry; adding a metric is one file that
registers itself (``metrics/kid.py`` is the worked example) and its import in ``metrics/__init__.py``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from torch import Tensor, nn
from torchmetrics import Metric

BLOCK_ROWS = 10000  # rows of a distance or kernel matrix over the gathered features held at once
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
    reference features (N, D) and this row's finite generated samples' features (M, D), float32."""

    real: Tensor
    generated: Tensor


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
