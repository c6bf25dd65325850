"""Classifier-free guidance with more than one condition: one scale per condition, and composed captions.

``MultiConditionCFG`` (Brooks et al. 2023, "InstructPix2Pix", Eq. 3), e.g. the unCLIP decoder's image
embedding c_I and caption c_T:
    D~ = D(∅, ∅) + s_I (D(c_I, ∅) - D(∅, ∅)) + s_T (D(c_I, c_T) - D(c_I, ∅)).
``ComposedCFG`` (Liu et al. 2022, "Compositional Visual Generation with Composable Diffusion Models",
Eq. 10 for AND, Eq. 12 for NOT), captions c_1..c_k with weights w_i (negative for NOT):
    D~ = D(∅) + sum_i w_i (D(c_i) - D(∅)).
Scores and D are affine in each other at fixed (z, t), so the papers' combinations of noise predictions
carry over to D. Both are CFG at s when given one condition with scale s (the project's convention:
s = 1 plain conditional, s = 0 unconditional), and both batch every estimate they need in one forward.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lightning_diffusion.config import ConfigError
from lightning_diffusion.guidance.base import Condition, DiffusionModel, Guidance, Guided
from lightning_diffusion.guidance.passes import denoise_each, weighted_sum
from lightning_diffusion.guidance.registry import GuidanceMethod, register_method, with_options

# The condition keys of a composed prompt (``Prompts(parts=...)`` puts them in each sample's condition):
# per sample, the captions combined and their weights (relative to the scale; negative: NOT).
PARTS_KEY = "captions"
WEIGHTS_KEY = "caption_weights"


@dataclass(frozen=True)
class MultiConditionOptions:
    """The nesting order of the conditions (each guided on top of those before it) and the fixed scales
    of all but the last, whose scale is the method's (swept) scale; an unnamed one has scale 1."""

    conditions: tuple[str, ...] = ("image_embedding", "caption")
    scales: Mapping[str, float] = field(default_factory=dict)


class MultiConditionCFG(Guidance):
    """InstructPix2Pix's nested CFG (Eq. 3) over ``conditions`` c_1..c_n, generalised to n conditions:
    with D_j the estimate given c_1..c_j and ∅ for the rest (partial nulls from ``model.null_condition``),

        D~ = D_0 + sum_j s_j (D_j - D_{j-1}) = (1 - s_1) D_0 + sum_{0<j<n} (s_j - s_{j+1}) D_j + s_n D_n.

    s_n is ``scale`` (the caption's s_T by default), s_j for j < n come from ``scales`` (default 1: plain
    conditional on them). Only the D_j with a non-zero coefficient are computed, in one batched forward:
    s_I = 1 costs two passes (CFG on the caption given the embedding), equal scales are CFG at s (two
    passes), all scales 1 one pass. Conditions the model does not drop (e.g. an upsampler's low-res image)
    and droppable ones not listed keep their value in every pass. The reference is D_n."""

    def __init__(
        self,
        scale: float,
        *,
        conditions: Sequence[str] = MultiConditionOptions.conditions,
        scales: Mapping[str, float] | None = None,
    ) -> None:
        if isinstance(conditions, str) or not conditions or len(set(conditions)) != len(conditions):
            raise ConfigError(
                f"multi-condition CFG needs a list of distinct condition keys to nest, got {conditions!r} "
                "(e.g. [image_embedding, caption])."
            )
        conditions, scales = tuple(conditions), dict(scales or {})
        fixed = [key for key in scales if key not in conditions[:-1]]
        if fixed:
            raise ConfigError(
                f"scales names {fixed}, but only the conditions before the last ({list(conditions[:-1])}) "
                f"take a fixed scale; the last one, {conditions[-1]!r}, is guided at the method's scale."
            )
        self.scale = float(scale)
        self.conditions = conditions
        self.scales = (*(float(scales.get(key, 1.0)) for key in conditions[:-1]), self.scale)

    def coefficients(self) -> list[float]:
        """a_j of D_j, j = 0..n: 1 - s_1, s_j - s_{j+1}, s_n (they sum to 1)."""
        s = self.scales
        return [1.0 - s[0], *(s[j] - s[j + 1] for j in range(len(s) - 1)), s[-1]]

    def check_model(self, model: DiffusionModel) -> None:
        """Refuse condition keys the model has no null for (it cannot drop them), listing those it has."""
        self._check_droppable(model.null_condition(1, torch.device("cpu")))

    def _check_droppable(self, null: Mapping[str, Any]) -> None:
        unknown = [key for key in self.conditions if key not in null]
        if unknown:
            raise ConfigError(
                f"multi-condition CFG nests {unknown}, but the model drops only {sorted(null) or 'nothing'} "
                "(its null_condition); name conditions it was trained to drop."
            )

    def guide(self, model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition) -> Guided:
        null = model.null_condition(z.shape[0], z.device)
        self._check_droppable(null)
        given = {**null, **cond}  # a key the condition leaves out means ∅: batch it as such
        levels = [
            {**given, **{key: null[key] for key in self.conditions[j:]}}
            for j in range(len(self.conditions) + 1)
        ]
        used = [(a, level) for a, level in zip(self.coefficients(), levels, strict=True) if a != 0.0]
        estimates = denoise_each(model, z, t, [level for _, level in used])
        guided = weighted_sum(estimates, [a for a, _ in used])
        return Guided(guided, estimates[-1] if used[-1][1] is levels[-1] else None)


class ComposedCFG(Guidance):
    """Composable diffusion (Liu et al. 2022, Eq. 10 AND, Eq. 12 NOT) on composed prompts: each sample's
    condition holds under ``"captions"`` the k captions it composes and under ``"caption_weights"`` their
    weights w_i (negative: NOT), as ``Prompts(parts=..., part_weights=...)`` draws them. At scale s

        D~ = D(∅) + s sum_i w_i (D(c_i) - D(∅)) = (1 - s sum_i w_i) D(∅) + sum_i s w_i D(c_i),

    so the paper's weights are s w_i: one caption of weight 1 is CFG at s, and AND of two captions at s
    guides towards each at s. D(c_i) conditions on caption c_i alone (every other droppable condition at
    ∅); conditions the model does not drop keep their value. All estimates come from one forward, those
    whose coefficient is 0 for every sample skipped (D(∅) for one caption at s = 1). The reference, and
    the estimate where it does not guide (outside a guidance interval), is the composition at s = 1: the
    primary caption, which other methods follow, is not what a composed prompt asks for."""

    def __init__(self, scale: float) -> None:
        self.scale = float(scale)

    def guide(self, model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition) -> Guided:
        return self._compose(model, z, t, cond, self.scale)

    def unguided(self, model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition) -> Guided:
        return self._compose(model, z, t, cond, 1.0)

    @staticmethod
    def _compose(model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition, scale: float) -> Guided:
        """The composition at ``scale``, with the one at s = 1 as reference (None if it was not computed)."""
        null = model.null_condition(z.shape[0], z.device)
        if "caption" not in null:
            raise ConfigError(
                "composed captions need a text-conditional denoiser (one that drops captions to ∅); this one "
                f"drops {sorted(null) or 'nothing'}."
            )
        parts, weights = _composed_prompts(cond, z.shape[0])
        base = {key: value for key, value in cond.items() if key not in (PARTS_KEY, WEIGHTS_KEY)}
        conds = [{**base, **null}] + [
            {**base, **null, "caption": [captions[i] for captions in parts]} for i in range(weights.shape[1])
        ]
        guided = torch.cat([1.0 - scale * weights.sum(1, keepdim=True), scale * weights], dim=1)
        reference = torch.cat([1.0 - weights.sum(1, keepdim=True), weights], dim=1)
        used = (guided != 0).any(dim=0)
        estimates = denoise_each(model, z, t, [conds[index] for index in used.nonzero().flatten().tolist()])
        denoised = weighted_sum(estimates, list(guided[:, used].unbind(1)))
        if (reference[:, ~used] != 0).any():  # the s = 1 composition needs an estimate that was skipped
            return Guided(denoised, None)
        return Guided(denoised, weighted_sum(estimates, list(reference[:, used].unbind(1))))


def _composed_prompts(cond: Condition, batch_size: int) -> tuple[list[Sequence[str]], Tensor]:
    """The per-sample captions and their weights (B, k) of a composed prompt, checked for shape."""
    if PARTS_KEY not in cond or WEIGHTS_KEY not in cond:
        raise ConfigError(
            f"composed CFG needs composed prompts: each sample's condition must hold {PARTS_KEY!r} (its "
            f"captions) and {WEIGHTS_KEY!r} (their weights), as Prompts(parts=..., part_weights=...) draws "
            f"them; got the keys {sorted(cond)}."
        )
    parts, weights = (
        list(cond[PARTS_KEY]),
        torch.tensor([list(w) for w in cond[WEIGHTS_KEY]], dtype=torch.float64),
    )
    counts = {len(captions) for captions in parts}
    if len(parts) != batch_size or weights.shape[0] != batch_size or counts != {weights.shape[1]}:
        raise ConfigError(
            f"a composed prompt batch of {batch_size} needs {batch_size} caption tuples of one length k with "
            f"k weights each; got {len(parts)} tuples of lengths {sorted(counts)} and weights of shape "
            f"{tuple(weights.shape)}."
        )
    return parts, weights


register_method(
    GuidanceMethod("multi_cfg", build=with_options(MultiConditionCFG), options=MultiConditionOptions)
)
register_method(
    GuidanceMethod(
        "composed_cfg", build=lambda inputs: ComposedCFG(inputs.scale), prompts=("caption",), composes=True
    )
)
