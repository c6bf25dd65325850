"""Classifier guidance (Dhariwal & Nichol 2021, Sec. 4, Algorithms 1-2): a noisy classifier's
ln p(label | z_t, t) as the guiding log-likelihood (the formula lives in ``gradient.py``)."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from lightning_diffusion.config import ConfigError
from lightning_diffusion.guidance.base import Condition, Guidance
from lightning_diffusion.guidance.classifier_free import ClassifierFree
from lightning_diffusion.guidance.gradient import GradientGuidance
from lightning_diffusion.guidance.registry import GuidanceMethod, register_method


class NoisyClassifier(Protocol):
    """What classifier guidance needs of a classifier: logits of p(label | z_t, t), shape (B, K)."""

    def logits(self, z: Tensor, t: Tensor) -> Tensor: ...


class ClassifierGuidance(GradientGuidance):
    """Classifier guidance at scale s on top of ``base`` (default: plain conditional sampling, one pass).

    With an unconditional denoiser the base ignores the label and the classifier alone supplies it.
    s = 0 skips the classifier; the reference is the base's."""

    def __init__(self, classifier: NoisyClassifier, scale: float, base: Guidance | None = None) -> None:
        super().__init__(scale, base or ClassifierFree(1.0))
        self.classifier = classifier

    def check_condition(self, cond: Condition) -> None:
        if cond.get("label") is None:
            raise ConfigError(
                "classifier guidance needs the class labels to guide towards: pass cond={'label': ...}."
            )

    def log_likelihood(self, z: Tensor, t: Tensor, cond: Condition) -> Tensor:
        log_probs = torch.log_softmax(self.classifier.logits(z, t), dim=-1)
        labels = cond["label"].to(log_probs.device, torch.long).reshape(-1, 1)
        return log_probs.gather(1, labels).squeeze(1)


CLASSIFIER = register_method(
    GuidanceMethod(
        "classifier",
        build=lambda inputs: ClassifierGuidance(inputs.classifier, inputs.scale),
        needs=("classifier",),
        prompts=("label",),
        follows_condition=True,
        conditional_denoiser=False,
    )
)
register_method(CLASSIFIER.requiring("interval"))
