"""Sample-quality metrics (FID, IS, precision/recall, class accuracy, CLIP score) and their feature
extractors."""

from lightning_diffusion.metrics.clip_score import clip_scores
from lightning_diffusion.metrics.features import EvaluatorFeatures, FeatureExtractor, InceptionFeatures
from lightning_diffusion.metrics.sample_metrics import SampleMetrics

__all__ = [
    "EvaluatorFeatures",
    "FeatureExtractor",
    "InceptionFeatures",
    "SampleMetrics",
    "clip_scores",
]
