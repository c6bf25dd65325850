"""The unCLIP decoder (DALL-E 2, Ramesh et al. 2022, Sec. 2.1): a denoiser conditioned on the CLIP
image embedding C_I(y) of the image it learns to generate, and optionally on the caption (GLIDE's text
conditioning), so that it inverts the contrastive encoder's image tower.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_diffusion.components.base import check_probabilities
from lightning_diffusion.components.denoiser import Denoiser, NetConditions
from lightning_diffusion.components.frozen_encoder import FrozenEncoderUser, load_frozen_encoder
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import CosineSchedule
from lightning_diffusion.registry import register


@register("denoiser")
class UnclipDecoder(FrozenEncoderUser, Denoiser):
    """D(z_t, t, C_I, caption) for the frozen contrastive encoder at ``encoder``.

    As in DALL-E 2 (Sec. 2.1), the image embedding is projected into the network's condition vector
    (added to the time embedding) and into ``embedding_tokens`` extra context tokens that every
    attention layer attends to, next to the caption's tokens when there is a ``text_encoder``. Training
    drops the embedding to ∅ with probability ``p_drop_embedding`` (the paper: 10 %) and, independently,
    the caption with ``p_drop_text`` (50 %), so classifier-free guidance works on either.

    Condition keys: ``"image_embedding"`` (B, embed_dim), unit norm (all-zero rows mean ∅, replaced by
    a learned null embedding), and ``"caption"``; a missing key means ∅. Training embeds each batch's
    clean images with the encoder.
    """

    def __init__(
        self,
        net: nn.Module,
        encoder: str | dict,  # a path, or (in its own checkpoints) the carried encoder: see frozen_encoder
        image_shape: Sequence[int] = (1, 8, 8),
        text_encoder: nn.Module | None = None,
        embedding_tokens: int = 4,
        p_drop_embedding: float = 0.1,
        p_drop_text: float = 0.5,
        prediction: str = "v",
        loss_weighting: str | None = None,
        schedule: CosineSchedule | None = None,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 200,
    ) -> None:
        check_probabilities(p_drop_embedding=p_drop_embedding, p_drop_text=p_drop_text)
        if embedding_tokens < 1:
            raise ConfigError(f"embedding_tokens must be at least 1, got {embedding_tokens}.")
        contrastive = load_frozen_encoder(encoder, "the unCLIP decoder")
        if tuple(contrastive.image_shape) != tuple(image_shape):
            raise ConfigError(
                f"the contrastive encoder {encoder!r} embeds images of shape "
                f"{tuple(contrastive.image_shape)} but the decoder makes {tuple(image_shape)}; use an "
                "encoder trained on the decoder's data."
            )
        super().__init__(
            net,
            image_shape,
            None,
            text_encoder,
            p_drop_text,
            prediction,
            loss_weighting,
            schedule,
            lr,
            weight_decay,
            warmup_steps,
        )
        self.encoder = contrastive
        self.embedding_tokens = embedding_tokens
        self.p_drop_embedding = p_drop_embedding
        self.null_embedding = nn.Parameter(torch.zeros(contrastive.embed_dim))
        self.embedding_to_vector = nn.Linear(contrastive.embed_dim, net.cond_dim)
        self.embedding_to_tokens = nn.Linear(contrastive.embed_dim, embedding_tokens * net.context_dim)

    @property
    def conditions_vector(self) -> bool:
        """Always: the image embedding feeds the condition vector."""
        return True

    @property
    def uses_context(self) -> bool:
        """Always: the image embedding becomes context tokens."""
        return True

    def _condition_names(self) -> str:
        return "image embedding" + (", caption" if self.text_encoder is not None else "")

    def null_condition(self, batch_size: int, device: torch.device) -> dict[str, Any]:
        """∅ for the embedding (zero rows) and for the caption (the empty caption, if text-conditional)."""
        null = super().null_condition(batch_size, device)
        null["image_embedding"] = torch.zeros(batch_size, self.embed_dim, device=device)
        return null

    def _embeddings(self, cond: Mapping[str, Any], batch_size: int) -> Tensor:
        """The (B, embed_dim) image embeddings of ``cond`` with ∅ rows (all zero, or a missing key)
        replaced by the learned null embedding."""
        embeddings = cond.get("image_embedding")
        if embeddings is None:
            return self.null_embedding.expand(batch_size, -1)
        if tuple(embeddings.shape) != (batch_size, self.embed_dim):
            raise ConfigError(
                f"the unCLIP decoder takes image embeddings of shape ({batch_size}, {self.embed_dim}) (its "
                f"contrastive encoder's embed_dim), got {tuple(embeddings.shape)}; use a prior (or encoder) "
                "that embeds with the decoder's contrastive encoder."
            )
        embeddings = embeddings.to(self.null_embedding.device, self.null_embedding.dtype)
        is_null = (embeddings == 0).all(dim=1, keepdim=True)
        return torch.where(is_null, self.null_embedding, embeddings)

    def condition_inputs(self, cond: Mapping[str, Any] | None, batch_size: int) -> NetConditions:
        """The caption's inputs (if any) plus the projected embedding: added to the condition vector and
        put before the caption's tokens as ``embedding_tokens`` context tokens."""
        cond = cond or {}
        inputs = super().condition_inputs(cond, batch_size)
        embeddings = self._embeddings(cond, batch_size)
        vector = self.embedding_to_vector(embeddings)
        if inputs.vector is not None:
            vector = vector + inputs.vector
        tokens = self.embedding_to_tokens(embeddings).view(batch_size, self.embedding_tokens, -1)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        if inputs.context is not None:
            tokens = torch.cat([tokens, inputs.context.to(tokens.dtype)], dim=1)
            mask = torch.cat([mask, inputs.context_mask], dim=1)
        return NetConditions(vector, tokens, mask)

    def batch_condition(self, batch: Mapping[str, Any], drop: Tensor | None = None) -> dict[str, Any]:
        """The caption (if text-conditional) and the clean image embedding of the batch; samples where
        ``drop`` is True get ∅ for both."""
        cond = super().batch_condition(batch, drop)
        embeddings = self.clean_image_embedding(batch["image"])
        cond["image_embedding"] = embeddings if drop is None else embeddings.masked_fill(drop[:, None], 0.0)
        return cond

    def training_condition(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The caption dropped with probability p_drop_text, the embedding, independently, with
        p_drop_embedding (DALL-E 2, Sec. 2.1)."""
        images = batch["image"]
        drop_text = torch.rand(images.shape[0], device=images.device) < self.p_uncond
        cond = super().batch_condition(batch, drop_text)
        drop_embedding = torch.rand(images.shape[0], device=images.device) < self.p_drop_embedding
        cond["image_embedding"] = self.clean_image_embedding(images).masked_fill(drop_embedding[:, None], 0.0)
        return cond
