"""The class-label condition: an embedding of the label added to the condition vector."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lightning_diffusion.components.conditions.base import Condition, NetConditions, NetworkSlots
from lightning_diffusion.config import ConfigError


class ClassLabel(Condition):
    """Key ``"label"``: long (B,) in [0, num_classes); index ``num_classes`` is the null label ∅."""

    keys = ("label",)
    gives_vector = True
    droppable = True

    def __init__(self, num_classes: int, p_drop: float = 0.1, group: str | None = "prompt") -> None:
        super().__init__(p_drop, group)
        if num_classes < 1:
            raise ConfigError(f"num_classes must be at least 1 (or null for no label), got {num_classes}.")
        self.num_classes = num_classes

    @property
    def null_label(self) -> int:
        """Index of the null condition ∅ in the label embedding."""
        return self.num_classes

    def build(self, slots: NetworkSlots) -> None:
        self.embedding = nn.Embedding(self.num_classes + 1, slots.cond_dim)

    def null(self, batch_size: int, device: torch.device) -> dict[str, Any]:
        return {"label": torch.full((batch_size,), self.null_label, dtype=torch.long, device=device)}

    def read(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        if batch.get("label") is None:
            raise ConfigError(
                f"this model is class-conditional ({self.num_classes} classes) but the data has no labels; "
                "use a labelled source, or num_classes: null for a model without labels."
            )
        return {"label": batch["label"]}

    def drop(self, cond: dict[str, Any], mask: Tensor) -> None:
        labels = cond["label"]
        cond["label"] = torch.where(mask.to(labels.device, non_blocking=True), self.null_label, labels)

    def check(self, cond: Mapping[str, Any]) -> None:
        """Refuse labels outside [0, num_classes] (num_classes is ∅); it reads two numbers back."""
        labels = cond.get("label")
        if labels is None:
            return
        labels = torch.as_tensor(labels)
        if not labels.numel():
            return
        low, high = torch.stack([labels.min(), labels.max()]).tolist()
        if low < 0 or high > self.null_label:
            raise ConfigError(
                f"labels must lie in [0, {self.num_classes - 1}] (or {self.null_label} for ∅), "
                f"got values from {low} to {high}."
            )

    def inputs(self, cond: Mapping[str, Any], batch_size: int) -> NetConditions:
        device = self.embedding.weight.device
        labels = cond.get("label")
        if labels is None:
            labels = self.null(batch_size, device)["label"]
        return NetConditions(vector=self.embedding(torch.as_tensor(labels, device=device)))
