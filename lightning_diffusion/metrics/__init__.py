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

__all__ = [
    "FEATURES",
    "EvaluatorFeatures",
    "FeatureExtractor",
    "FeatureInputs",
    "InceptionFeatures",
    "SampleMetrics",
    "build_features",
    "clip_scores",
]
