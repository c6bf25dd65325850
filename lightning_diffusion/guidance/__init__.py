"""Guidance methods behind one interface (``Guidance``), composable with any diffusion model.

Each method's module registers it (``register_method``) when imported here: a new method is one file
plus one import line below."""

from lightning_diffusion.guidance.apg import AdaptiveProjectedGuidance, APGOptions
from lightning_diffusion.guidance.autoguidance import AutoGuidance
from lightning_diffusion.guidance.base import (
    Condition,
    DiffusionModel,
    Guidance,
    Guided,
    GuidedDenoiser,
    concat_conditions,
)
from lightning_diffusion.guidance.cfg_zero_star import CFGZeroStar, CFGZeroStarOptions
from lightning_diffusion.guidance.cfgpp import CFGPlusPlus
from lightning_diffusion.guidance.classifier import ClassifierGuidance, NoisyClassifier
from lightning_diffusion.guidance.classifier_free import ClassifierFree
from lightning_diffusion.guidance.clip import ClipGuidance, ContrastiveModel
from lightning_diffusion.guidance.factory import build_guidance
from lightning_diffusion.guidance.gradient import GradientGuidance
from lightning_diffusion.guidance.modifiers import CFGRescale, DynamicThresholding, GuidanceInterval, Modifier
from lightning_diffusion.guidance.multi_condition import ComposedCFG, MultiConditionCFG, MultiConditionOptions
from lightning_diffusion.guidance.pag import PAGOptions, PerturbedAttentionGuidance
from lightning_diffusion.guidance.registry import (
    GuidanceInputs,
    GuidanceMethod,
    get_method,
    method_names,
    register_method,
)
from lightning_diffusion.guidance.schedules import SCHEDULES, ScaleSchedule, scheduled

__all__ = [
    "SCHEDULES",
    "APGOptions",
    "AdaptiveProjectedGuidance",
    "AutoGuidance",
    "CFGPlusPlus",
    "CFGRescale",
    "CFGZeroStar",
    "CFGZeroStarOptions",
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
    "GuidanceInputs",
    "GuidanceInterval",
    "GuidanceMethod",
    "Guided",
    "GuidedDenoiser",
    "Modifier",
    "MultiConditionCFG",
    "MultiConditionOptions",
    "NoisyClassifier",
    "PAGOptions",
    "PerturbedAttentionGuidance",
    "ScaleSchedule",
    "build_guidance",
    "concat_conditions",
    "get_method",
    "method_names",
    "register_method",
    "scheduled",
]
