"""Pipelines that chain trained components at sampling time (cascades, the unCLIP chain), and the
measurements that sample through components (``upsampling``; ``prior_quality``; the metrics take tensors)."""

from lightning_diffusion.pipeline.cascade import Cascade, CascadeStage, sample_cascade
from lightning_diffusion.pipeline.unclip import PriorStage, Unclip, image_variations, sample_unclip
from lightning_diffusion.pipeline.upsampling import evaluate_upsampler

__all__ = [
    "Cascade",
    "CascadeStage",
    "PriorStage",
    "Unclip",
    "evaluate_upsampler",
    "image_variations",
    "sample_cascade",
    "sample_unclip",
]
