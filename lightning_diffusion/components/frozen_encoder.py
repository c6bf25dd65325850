"""A trained contrastive encoder used frozen inside another component (the unCLIP prior and decoder).

The component names the encoder's checkpoint (``encoder: path``); the encoder's weights also travel
in the component's own checkpoints. Its parameters never train and it stays in eval mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_diffusion.components.contrastive_encoder import ContrastiveEncoder
from lightning_diffusion.config import ConfigError


def load_frozen_encoder(path: str, role: str) -> ContrastiveEncoder:
    """The contrastive encoder at ``path``, frozen; ``role`` (e.g. "the unCLIP decoder") names the
    component that needs it in the error message."""
    from lightning_diffusion.registry import load_component

    if not Path(path).is_file():
        raise ConfigError(
            f"{role} embeds images and captions with the contrastive encoder checkpoint {path!r}, which "
            "does not exist; train one (python train.py fit --config "
            "configs/<data>/contrastive_encoder.yaml) and set encoder to its checkpoints/last.ckpt."
        )
    encoder = load_component(path, kind="contrastive_encoder")
    encoder.requires_grad_(False)
    return encoder.eval()


class FrozenEncoderUser:
    """Mixin for components holding a frozen ``encoder``: ``train()`` leaves the encoder in eval mode,
    and ``clean_image_embedding`` gives C_I of clean images (t = 0), the embedding DALL-E 2 conditions on."""

    encoder: ContrastiveEncoder

    def train(self, mode: bool = True) -> Any:
        super().train(mode)
        self.encoder.eval()
        return self

    def clean_image_embedding(self, images: Tensor) -> Tensor:
        """Unit-norm C_I(y) (B, embed_dim) of clean images in [-1, 1], without gradients."""
        with torch.no_grad():
            return self.encoder.image_embedding(images, images.new_zeros(images.shape[0]))

    @property
    def embed_dim(self) -> int:
        """The size of the image and text embeddings (the encoder's)."""
        return self.encoder.embed_dim
