"""What each sample of a sweep is conditioned on, drawn from its own generator (before its noise).

Class sweeps draw a uniform label per sample. Text sweeps draw a caption per sample from a list
(the data's captions, with their labels and attributes, or captions the user gives).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lightning_diffusion.config import ConfigError
from lightning_diffusion.sampling import draw_labels


@dataclass
class Drawn:
    """A batch's condition and the targets metrics compare samples with (None where unknown)."""

    cond: dict[str, Any]
    labels: Tensor | None
    attributes: Tensor | None
    captions: list[str] | None


@dataclass
class Prompts:
    """Uniform labels over ``num_classes``, or captions (optionally with per-caption labels/attributes)."""

    num_classes: int | None = None
    captions: list[str] | None = None
    labels: Tensor | None = None
    attributes: Tensor | None = None

    def __post_init__(self) -> None:
        if self.captions is None:
            if self.num_classes is None:
                raise ConfigError("a sweep needs class labels (num_classes) or captions to condition on.")
            return
        if len(self.captions) == 0:
            raise ConfigError("the list of captions is empty; give at least one caption (or use the data's).")
        for name, values in (("labels", self.labels), ("attributes", self.attributes)):
            if values is not None and len(values) != len(self.captions):
                raise ConfigError(f"got {len(values)} {name} for {len(self.captions)} captions.")

    @property
    def text(self) -> bool:
        """Whether samples are conditioned on captions."""
        return self.captions is not None

    def draw(self, generators: Sequence[torch.Generator]) -> Drawn:
        """One condition per generator: sample i's label or caption index comes from generator i."""
        device = generators[0].device
        if self.captions is None:
            labels = draw_labels(generators, self.num_classes)
            return Drawn({"label": labels}, labels, None, None)
        index = draw_labels(generators, len(self.captions)).cpu()
        captions = [self.captions[i] for i in index.tolist()]
        labels = None if self.labels is None else self.labels[index].to(device)
        attributes = None if self.attributes is None else self.attributes[index].to(device)
        cond: dict[str, Any] = {"caption": captions}
        if labels is not None:
            cond["label"] = labels
        return Drawn(cond, labels, attributes, captions)
