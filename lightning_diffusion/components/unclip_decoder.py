"""The unCLIP decoder (DALL-E 2, Ramesh et al. 2022, Sec. 2.1): a denoiser conditioned on the CLIP
image embedding C_I(y) of the image it learns to generate, and optionally on the caption (GLIDE's text
conditioning), so that it inverts the contrastive encoder's image tower.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from lightning_diffusion.components.conditions import Condition, ImageEmbedding
from lightning_diffusion.components.contrastive_encoder import ContrastiveEncoder
from lightning_diffusion.components.denoiser import Denoiser
from lightning_diffusion.components.frozen_encoder import FrozenEncoderUser, load_frozen_encoder
from lightning_diffusion.registry import register


@register("denoiser")
class UnclipDecoder(FrozenEncoderUser, Denoiser):
    """D(z_t, t, C_I, caption) for the frozen contrastive encoder at ``encoder``: a ``Denoiser`` (every
    other option, e.g. ``text_encoder``, is the Denoiser's; ``p_drop_text`` is its ``p_uncond``, and it
    has no label unless ``num_classes`` is set) with an ``ImageEmbedding`` condition.

    As in DALL-E 2 (Sec. 2.1), the image embedding is projected into the network's condition vector
    and into ``embedding_tokens`` extra context tokens that every attention layer attends to, next to
    the caption's tokens when there is a ``text_encoder``. Training drops the embedding to ∅ with
    probability ``p_drop_embedding`` (the paper: 10 %) and, independently, the caption with
    ``p_drop_text`` (50 %), so classifier-free guidance works on either. Condition keys:
    ``"image_embedding"`` (all-zero rows mean ∅) and ``"caption"``; a missing key means ∅. Training
    embeds each batch's clean images with the encoder.
    """

    def __init__(
        self,
        net: nn.Module,
        encoder: str | dict,  # a path, or (in its own checkpoints) the carried encoder: see frozen_encoder
        embedding_tokens: int = 4,
        p_drop_embedding: float = 0.1,
        p_drop_text: float = 0.5,
        num_classes: int | None = None,
        conditions: Sequence[Condition] = (),
        **kwargs: Any,
    ) -> None:
        contrastive = load_frozen_encoder(encoder, "the unCLIP decoder")
        parts = [ImageEmbedding(contrastive, embedding_tokens, p_drop_embedding), *conditions]
        super().__init__(net, num_classes=num_classes, p_uncond=p_drop_text, conditions=parts, **kwargs)

    @property
    def encoder(self) -> ContrastiveEncoder:
        """The frozen contrastive encoder whose image embeddings the decoder inverts."""
        return self.conditioner["image_embedding"].encoder

    @property
    def embedding_tokens(self) -> int:
        """How many context tokens the image embedding becomes."""
        return self.conditioner["image_embedding"].tokens

    @property
    def p_drop_embedding(self) -> float:
        """The image embedding's dropout probability during training."""
        return self.conditioner["image_embedding"].p_drop
