"""The caption condition (GLIDE): a text encoder trained with the model, whose pooled embedding joins the
condition vector and whose token embeddings reach the network's cross-attention."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lightning_diffusion.components.conditions.base import Condition, NetConditions, NetworkSlots
from lightning_diffusion.config import ConfigError


class Caption(Condition):
    """Key ``"caption"``: a list of B strings; the empty caption is ∅. The network's ``context_dim`` must
    be the text encoder's ``width``."""

    keys = ("caption",)
    gives_vector = True
    gives_tokens = True
    droppable = True

    def __init__(self, text_encoder: nn.Module, p_drop: float = 0.1, group: str | None = "prompt") -> None:
        super().__init__(p_drop, group)
        if getattr(text_encoder, "width", None) is None:
            raise ConfigError(
                f"the text encoder {type(text_encoder).__name__} does not say how wide its embeddings "
                "are (a `width` attribute); use lightning_diffusion.nets.TextTransformer or add one."
            )
        self.text_encoder = text_encoder

    def build(self, slots: NetworkSlots) -> None:
        width = self.text_encoder.width
        if slots.context_dim is not None and slots.context_dim != width:
            raise ConfigError(
                f"the text encoder's tokens are {width} wide but the network's context_dim is "
                f"{slots.context_dim}; set net.init_args.context_dim to {width}."
            )
        self.projection = nn.Linear(width, slots.cond_dim)

    def null(self, batch_size: int, device: torch.device) -> dict[str, Any]:
        return {"caption": [""] * batch_size}

    def read(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        captions = batch.get("caption")
        if captions is None:
            raise ConfigError(
                "this model is text-conditional but the data has no captions; use a captioned "
                "source (Shapes, Captioned(...), ImageFolder with captions_file)."
            )
        return {"caption": list(captions)}

    def drop(self, cond: dict[str, Any], mask: Tensor) -> None:
        cond["caption"] = [
            "" if dropped else caption
            for dropped, caption in zip(mask.tolist(), cond["caption"], strict=True)
        ]

    def inputs(self, cond: Mapping[str, Any], batch_size: int) -> NetConditions:
        captions = cond.get("caption")
        if captions is None:
            captions = [""] * batch_size
        if len(captions) != batch_size:
            raise ConfigError(f"got {len(captions)} captions for a batch of {batch_size} images.")
        encoding = self.text_encoder(list(captions))
        return NetConditions(self.projection(encoding.pooled), encoding.tokens, encoding.mask)
