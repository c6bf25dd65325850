"""Precision and recall (Kynkäänniemi et al. 2019, Sec. 3, k = 3 nearest neighbours): the fraction of
generated features inside the real manifold (balls to each real feature's k-th neighbour) and of real
features inside the generated one. torch-fidelity's formula on all N generated and all real features
gathered from all ranks, in blocks of ``BLOCK_ROWS`` rows, so memory stays at BLOCK_ROWS x N distances
(2 GB at N = 50,000) rather than N x N (10 GB per matrix); its cost is four N x N x D distance passes.

Resampled (bootstrap) values keep each sample's ball radius from the whole set (a resample's duplicates
would otherwise be each other's nearest neighbours and shrink the balls) and redraw which balls and which
points take part: precision is the share of the drawn generated points inside a drawn real ball, recall
the share of the drawn real points inside a drawn generated ball. On the samples themselves this is
torch-fidelity's value."""

from __future__ import annotations

import torch
from torch import Tensor
from torch_fidelity.metric_prc import calculate_precision_recall_part

from lightning_diffusion.metrics.density_coverage import real_ball_radii
from lightning_diffusion.metrics.registry import (
    BLOCK_ROWS,
    PAIRWISE_LIMIT,
    Column,
    Gathered,
    Resamples,
    RowMetric,
    TradeOff,
    memo,
    register_metric,
)

NEIGHBOURHOOD = 3  # k of the paper


@register_metric
class PrecisionRecall(RowMetric):
    """Precision (quality) and recall (diversity) of the gathered generated features."""

    name = "precision_recall"
    columns = (
        Column("precision", higher_is_better=True, label="precision (quality)"),
        Column("recall", higher_is_better=True, label="recall (diversity)", frontier=True),
    )
    consumes = ("features",)
    reduction = "cat"
    min_samples = NEIGHBOURHOOD + 1  # each generated feature needs k others
    trade_offs = (TradeOff("recall", "precision", front="precision_recall"),)

    def compute(self, gathered: Gathered) -> dict[str, float | None]:
        precision, recall = calculate_precision_recall_part(
            gathered.generated, gathered.real, NEIGHBOURHOOD, BLOCK_ROWS
        )
        return {"precision": float(precision), "recall": float(recall)}

    def resampled(self, gathered: Gathered, draws: Resamples) -> dict[str, Tensor]:
        real, generated = gathered.real, gathered.generated
        if len(real) * len(generated) > PAIRWISE_LIMIT or len(real) <= NEIGHBOURHOOD:
            return {}
        real_radii = memo(
            self, "real_radii", (real,), lambda: real_ball_radii(real, NEIGHBOURHOOD, BLOCK_ROWS)
        )
        generated_radii = real_ball_radii(generated, NEIGHBOURHOOD, BLOCK_ROWS)
        distances = torch.cat([torch.cdist(rows, real) for rows in generated.split(BLOCK_ROWS)])  # (M, N)
        in_real = (distances <= real_radii).float()  # generated j inside real i's ball
        in_generated = (distances <= generated_radii[:, None]).float()  # real i inside generated j's ball
        generated_counts, real_counts = draws.generated_counts(), draws.real_counts()
        hit_by_real = (real_counts.float() @ in_real.T) > 0  # (B, M)
        hit_by_generated = (generated_counts.float() @ in_generated) > 0  # (B, N)
        return {
            "precision": (generated_counts * hit_by_real).sum(dim=1) / len(generated),
            "recall": (real_counts * hit_by_generated).sum(dim=1) / len(real),
        }
