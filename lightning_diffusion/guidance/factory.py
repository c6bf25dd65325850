"""Build a registered guidance method and wrap it in the shared modifiers: the one place they are wrapped."""

from __future__ import annotations

from typing import Any

from lightning_diffusion.guidance.base import Guidance
from lightning_diffusion.guidance.modifiers import CFGRescale, DynamicThresholding, GuidanceInterval
from lightning_diffusion.guidance.registry import GuidanceInputs, GuidanceMethod, get_method
from lightning_diffusion.guidance.schedules import scheduled


def build_guidance(
    method: str | GuidanceMethod,
    scale: float,
    *,
    classifier: Any = None,
    guide_model: Any = None,
    contrastive: Any = None,
    options: Any = None,
    interval: tuple[float, float] | None = None,
    rescale: float | None = None,
    threshold: float | None = None,
    schedule: Any = None,
) -> Guidance:
    """The guidance ``method`` (a registered name or a ``GuidanceMethod``) at ``scale``, wrapped in the
    modifiers asked for; a modifier the method does not use, or a model it needs and lacks, is refused.

    ``options`` is the method's options dataclass instance or a mapping of its fields. ``schedule`` (a
    mapping ``{name, ...}``, see ``schedules.SCHEDULES``) varies the scale over noise levels, innermost;
    ``rescale`` is CFG rescale's phi, ``threshold`` dynamic thresholding's percentile, ``interval`` the
    noise levels (sigma_min, sigma_max] where guidance acts. Rescale acts on
    the guided D, thresholding on the result, and the interval outermost, so steps outside it cost one
    plain conditional pass."""
    method = get_method(method) if isinstance(method, str) else method
    modifiers = {"interval": interval, "rescale": rescale, "threshold": threshold, "schedule": schedule}
    method.check_modifiers(modifiers)
    models = {"classifier": classifier, "guide": guide_model, "contrastive": contrastive}
    method.check_models(models)
    if options is None or isinstance(options, dict):
        options = method.parse_options(options)
    inputs = GuidanceInputs(scale, **{role: models[role] for role in method.needs}, options=options)
    guidance = method.build(inputs)
    if schedule is not None:
        guidance = scheduled(guidance, schedule)
    if rescale is not None:
        guidance = CFGRescale(guidance, rescale)
    if threshold is not None:
        guidance = DynamicThresholding(guidance, threshold)
    if interval is not None:
        guidance = GuidanceInterval(guidance, *interval)
    return guidance
