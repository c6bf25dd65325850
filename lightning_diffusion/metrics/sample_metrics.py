"""The metrics of one sweep row, correct under DDP: every state is a torchmetrics state reduced over
ranks, and every rank must call ``compute`` (it is a collective).

- FID (Heusel et al. 2017): torchmetrics' float64 sum states, fed precomputed features.
- Inception Score (Salimans et al. 2016) from extractor logits, one split, so it does not depend on
  the order in which ranks gather samples.
- Precision / recall (Kynkäänniemi et al. 2019, k = 3 nearest neighbours): torch-fidelity's formula on
  the features gathered from all ranks.
- Class accuracy: argmax of the extractor logits against the conditioning label.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_fidelity.metric_prc import calculate_precision_recall_full
from torchmetrics import CatMetric, MeanMetric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore

from lightning_diffusion.metrics.features import identity_features

NEIGHBOURHOOD = 3


class SampleMetrics(nn.Module):
    """Real-data reference states (kept across ``reset_generated``) and generated-sample states."""

    def __init__(self, feature_dim: int, neighbourhood: int = NEIGHBOURHOOD) -> None:
        super().__init__()
        self.neighbourhood = neighbourhood
        self.fid = FrechetInceptionDistance(feature=identity_features(feature_dim), reset_real_features=False)
        self.inception_score = InceptionScore(feature=identity_features(feature_dim), splits=1)
        self.real_features = CatMetric()
        self.generated_features = CatMetric()
        self.class_accuracy = MeanMetric()

    def update_real(self, features: Tensor) -> None:
        """Add real-data features (each rank adds its own shard)."""
        self.fid.update(features, real=True)
        self.real_features.update(features.float())

    def update_generated(self, features: Tensor, logits: Tensor, labels: Tensor | None) -> None:
        """Add generated samples: their features, logits and (if conditional) conditioning labels."""
        self.fid.update(features, real=False)
        self.inception_score.update(logits.float())
        self.generated_features.update(features.float())
        if labels is not None:
            self.class_accuracy.update((logits.argmax(dim=1) == labels).float())

    def compute(self) -> dict[str, float]:
        """FID, IS, precision, recall and class accuracy over every rank's samples (a collective)."""
        generated = self.generated_features.compute().reshape(-1, self.fid.fake_features_sum.shape[0])
        real = self.real_features.compute().reshape(-1, generated.shape[1])
        precision, recall = calculate_precision_recall_full(generated, real, self.neighbourhood)
        accuracy = self.class_accuracy.compute()
        return {
            "fid": float(self.fid.compute()),
            "inception_score": float(self.inception_score.compute()[0]),
            "precision": float(precision),
            "recall": float(recall),
            "class_accuracy": float(accuracy) if not torch.isnan(accuracy) else float("nan"),
        }

    def reset_generated(self) -> None:
        """Forget generated samples (FID keeps its real states, by ``reset_real_features=False``)."""
        for metric in (self.fid, self.inception_score, self.generated_features, self.class_accuracy):
            metric.reset()
