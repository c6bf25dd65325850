"""Sample-quality metrics (FID, IS, precision/recall, class accuracy, CLIP score) and their feature
extractors."""

from lightning_diffusion.metrics.clip_score import clip_scores
from lightning_diffusion.metrics.features import (
    FEATURES,
    EvaluatorFeatures,
    FeatureExtractor,
    FeatureInputs,
    InceptionFeatures,
    build_features,
)
from lightning_diffusion.metrics.sample_metrics import SampleMetrics

METRIC_KEYS = (
    "fid",
    "inception_score",
    "precision",
    "recall",
    "class_accuracy",
    "clip_score",
    "attribute_accuracy",
)

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
