"""Metrics that average a per-sample outcome the sweep judges (``sweep.run``): class accuracy (the fraction
of samples the evaluator reads as their conditioning label), CLIP score (Hessel et al. 2021, from a
separately trained contrastive encoder) and attribute accuracy (the mean fraction of a caption's attributes
the evaluator reads back). Each is a torchmetrics ``MeanMetric``: sums of values and weights, summed over
ranks; None where no sample on any rank had the outcome (unconditional samples, no scorer). Resampled:
the mean of the gathered outcomes over each resample."""

from __future__ import annotations

from torch import Tensor
from torchmetrics import MeanMetric

from lightning_diffusion.metrics.registry import (
    Column,
    Gathered,
    Resamples,
    RowMetric,
    TradeOff,
    mean_or_none,
    register_metric,
)


class MeanOutcome(RowMetric):
    """The mean over every rank's samples of the one outcome in ``consumes``, as the one column."""

    reduction = "sum"

    def __init__(self, feature_dim: int) -> None:
        super().__init__(feature_dim)
        self.mean = MeanMetric()

    def update(self, inputs: dict[str, Tensor]) -> None:
        self.mean.update(inputs[self.consumes[0]])

    def compute(self, gathered: Gathered) -> dict[str, float | None]:
        return {self.columns[0].name: mean_or_none(self.mean)}

    def resampled(self, gathered: Gathered, draws: Resamples) -> dict[str, Tensor]:
        outcomes = gathered.inputs.get(self.consumes[0])
        if outcomes is None:
            return {}
        return {self.columns[0].name: outcomes.double().reshape(-1)[draws.generated].mean(dim=1)}


@register_metric
class ClassAccuracy(MeanOutcome):
    """Whether the evaluator reads a sample as its label (1.0 or 0.0), averaged; against FID in the curves."""

    name = "class_accuracy"
    columns = (Column("class_accuracy", higher_is_better=True, label="class accuracy"),)
    consumes = ("class_correct",)
    trade_offs = (TradeOff("class_accuracy", "fid", front="fid_accuracy"),)


@register_metric
class ClipScore(MeanOutcome):
    """Per-sample CLIP scores in [0, 100] (``metrics.clip_score.clip_scores``), averaged."""

    name = "clip_score"
    columns = (Column("clip_score", higher_is_better=True, label="CLIP score"),)
    consumes = ("clip_scores",)


@register_metric
class AttributeAccuracy(MeanOutcome):
    """Per-sample fractions of the caption's attributes the evaluator reads back, averaged."""

    name = "attribute_accuracy"
    columns = (Column("attribute_accuracy", higher_is_better=True, label="attribute accuracy"),)
    consumes = ("attribute_correct",)
