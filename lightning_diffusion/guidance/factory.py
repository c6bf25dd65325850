"""Build a guidance method and its modifiers from names and numbers (what configs and the CLI hold)."""

from __future__ import annotations

from lightning_diffusion.config import ConfigError
from lightning_diffusion.guidance.autoguidance import AutoGuidance, Denoising
from lightning_diffusion.guidance.base import Guidance
from lightning_diffusion.guidance.classifier import ClassifierGuidance, NoisyClassifier
from lightning_diffusion.guidance.classifier_free import ClassifierFree
from lightning_diffusion.guidance.clip import ClipGuidance, ContrastiveModel
from lightning_diffusion.guidance.modifiers import CFGRescale, DynamicThresholding, GuidanceInterval

BASE_METHODS = ("cfg", "classifier", "autoguidance", "clip")
INTERVAL_SUFFIX = "_interval"
METHODS = BASE_METHODS + tuple(method + INTERVAL_SUFFIX for method in BASE_METHODS)


def uses_interval(method: str) -> bool:
    """Whether ``method`` is a base method restricted to a noise-level interval (e.g. ``cfg_interval``)."""
    return method.endswith(INTERVAL_SUFFIX)


def _method(
    method: str,
    scale: float,
    classifier: NoisyClassifier | None,
    guide_model: Denoising | None,
    contrastive: ContrastiveModel | None,
    interval: tuple[float, float] | None,
) -> Guidance:
    if method not in METHODS:
        raise ConfigError(f"unknown guidance method {method!r}; choose one of {', '.join(METHODS)}.")
    if uses_interval(method) and interval is None:
        raise ConfigError(
            f"{method} needs the noise-level interval (sigma_min, sigma_max] in which to guide, "
            "e.g. --interval '[0.28,2.9]' (EDM noise levels sigma/alpha)."
        )
    method = method.removesuffix(INTERVAL_SUFFIX)
    if method == "classifier":
        if classifier is None:
            raise ConfigError(
                "classifier guidance needs a noisy classifier: pass --classifier PATH "
                "(a noisy_classifier checkpoint)."
            )
        return ClassifierGuidance(classifier, scale)
    if method == "clip":
        if contrastive is None:
            raise ConfigError(
                "CLIP guidance needs a noise-aware contrastive encoder: pass --contrastive PATH "
                "(a contrastive_encoder checkpoint)."
            )
        return ClipGuidance(contrastive, scale)
    if method == "autoguidance":
        if guide_model is None:
            raise ConfigError(
                "autoguidance needs a guide model: pass --guide PATH (a smaller or less-trained denoiser "
                "checkpoint)."
            )
        return AutoGuidance(guide_model, scale)
    return ClassifierFree(scale)


def build_guidance(
    method: str,
    scale: float,
    *,
    classifier: NoisyClassifier | None = None,
    guide_model: Denoising | None = None,
    contrastive: ContrastiveModel | None = None,
    interval: tuple[float, float] | None = None,
    rescale: float | None = None,
    threshold: float | None = None,
) -> Guidance:
    """The guidance ``method`` at ``scale`` (one of ``METHODS``), wrapped in the modifiers asked for.

    ``rescale`` is CFG rescale's phi, ``threshold`` dynamic thresholding's percentile, ``interval`` the
    noise levels (sigma_min, sigma_max] where guidance acts (any method; required by the ``*_interval`` ones).
    Rescale acts on the guided D, thresholding on the result, and the interval outermost, so steps outside
    it cost one plain conditional pass."""
    guidance = _method(method, scale, classifier, guide_model, contrastive, interval)
    if rescale is not None:
        guidance = CFGRescale(guidance, rescale)
    if threshold is not None:
        guidance = DynamicThresholding(guidance, threshold)
    if interval is not None:
        guidance = GuidanceInterval(guidance, *interval)
    return guidance
