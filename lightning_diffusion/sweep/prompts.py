"""What each sample of a sweep is conditioned on, drawn from its own generator (before its noise).

A sweep prompts with one registered prompt kind (``prompt_kinds``): sample i draws a value uniformly from
the kind's pool (class labels: every class; captions: the data's, with their labels and attributes, or
captions the user gives). Composed prompts (composable diffusion: "A AND B", "A NOT B") give each caption
the k captions it combines and one weight per part (negative: NOT); a drawn sample's condition then also
holds them under "captions" and "caption_weights" (what ``ComposedCFG`` reads), while "caption" stays the
primary caption that other methods in the same sweep follow and CLIP scores compare with.
``parse_composed`` reads composed prompts from texts ("A AND B NOT C"), ``composed_shape_prompts`` builds
them from Shapes scenes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lightning_diffusion.config import ConfigError
from lightning_diffusion.data.shapes import COLOURS, SHAPES, _caption
from lightning_diffusion.guidance.multi_condition import PARTS_KEY, WEIGHTS_KEY
from lightning_diffusion.sampling import draw_labels
from lightning_diffusion.sweep.prompt_kinds import PromptKind, PromptSource, choose_kind, get_prompt_kind

if TYPE_CHECKING:
    from lightning_diffusion.sweep.plans import RowPlan

OPERATOR_WEIGHTS = {"AND": 1.0, "NOT": -1.0}  # composable diffusion's operators in a composed text
OPERATOR = re.compile(r"\s+(AND|NOT)\s+")
COMPOSITION_WEIGHTS = {"and": (1.0, 1.0), "not": (1.0, -1.0)}  # composed Shapes prompts: A AND B, A NOT B


@dataclass
class Drawn:
    """A batch's condition and the targets metrics compare samples with (None where unknown)."""

    cond: dict[str, Any]
    labels: Tensor | None
    attributes: Tensor | None
    captions: list[str] | None


@dataclass(init=False)
class Prompts:
    """The pool of values of one prompt kind (``kind``, a registered name) that samples draw from, with
    each value's class label and attributes where known, and ``parts``, the captions each composed prompt
    combines, weighted by ``part_weights``. ``Prompts(num_classes=n)`` and ``Prompts(captions=[...])``
    are the pools of the two built-in kinds: every class label, and the given captions."""

    kind: str
    values: Sequence[Any]
    labels: Tensor | None
    attributes: Tensor | None
    parts: list[tuple[str, ...]] | None
    part_weights: tuple[float, ...] | None

    def __init__(
        self,
        kind: str | None = None,
        values: Sequence[Any] | None = None,
        *,
        num_classes: int | None = None,
        captions: Sequence[str] | None = None,
        labels: Tensor | None = None,
        attributes: Tensor | None = None,
        parts: Sequence[Sequence[str]] | None = None,
        part_weights: Sequence[float] | None = None,
    ) -> None:
        classes = None if num_classes is None else range(num_classes)
        pools = [(kind, values), ("label", classes), ("caption", captions)]
        given = [(name, pool) for name, pool in pools if pool is not None]
        if len(given) != 1 or given[0][0] is None:
            raise ConfigError(
                "a sweep needs one pool of values to condition on: class labels (num_classes), captions, "
                "or Prompts(kind, values) of a registered prompt kind."
            )
        self.kind, self.values = given[0]
        self.labels, self.attributes, self.parts, self.part_weights = labels, attributes, parts, part_weights
        self._check()

    @property
    def prompt_kind(self) -> PromptKind:
        """The registered kind of the values."""
        return get_prompt_kind(self.kind)

    def _check(self) -> None:
        """A non-empty pool; one label, attribute row and composed prompt per value; parts on captions."""
        human = self.prompt_kind.human
        if self.parts is not None and self.kind != "caption":
            raise ConfigError("composed prompts (parts) need the primary captions they belong to.")
        if len(self.values) == 0:
            raise ConfigError(f"the list of {human} is empty; give at least one (or use the data's).")
        for name, values in (("labels", self.labels), ("attributes", self.attributes), ("parts", self.parts)):
            if values is not None and len(values) != len(self.values):
                raise ConfigError(f"got {len(values)} {name} for {len(self.values)} {human}.")
        self._check_parts()

    def _check_parts(self) -> None:
        """Every composed prompt has the same number k >= 1 of parts, and there are k weights (default 1)."""
        if self.parts is None:
            if self.part_weights is not None:
                raise ConfigError("part_weights weigh the parts of composed prompts; give the parts too.")
            return
        self.parts = [tuple(part) for part in self.parts]
        counts = sorted({len(part) for part in self.parts})
        if len(counts) != 1 or counts[0] < 1:
            raise ConfigError(
                f"every composed prompt needs the same number (at least 1) of parts, got counts {counts}."
            )
        weights = (1.0,) * counts[0] if self.part_weights is None else tuple(map(float, self.part_weights))
        if len(weights) != counts[0]:
            raise ConfigError(f"got {len(weights)} part_weights for composed prompts of {counts[0]} parts.")
        self.part_weights = weights

    @property
    def captions(self) -> list[str] | None:
        """The caption pool (None for another kind)."""
        return list(self.values) if self.kind == "caption" else None

    @property
    def composed(self) -> bool:
        """Whether each caption comes with the parts of a composed prompt."""
        return self.parts is not None

    def draw(self, generators: Sequence[torch.Generator]) -> Drawn:
        """One condition per generator: sample i's index into the pool comes from generator i; the drawn
        values join the condition under the kind's key, their labels (if any) under "label"."""
        device = generators[0].device
        index = draw_labels(generators, len(self.values)).cpu()
        picked = index.tolist()
        cond: dict[str, Any] = {self.kind: self.prompt_kind.collate([self.values[i] for i in picked], device)}
        if self.labels is not None:
            cond["label"] = self.labels[index].to(device)
        if self.parts is not None:
            cond[PARTS_KEY] = [self.parts[i] for i in picked]
            cond[WEIGHTS_KEY] = [self.part_weights] * len(picked)
        attributes = None if self.attributes is None else self.attributes[index].to(device)
        return Drawn(cond, cond.get("label"), attributes, cond.get("caption"))


def data_prompts(
    models: Any, datamodule: Any, split: str, plans: Sequence[RowPlan], asked: str | None = None
) -> Prompts:
    """The prompts of a sweep: the kind ``choose_kind`` picks from the denoiser's condition parts, the kinds
    the ``plans``' rows follow and the kind ``asked`` for, its pool read from ``datamodule``'s ``split``."""
    kind = choose_kind(models.denoiser, [plan.prompts for plan in plans], asked)
    pool = kind.read(PromptSource(datamodule, split, models))
    return Prompts(kind.name, pool.values, labels=pool.labels, attributes=pool.attributes)


def composed_shape_prompts(attributes: Tensor, mode: str, weights: Sequence[float] | None = None) -> Prompts:
    """Composed prompts from the two-object scenes among Shapes ``attributes`` (N, 6): object A's and
    object B's one-object captions ("a small red circle at the top", "a small blue square at the bottom";
    captions do not state B's size, so B's part names A's). ``mode`` "and" asks for both (weights 1, 1):
    the primary caption is the scene's own ("... above a blue square") and the attributes to read back are
    the scene's; "not" asks for A without B (weights 1, -1): the primary caption is A's and the attributes
    A's with no second object. ``weights`` replaces the mode's. Labels are A's "colour shape" class."""
    if mode not in COMPOSITION_WEIGHTS:
        raise ConfigError(
            f"unknown composition mode {mode!r}; choose one of {', '.join(COMPOSITION_WEIGHTS)}."
        )
    rows = [row for row in attributes.tolist() if row[4] != len(SHAPES)]
    if not rows:
        raise ConfigError("composed Shapes prompts need two-object scenes; set two_object_fraction above 0.")
    nothing = [len(SHAPES), len(COLOURS)]  # the "none" index of B's shape and colour
    wanted, parts = [], []
    for row in rows:
        shape, colour, size, position, second_shape, second_colour = row
        alone = [shape, colour, size, position, *nothing]
        other = [second_shape, second_colour, size, position ^ 1, *nothing]  # B lies in the opposite half
        parts.append((_caption(alone), _caption(other)))
        wanted.append(row if mode == "and" else alone)
    captions = [_caption(row) for row in wanted]
    targets = torch.tensor(wanted, dtype=torch.long)
    return Prompts(
        captions=captions,
        labels=targets[:, 1] * len(SHAPES) + targets[:, 0],
        attributes=targets,
        parts=parts,
        part_weights=COMPOSITION_WEIGHTS[mode] if weights is None else tuple(weights),
    )


def parse_composed(texts: Sequence[str]) -> Prompts:
    """Prompts from composed texts such as "a red circle at the top AND a blue square at the bottom" or
    "... NOT ...": the parts between the upper-case operators, weighted 1 (the first and each AND part) or
    -1 (each NOT part); the primary caption, which other methods follow, is the first part. All texts must
    use the same operators in the same order (one weight per part for the whole sweep)."""
    parts, layouts = [], set()
    for text in texts:
        pieces = OPERATOR.split(text.strip())
        parts.append(tuple(pieces[0::2]))
        layouts.add(tuple(pieces[1::2]))
    if len(layouts) > 1:
        raise ConfigError(
            f"composed texts must all use the same operators in the same order, got {sorted(layouts)}; "
            "sweep each kind of composition separately."
        )
    operators = layouts.pop() if layouts else ()
    return Prompts(
        captions=[part[0] for part in parts],
        parts=parts,
        part_weights=(1.0, *(OPERATOR_WEIGHTS[operator] for operator in operators)),
    )
