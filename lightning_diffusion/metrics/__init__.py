"""Sample-quality metrics (FID, IS, precision/recall, density/coverage, Vendi score, class accuracy,
CLIP score) and their feature extractors; ``METRIC_KEYS`` names the metric columns of a sweep row."""

from lightning_diffusion.metrics.clip_score import clip_scores
from lightning_diffusion.metrics.features import (
    FEATURES,
    EvaluatorFeatures,
    FeatureExtractor,
    FeatureInputs,
    InceptionFeatures,
    build_features,
)
from lightning_diffusion.metrics.sample_metrics import METRIC_KEYS, SampleMetrics

__all__ = [
    "FEATURES",
    "METRIC_KEYS",
    "EvaluatorFeatures",
    "FeatureExtractor",
    "FeatureInputs",
    "InceptionFeatures",
    "SampleMetrics",
    "build_features",
    "clip_scores",
]
