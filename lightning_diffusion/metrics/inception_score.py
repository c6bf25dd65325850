"""Inception Score (Salimans et al. 2016, Sec. 4): exp(E_x KL(p(y|x) || p(y))) from the extractor's
logits, over one split so that it does not depend on the order in which ranks gather samples (torchmetrics'
state is the list of logits, concatenated over ranks)."""

from __future__ import annotations

from torch import Tensor
from torchmetrics.image.inception import InceptionScore as TorchmetricsInceptionScore

from lightning_diffusion.metrics.features import identity_features
from lightning_diffusion.metrics.registry import Column, Gathered, RowMetric, TradeOff, register_metric


@register_metric
class InceptionScore(RowMetric):
    """The Inception Score of the generated samples' logits; drawn against FID in ``curves.png``."""

    name = "inception_score"
    columns = (Column("inception_score", higher_is_better=True, label="Inception Score"),)
    consumes = ("logits",)
    reduction = "cat"
    trade_offs = (TradeOff("inception_score", "fid"),)

    def __init__(self, feature_dim: int) -> None:
        super().__init__(feature_dim)
        self.inception_score = TorchmetricsInceptionScore(feature=identity_features(feature_dim), splits=1)

    def update(self, inputs: dict[str, Tensor]) -> None:
        self.inception_score.update(inputs["logits"].float())

    def compute(self, gathered: Gathered) -> dict[str, float | None]:
        return {"inception_score": float(self.inception_score.compute()[0])}
