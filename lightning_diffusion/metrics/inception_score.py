"""Inception Score (Salimans et al. 2016, Sec. 4): exp(E_x KL(p(y|x) || p(y))) from the extractor's
logits, over one split so that it does not depend on the order in which ranks gather samples (torchmetrics'
state is the list of logits, concatenated over ranks). torchmetrics permutes the logits with torch's global
generator before splitting; the permutation runs under a fixed seed in a forked generator, so a row's score
is the same in every process and the sweep's global random state is left alone. Resampled: with c_j the
times sample j is drawn, p(y) = Σ c_j p(y|x_j) / M and
log IS = Σ c_j Σ_y p(y|x_j) log p(y|x_j) / M - Σ_y p(y) log p(y)."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torchmetrics.image.inception import InceptionScore as TorchmetricsInceptionScore

from lightning_diffusion.metrics.features import identity_features
from lightning_diffusion.metrics.registry import (
    Column,
    Gathered,
    Resamples,
    RowMetric,
    TradeOff,
    register_metric,
)


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
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            torch.manual_seed(0)
            warnings.filterwarnings("ignore", message="std\\(\\): degrees of freedom")  # one split: no spread
            score = float(self.inception_score.compute()[0])  # a collective: every rank calls it
        return {"inception_score": None if _classless(gathered) else score}

    def resampled(self, gathered: Gathered, draws: Resamples) -> dict[str, Tensor]:
        if _classless(gathered):
            return {}
        logits = gathered.inputs["logits"]
        log_p = logits.double().log_softmax(dim=1)
        counts = draws.generated_counts() / draws.generated.shape[1]  # (B, M), rows sum to 1
        own = counts @ (log_p.exp() * log_p).sum(dim=1)  # E_x Σ_y p(y|x) log p(y|x)
        marginal = counts @ log_p.exp()  # (B, classes)
        return {"inception_score": torch.exp(own - torch.special.xlogy(marginal, marginal).sum(dim=1))}


def _classless(gathered: Gathered) -> bool:
    """Whether the feature network gives no class logits (DINOv2, CLIP: zero-width, so none are gathered),
    and so there is no score."""
    logits = gathered.inputs.get("logits")
    return logits is None or logits.shape[-1] == 0
