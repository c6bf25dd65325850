"""Pipelines that chain trained components at sampling time (cascades)."""

from lightning_diffusion.pipeline.cascade import Cascade, CascadeStage, sample_cascade

__all__ = ["Cascade", "CascadeStage", "sample_cascade"]
