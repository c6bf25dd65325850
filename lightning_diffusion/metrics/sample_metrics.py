"""The metrics of one sweep row, correct under DDP: every registered metric (``metrics.registry``) fed the
same finite samples, every state a torchmetrics state reduced over ranks, and every rank must call
``compute`` (it is a collective).

Samples that are not finite (a NaN or inf in the sampler's image, its features or an outcome) are counted
(``non_finite``, a column of the row) and left out of every metric alike, so the gathered features of the
metrics stay aligned; torchmetrics' own NaN handling (``CatMetric`` drops NaN elements) never sees one.
Besides the metrics' own states it gathers each finite sample's inputs (features, logits, outcomes) and,
where the caller gives them, its sample index, in sample-index order whatever the number of ranks: the
per-sample data that bootstrap intervals and paired comparisons resample (``RowMetric.resampled``).
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
    generated samples' inputs of the row, shared by the metrics that need whole sets."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.metrics = nn.ModuleDict({name: metric(feature_dim) for name, metric in METRICS.items()})
        self.real_features = CatMetric(nan_strategy="error")
        self.generated_features = CatMetric(nan_strategy="error")
        self.generated_inputs = nn.ModuleDict(
            {name: CatMetric(nan_strategy="error") for name in sorted(consumed_inputs() - {"features"})}
        )
        self.indices = CatMetric(nan_strategy="error")  # float32: exact sample indices below 2**24
        self.finite = SumMetric()
        self.non_finite = SumMetric()

    def update_real(self, features: Tensor) -> None:
        """Add real-data features (each rank adds its own shard)."""
        self.real_features.update(features.float())
        for metric in self.metrics.values():
            metric.update_real(features)

    def update_generated(
        self, inputs: Mapping[str, Tensor], finite: Tensor | None = None, indices: Tensor | None = None
    ) -> None:
        """Add generated samples: ``inputs`` maps input names (``features``, ``logits``, outcomes such as
        ``class_correct``) to tensors with one row per sample. A sample whose ``finite`` entry is False
        (e.g. its image held a NaN before clamping) or any of whose inputs is not finite is counted and
        left out of every metric. ``indices`` (the samples' indices in the row) orders the gathered
        samples; give them for every batch of a row or for none."""
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
            indices = None if indices is None else indices[keep.to(indices.device)]
        self.generated_features.update(inputs["features"].float())
        for name, value in inputs.items():
            if name != "features":
                self.generated_inputs[name].update(value.reshape(kept, -1).float())
        if indices is not None:
            self.indices.update(indices.to(features.device).float())
        for metric in self.metrics.values():
            if all(name in inputs for name in metric.consumes):
                metric.update(dict(inputs))

    def compute(self) -> dict[str, float | int | None]:
        """``metric_keys()`` over every rank's finite samples (a collective). A column is None where its
        metric got no input (class accuracy of unconditional samples), where fewer finite samples than
        it needs were drawn (all of them when none is finite), or where its metric says so (density and
        coverage with no more real images than k = 5)."""
        return self.compute_and_gather()[0]

    def compute_and_gather(self) -> tuple[dict[str, float | int | None], Gathered | None]:
        """``compute()`` and the ``Gathered`` samples it was computed from (None when no sample is finite):
        every rank's finite samples in sample-index order where indices were given (a collective)."""
        finite, non_finite = int(quiet_compute(self.finite)), int(quiet_compute(self.non_finite))
        values: dict[str, float | int | None] = dict.fromkeys(column.name for column in columns())
        gathered = None
        if finite > 0:
            gathered = self.gather(finite)
            for metric in self.metrics.values():
                if finite >= metric.min_samples:
                    values.update(metric.compute(gathered))
        return {**values, NON_FINITE: non_finite}, gathered

    def gather(self, finite: int) -> Gathered:
        """The real features and the ``finite`` generated samples' inputs of every rank (a collective)."""
        generated = self.generated_features.compute().reshape(-1, self.feature_dim)
        inputs = {"features": generated}
        for name, state in self.generated_inputs.items():
            value = quiet_compute(state)  # an input no rank had (e.g. class_correct of text rows): absent
            if isinstance(value, Tensor) and value.numel():
                value = value.reshape(finite, -1)  # one value per sample comes back as (M,)
                inputs[name] = value.squeeze(1) if value.shape[1] == 1 else value
        indices = quiet_compute(self.indices)
        order = None
        if isinstance(indices, Tensor) and indices.numel() == finite:
            indices = indices.round().long()
            order = indices.argsort()
            indices = indices[order]
            if bool((order != torch.arange(finite, device=order.device)).any()):  # gathered rank by rank
                inputs = {name: value[order] for name, value in inputs.items()}
        else:
            indices = None
        return Gathered(
            real=self.real_features.compute().reshape(-1, self.feature_dim),
            generated=inputs["features"],
            inputs=inputs,
            indices=indices,
        )

    def reset_generated(self) -> None:
        """Forget generated samples (real-data states stay: FID's and the gathered real features)."""
        for metric in self.metrics.values():
            metric.reset()
        states = (self.generated_features, self.indices, self.finite, self.non_finite)
        for state in (*states, *self.generated_inputs.values()):
            state.reset()
