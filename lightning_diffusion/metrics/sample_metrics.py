"""The metrics of one sweep row, correct under DDP: every state is a torchmetrics state reduced over
ranks, and every rank must call ``compute`` (it is a collective).

- FID (Heusel et al. 2017): torchmetrics' float64 sum states, fed precomputed features.
- Inception Score (Salimans et al. 2016) from extractor logits, one split, so it does not depend on
  the order in which ranks gather samples.
- Precision / recall (Kynkäänniemi et al. 2019, k = 3 nearest neighbours): torch-fidelity's formula on
  all N generated and all real features gathered from all ranks, in blocks of ``PR_BLOCK`` rows, so
  memory stays at PR_BLOCK x N distances (2 GB at N = 50,000) rather than N x N (10 GB per matrix);
  its cost is four N x N x D distance passes.
- Density / coverage (Naeem et al. 2020, k = 5) on the same gathered features, in the same blocks; the
  real balls' radii are computed once per reference set (kept across rows), so a row costs one more
  N x N x D pass.
- Vendi score (Friedman & Dieng 2023) of the gathered generated features, cosine kernel, from a D x D
  matrix.
- Class accuracy: the fraction of samples the evaluator reads as their conditioning label.
- CLIP score (text sweeps): mean of per-sample scores from a separately trained contrastive encoder.
- Attribute accuracy (text sweeps): mean fraction of a caption's attributes the evaluator reads back.
"""

from __future__ import annotations

import math
import warnings

from torch import Tensor, nn
from torch_fidelity.metric_prc import calculate_precision_recall_part
from torchmetrics import CatMetric, MeanMetric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore

from lightning_diffusion.metrics.density_coverage import (
    DENSITY_NEIGHBOURHOOD,
    density_and_coverage,
    real_ball_radii,
)
from lightning_diffusion.metrics.features import identity_features
from lightning_diffusion.metrics.vendi import vendi_score

NEIGHBOURHOOD = 3
PR_BLOCK = 10000  # rows of the distance matrices held at once by precision/recall, density/coverage
METRIC_KEYS = (  # what ``SampleMetrics.compute`` returns: the metric columns of a sweep row
    "fid",
    "inception_score",
    "precision",
    "recall",
    "density",
    "coverage",
    "vendi",
    "class_accuracy",
    "clip_score",
    "attribute_accuracy",
)


class SampleMetrics(nn.Module):
    """Real-data reference states (kept across ``reset_generated``) and generated-sample states."""

    def __init__(self, feature_dim: int, neighbourhood: int = NEIGHBOURHOOD) -> None:
        super().__init__()
        self.neighbourhood = neighbourhood
        self.real_radii: Tensor | None  # NND_k of the real features, computed at the first row
        self.register_buffer("real_radii", None, persistent=False)  # a buffer: moves with .to(device)
        self.fid = FrechetInceptionDistance(feature=identity_features(feature_dim), reset_real_features=False)
        self.inception_score = InceptionScore(feature=identity_features(feature_dim), splits=1)
        self.real_features = CatMetric()
        self.generated_features = CatMetric()
        self.class_accuracy = MeanMetric()
        self.clip_score = MeanMetric()
        self.attribute_accuracy = MeanMetric()

    def update_real(self, features: Tensor) -> None:
        """Add real-data features (each rank adds its own shard)."""
        self.fid.update(features, real=True)
        self.real_features.update(features.float())
        self.real_radii = None

    def update_generated(
        self,
        features: Tensor,
        logits: Tensor,
        class_correct: Tensor | None = None,
        clip_scores: Tensor | None = None,
        attribute_correct: Tensor | None = None,
    ) -> None:
        """Add generated samples: their features and logits, and per sample (where measured) whether
        the evaluator reads it as its label, its CLIP score and the fraction of its attributes read back."""
        self.fid.update(features, real=False)
        self.inception_score.update(logits.float())
        self.generated_features.update(features.float())
        for metric, values in (
            (self.class_accuracy, class_correct),
            (self.clip_score, clip_scores),
            (self.attribute_accuracy, attribute_correct),
        ):
            if values is not None:
                metric.update(values)

    def compute(self) -> dict[str, float | None]:
        """The ``METRIC_KEYS`` over every rank's samples (a collective); a metric the samples gave no input
        for (e.g. class accuracy of unconditional samples; density and coverage with no more real images
        than k = 5) is None."""
        generated = self.generated_features.compute().reshape(-1, self.fid.fake_features_sum.shape[0])
        real = self.real_features.compute().reshape(-1, generated.shape[1])
        precision, recall = calculate_precision_recall_part(generated, real, self.neighbourhood, PR_BLOCK)
        density = coverage = None  # a smoke test's handful of real images has no k = 5 neighbours
        if len(real) > DENSITY_NEIGHBOURHOOD:
            if self.real_radii is None:
                self.real_radii = real_ball_radii(real, DENSITY_NEIGHBOURHOOD, PR_BLOCK)
            density, coverage = density_and_coverage(
                real, generated, self.real_radii, DENSITY_NEIGHBOURHOOD, PR_BLOCK
            )
        return {
            "fid": float(self.fid.compute()),
            "inception_score": float(self.inception_score.compute()[0]),
            "precision": float(precision),
            "recall": float(recall),
            "density": density,
            "coverage": coverage,
            "vendi": vendi_score(generated),
            "class_accuracy": _mean_or_none(self.class_accuracy),
            "clip_score": _mean_or_none(self.clip_score),
            "attribute_accuracy": _mean_or_none(self.attribute_accuracy),
        }

    def reset_generated(self) -> None:
        """Forget generated samples (FID keeps its real states, by ``reset_real_features=False``)."""
        generated = (self.fid, self.inception_score, self.generated_features, self.class_accuracy)
        for metric in (*generated, self.clip_score, self.attribute_accuracy):
            metric.reset()


def _mean_or_none(metric: MeanMetric) -> float | None:
    """The metric's mean over every rank (a collective: every rank computes), or None where no sample
    fed it on any rank (the reduced weight is 0, so the mean is NaN)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*compute.*before the ``update``.*")
        value = float(metric.compute())
    return None if math.isnan(value) else value
