"""The image-embedding condition of the unCLIP decoder (DALL-E 2, Ramesh et al. 2022, Sec. 2.1): the
frozen contrastive encoder's C_I(y), projected into the condition vector (added to the time embedding)
and into ``tokens`` extra context tokens that every attention layer attends to."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lightning_diffusion.components.conditions.base import Condition, NetConditions, NetworkSlots
from lightning_diffusion.components.contrastive_encoder import ContrastiveEncoder
from lightning_diffusion.components.frozen_encoder import FrozenEncoderUser, load_frozen_encoder
from lightning_diffusion.config import ConfigError


class ImageEmbedding(FrozenEncoderUser, Condition):
    """Key ``"image_embedding"``: (B, embed_dim), unit norm; all-zero rows are ∅, replaced by a learned
    null embedding. A batch is read by embedding its clean images with ``encoder`` (a contrastive
    encoder, or the path of its checkpoint), which stays frozen."""

    keys = ("image_embedding",)
    gives_vector = True
    gives_tokens = True
    droppable = True

    def __init__(
        self,
        encoder: str | dict | ContrastiveEncoder,  # a path, the record a checkpoint carries, or the encoder
        tokens: int = 4,
        p_drop: float = 0.1,
        group: str | None = None,
    ) -> None:
        super().__init__(p_drop, group)
        if tokens < 1:
            raise ConfigError(f"embedding_tokens must be at least 1, got {tokens}.")
        if not isinstance(encoder, ContrastiveEncoder):
            encoder = load_frozen_encoder(encoder, "the image-embedding condition")
        self.encoder = encoder.requires_grad_(False).eval()
        self.tokens = tokens
        self.null_embedding = nn.Parameter(torch.zeros(encoder.embed_dim))

    def build(self, slots: NetworkSlots) -> None:
        if tuple(self.encoder.image_shape) != slots.image_shape:
            raise ConfigError(
                f"the contrastive encoder embeds images of shape {tuple(self.encoder.image_shape)} but the "
                f"model makes {slots.image_shape}; use an encoder trained on the model's data."
            )
        self.to_vector = nn.Linear(self.embed_dim, slots.cond_dim)
        self.to_tokens = nn.Linear(self.embed_dim, self.tokens * slots.context_dim)

    def null(self, batch_size: int, device: torch.device) -> dict[str, Any]:
        return {"image_embedding": torch.zeros(batch_size, self.embed_dim, device=device)}

    def read(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        return {"image_embedding": self.clean_image_embedding(batch["image"])}

    def drop(self, cond: dict[str, Any], mask: Tensor) -> None:
        embeddings = cond["image_embedding"]
        cond["image_embedding"] = embeddings.masked_fill(
            mask.to(embeddings.device, non_blocking=True)[:, None], 0.0
        )

    def _embeddings(self, cond: Mapping[str, Any], batch_size: int) -> Tensor:
        """The (B, embed_dim) embeddings of ``cond`` with ∅ rows (all zero, or a missing key) replaced by
        the learned null embedding."""
        embeddings = cond.get("image_embedding")
        if embeddings is None:
            return self.null_embedding.expand(batch_size, -1)
        if tuple(embeddings.shape) != (batch_size, self.embed_dim):
            raise ConfigError(
                f"the model takes image embeddings of shape ({batch_size}, {self.embed_dim}) (its "
                f"contrastive encoder's embed_dim), got {tuple(embeddings.shape)}; use a prior (or encoder) "
                "that embeds with the model's contrastive encoder."
            )
        embeddings = embeddings.to(self.null_embedding.device, self.null_embedding.dtype)
        is_null = (embeddings == 0).all(dim=1, keepdim=True)
        return torch.where(is_null, self.null_embedding, embeddings)

    def inputs(self, cond: Mapping[str, Any], batch_size: int) -> NetConditions:
        embeddings = self._embeddings(cond, batch_size)
        tokens = self.to_tokens(embeddings).view(batch_size, self.tokens, -1)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return NetConditions(self.to_vector(embeddings), tokens, mask)
