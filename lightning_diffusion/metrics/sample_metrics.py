"""The metrics of one sweep row, correct under DDP: every registered metric (``metrics.registry``) fed the
same finite samples, every state a torchmetrics state reduced over ranks, and every rank must call
``compute`` (it is a collective).

Samples that are not finite (a NaN or inf in the sampler's image, its features or an outcome) are counted
(``non_finite``, a column of the row) and left out of every metric alike, so the gathered features of the
metrics stay aligned; torchmetrics' own NaN handling (``CatMetric`` drops NaN elements) never sees one.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torchmetrics import CatMetric, SumMetric

from lightning_diffusion.metrics.registry import METRICS, Gathered, columns, quiet_compute

NON_FINITE = "non_finite"  # the row column counting samples left out of the metrics


def metric_keys() -> tuple[str, ...]:
    """What ``SampleMetrics.compute`` returns: the registered columns, then ``non_finite``."""
    return (*(column.name for column in columns()), NON_FINITE)


def consumed_inputs() -> set[str]:
    """The per-sample inputs some registered metric reads (``features`` always: the gathered sets)."""
    return {"features", *(name for metric in METRICS.values() for name in metric.consumes)}


class SampleMetrics(nn.Module):
    """Every registered metric, with the gathered real features (kept across ``reset_generated``) and the
    generated features of the row, shared by the metrics that need whole sets."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.metrics = nn.ModuleDict({name: metric(feature_dim) for name, metric in METRICS.items()})
        self.real_features = CatMetric(nan_strategy="error")
        self.generated_features = CatMetric(nan_strategy="error")
        self.finite = SumMetric()
        self.non_finite = SumMetric()

    def update_real(self, features: Tensor) -> None:
        """Add real-data features (each rank adds its own shard)."""
        self.real_features.update(features.float())
        for metric in self.metrics.values():
            metric.update_real(features)

    def update_generated(self, inputs: Mapping[str, Tensor], finite: Tensor | None = None) -> None:
        """Add generated samples: ``inputs`` maps input names (``features``, ``logits``, outcomes such as
        ``class_correct``) to tensors with one row per sample. A sample whose ``finite`` entry is False
        (e.g. its image held a NaN before clamping) or any of whose inputs is not finite is counted and
        left out of every metric."""
        unknown = sorted(set(inputs) - consumed_inputs())
        if unknown:
            raise ValueError(f"no registered metric consumes {unknown}; inputs: {sorted(consumed_inputs())}")
        features = inputs["features"]
        keep = features.new_ones(len(features), dtype=torch.bool) if finite is None else finite
        for value in inputs.values():
            keep = keep & value.reshape(len(value), -1).isfinite().all(dim=1)
        kept = int(keep.sum())
        self.finite.update(kept)
        self.non_finite.update(len(keep) - kept)
        if kept == 0:
            return
        if kept < len(keep):
            inputs = {name: value[keep] for name, value in inputs.items()}
        self.generated_features.update(inputs["features"].float())
        for metric in self.metrics.values():
            if all(name in inputs for name in metric.consumes):
                metric.update(dict(inputs))

    def compute(self) -> dict[str, float | int | None]:
        """``metric_keys()`` over every rank's finite samples (a collective). A column is None where its
        metric got no input (class accuracy of unconditional samples), where fewer finite samples than
        it needs were drawn (all of them when none is finite), or where its metric says so (density and
        coverage with no more real images than k = 5)."""
        finite, non_finite = int(quiet_compute(self.finite)), int(quiet_compute(self.non_finite))
        values: dict[str, float | int | None] = dict.fromkeys(column.name for column in columns())
        if finite > 0:
            gathered = Gathered(
                real=self.real_features.compute().reshape(-1, self.feature_dim),
                generated=self.generated_features.compute().reshape(-1, self.feature_dim),
            )
            for metric in self.metrics.values():
                if finite >= metric.min_samples:
                    values.update(metric.compute(gathered))
        return {**values, NON_FINITE: non_finite}

    def reset_generated(self) -> None:
        """Forget generated samples (real-data states stay: FID's and the gathered real features)."""
        for metric in self.metrics.values():
            metric.reset()
        for state in (self.generated_features, self.finite, self.non_finite):
            state.reset()
