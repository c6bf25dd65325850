"""Pipelines that chain trained components at sampling time (cascades, the unCLIP chain)."""

from lightning_diffusion.pipeline.cascade import Cascade, CascadeStage, sample_cascade
from lightning_diffusion.pipeline.unclip import PriorStage, Unclip, image_variations, sample_unclip

__all__ = [
    "Cascade",
    "CascadeStage",
    "PriorStage",
    "Unclip",
    "image_variations",
    "sample_cascade",
    "sample_unclip",
]
