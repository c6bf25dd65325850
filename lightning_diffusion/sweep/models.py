"""The trained components a sweep uses, and the checks that they fit together and fit the sweep's rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lightning_diffusion.config import ConfigError
from lightning_diffusion.metrics import FeatureExtractor
from lightning_diffusion.sweep.prompts import Prompts
from lightning_diffusion.sweep.settings import SweepSettings


@dataclass
class SweepModels:
    """The trained components a sweep uses; ``classifier``, ``guide``, ``contrastive``, ``cascade`` and
    ``unclip`` only for the methods that need them. ``extractor`` gives the features and logits of FID,
    IS and precision/recall; ``evaluator`` (the evaluator as an extractor, possibly the same object) reads
    classes: class accuracy comes from its logits, and is None without one (Inception's ImageNet logits
    know nothing of the data's classes). ``scorer`` (a contrastive encoder trained apart from the guiding
    one) gives the CLIP score, ``attribute_evaluator`` (an evaluator with attribute heads) the attribute
    accuracy from the evaluator's features."""

    denoiser: Any
    extractor: FeatureExtractor
    classifier: Any = None
    guide: Any = None
    num_classes: int | None = 10
    contrastive: Any = None
    scorer: Any = None
    attribute_evaluator: Any = None
    cascade: Any = None
    unclip: Any = None
    evaluator: FeatureExtractor | None = None


def check_compatible(models: SweepModels, settings: SweepSettings, prompts: Prompts) -> None:
    """Refuse components trained on different data than the denoiser, and any row whose method lacks a
    model it needs or cannot follow the prompts: all before the first sample is drawn."""
    denoiser = models.denoiser
    roles = (
        ("classifier", models.classifier),
        ("guide", models.guide),
        ("contrastive encoder", models.contrastive),
        ("CLIP scorer", models.scorer),
    )
    for role, other in roles:
        if other is None:
            continue
        if tuple(other.image_shape) != tuple(denoiser.image_shape):
            raise ConfigError(
                f"the {role} takes images of shape {tuple(other.image_shape)} but the denoiser makes "
                f"{tuple(denoiser.image_shape)}; pass a {role} trained on the same data."
            )
        if getattr(other, "num_classes", None) != denoiser.num_classes and role == "classifier":
            raise ConfigError(
                f"the classifier knows {other.num_classes} classes but the denoiser {denoiser.num_classes}; "
                "pass a classifier trained on the same data."
            )
    for row in settings.rows():
        row.sweep_method.check(models, settings, prompts)
    if not prompts.text and denoiser.num_classes not in (None, models.num_classes):
        raise ConfigError(
            f"the evaluator knows {models.num_classes} classes but the denoiser {denoiser.num_classes}: "
            "it was trained on another data set; pass an evaluator trained on the denoiser's data."
        )
