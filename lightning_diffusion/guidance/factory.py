"""Build a registered guidance method and wrap it in the shared modifiers: the one place they are wrapped."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning_diffusion.guidance.base import Guidance
from lightning_diffusion.guidance.modifiers import CFGRescale, DynamicThresholding, GuidanceInterval
from lightning_diffusion.guidance.registry import GuidanceInputs, GuidanceMethod, get_method
from lightning_diffusion.guidance.schedules import scheduled

ROLE_ALIASES = {"guide_model": "guide"}  # keyword spellings of roles from before models by role


def build_guidance(
    method: str | GuidanceMethod,
    scale: float,
    *,
    models: Mapping[str, Any] | None = None,
    options: Any = None,
    interval: tuple[float, float] | None = None,
    rescale: float | None = None,
    threshold: float | None = None,
    schedule: Any = None,
    **role_models: Any,
) -> Guidance:
    """The guidance ``method`` (a registered name or a ``GuidanceMethod``) at ``scale``, wrapped in the
    modifiers asked for; a modifier the method does not use, or a model it needs and lacks, is refused.

    The models a method needs come by role name, in ``models`` or as keywords (``classifier=``,
    ``guide=``, ``contrastive=``; ``guide_model=`` too); models of roles the method does not need are
    ignored, so a caller may pass every model it has.

    ``options`` is the method's options dataclass instance or a mapping of its fields. ``schedule`` (a
    mapping ``{name, ...}``, see ``schedules.SCHEDULES``) varies the scale over noise levels, innermost;
    ``rescale`` is CFG rescale's phi, ``threshold`` dynamic thresholding's percentile, ``interval`` the
    noise levels (sigma_min, sigma_max] where guidance acts. Rescale acts on
    the guided D, thresholding on the result, and the interval outermost, so steps outside it cost one
    plain conditional pass."""
    method = get_method(method) if isinstance(method, str) else method
    modifiers = {"interval": interval, "rescale": rescale, "threshold": threshold, "schedule": schedule}
    method.check_modifiers(modifiers)
    given = {**(models or {}), **{ROLE_ALIASES.get(role, role): model for role, model in role_models.items()}}
    method.check_models(given)
    if options is None or isinstance(options, dict):
        options = method.parse_options(options)
    inputs = GuidanceInputs(scale, {role: given[role] for role in method.needs}, options)
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
