"""Guidance methods behind one interface (``Guidance``), composable with any diffusion model."""

from lightning_diffusion.guidance.autoguidance import AutoGuidance
from lightning_diffusion.guidance.base import (
    Condition,
    DiffusionModel,
    Guidance,
    Guided,
    GuidedDenoiser,
    concat_conditions,
)
from lightning_diffusion.guidance.classifier import ClassifierGuidance, NoisyClassifier
from lightning_diffusion.guidance.classifier_free import ClassifierFree
from lightning_diffusion.guidance.clip import ClipGuidance, ContrastiveModel
from lightning_diffusion.guidance.factory import METHODS, build_guidance
from lightning_diffusion.guidance.gradient import GradientGuidance
from lightning_diffusion.guidance.modifiers import CFGRescale, DynamicThresholding, GuidanceInterval, Modifier
from lightning_diffusion.guidance.multi_condition import ComposedCFG, MultiConditionCFG, MultiConditionOptions
from lightning_diffusion.guidance.pag import PAGOptions, PerturbedAttentionGuidance

__all__ = [
    "METHODS",
    "AutoGuidance",
    "CFGRescale",
    "ClassifierFree",
    "ClassifierGuidance",
    "ClipGuidance",
    "ComposedCFG",
    "Condition",
    "ContrastiveModel",
    "DiffusionModel",
    "DynamicThresholding",
    "GradientGuidance",
    "Guidance",
    "GuidanceInterval",
    "Guided",
    "GuidedDenoiser",
    "Modifier",
    "MultiConditionCFG",
    "MultiConditionOptions",
    "NoisyClassifier",
    "PAGOptions",
    "PerturbedAttentionGuidance",
    "build_guidance",
    "concat_conditions",
]
