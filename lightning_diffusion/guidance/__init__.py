"""Guidance methods behind one interface (``Guidance``), composable with any diffusion model."""

from lightning_diffusion.guidance.base import Condition, Guidance, GuidedDenoiser, concat_conditions
from lightning_diffusion.guidance.classifier_free import ClassifierFree

__all__ = ["ClassifierFree", "Condition", "Guidance", "GuidedDenoiser", "concat_conditions"]
