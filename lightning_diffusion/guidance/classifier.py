"""Classifier guidance (Dhariwal & Nichol 2021, Sec. 4, Algorithms 1-2) in score form.

A noisy classifier p(label | z_t, t) tilts the base score towards its label:
  grad ln P~(z|x) = grad ln P_base(z|x) + s grad_z ln p(x | z_t, t).
Tweedie (D = (z + sigma^2 score) / alpha) turns the added score into an added denoised term:
  D~ = D_base + (sigma_t^2 / alpha_t) s grad_z ln p(x | z_t, t).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion.parameterization import broadcast_to
from lightning_diffusion.guidance.base import Condition, DiffusionModel, Guidance, Guided
from lightning_diffusion.guidance.classifier_free import ClassifierFree


class NoisyClassifier(Protocol):
    """What classifier guidance needs of a classifier: logits of p(label | z_t, t), shape (B, K)."""

    def logits(self, z: Tensor, t: Tensor) -> Tensor: ...


def label_log_prob_gradient(classifier: NoisyClassifier, z: Tensor, t: Tensor, labels: Tensor) -> Tensor:
    """grad_z ln p(label | z_t, t) per sample, computed even under ``no_grad`` or ``inference_mode``.

    Only z gets a gradient (``autograd.grad``), so the classifier's parameters accumulate nothing."""
    with torch.inference_mode(False), torch.enable_grad():
        z = z.detach().clone().requires_grad_(True)
        log_probs = torch.log_softmax(classifier.logits(z, t.clone()), dim=-1)
        chosen = log_probs.gather(1, labels.to(log_probs.device, torch.long).reshape(-1, 1)).sum()
        (gradient,) = torch.autograd.grad(chosen, z)
    return gradient


class ClassifierGuidance(Guidance):
    """Classifier guidance at scale s on top of ``base`` (default: plain conditional sampling, one pass).

    With an unconditional denoiser the base ignores the label and the classifier alone supplies it.
    s = 0 skips the classifier; the reference is the base's."""

    def __init__(self, classifier: NoisyClassifier, scale: float, base: Guidance | None = None) -> None:
        self.classifier = classifier
        self.scale = float(scale)
        self.base = base or ClassifierFree(1.0)

    def guide(self, model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition) -> Guided:
        if self.scale == 0.0:
            return self.base.guide(model, z, t, cond)
        if cond.get("label") is None:
            raise ConfigError(
                "classifier guidance needs the class labels to guide towards: pass cond={'label': ...}."
            )
        guided = self.base.guide(model, z, t, cond)
        gradient = label_log_prob_gradient(self.classifier, z, t, cond["label"])
        alpha, sigma = model.schedule.alpha_sigma(t)
        step = broadcast_to(sigma**2 / alpha, z) * self.scale
        return Guided(guided.denoised + step * gradient.to(guided.denoised.dtype), guided.reference)

    def reset(self) -> None:
        self.base.reset()
