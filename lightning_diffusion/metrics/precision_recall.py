"""Precision and recall (Kynkäänniemi et al. 2019, Sec. 3, k = 3 nearest neighbours): the fraction of
generated features inside the real manifold (balls to each real feature's k-th neighbour) and of real
features inside the generated one. torch-fidelity's formula on all N generated and all real features
gathered from all ranks, in blocks of ``BLOCK_ROWS`` rows, so memory stays at BLOCK_ROWS x N distances
(2 GB at N = 50,000) rather than N x N (10 GB per matrix); its cost is four N x N x D distance passes."""

from __future__ import annotations

from torch_fidelity.metric_prc import calculate_precision_recall_part

from lightning_diffusion.metrics.registry import (
    BLOCK_ROWS,
    Column,
    Gathered,
    RowMetric,
    TradeOff,
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
