"""A trained contrastive encoder used frozen inside another component (the unCLIP prior and decoder).

A component is configured with the encoder's checkpoint (``encoder: path``); its checkpoints carry the
encoder as a ``carried_encoder`` record (``components.carried``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_diffusion.components.carried import CarriedModel, Source
from lightning_diffusion.components.contrastive_encoder import ContrastiveEncoder

CARRIED_ENCODER = CarriedModel(
    key="carried_encoder",
    model=ContrastiveEncoder,
    kind="contrastive_encoder",
    noun="contrastive encoder",
    use="embeds images and captions with",
    argument="encoder",
    train="python train.py fit --config configs/<data>/contrastive_encoder.yaml",
)


def load_frozen_encoder(encoder: Source | ContrastiveEncoder, role: str) -> ContrastiveEncoder:
    """The frozen contrastive encoder a component needs (``CarriedModel.load``); ``role`` (e.g. "the unCLIP
    decoder") names the component in error messages."""
    return CARRIED_ENCODER.load(encoder, role)


class FrozenEncoderUser:
    """Mixin for components holding a frozen ``encoder``: ``train()`` leaves the encoder in eval mode,
    ``clean_image_embedding`` gives C_I of clean images (t = 0), the embedding DALL-E 2 conditions on, and
    the spec and checkpoints record the encoder itself (``carried_encoder``) rather than its file."""

    encoder: ContrastiveEncoder

    @property
    def spec(self) -> dict[str, Any]:
        """The component's spec with ``encoder`` as the ``carried_encoder`` record (once it is built)."""
        spec = super().spec
        encoder = getattr(self, "encoder", None)  # None until built (a submodule, or a part's)
        if encoder is None:
            return spec
        carried = CARRIED_ENCODER.record(encoder, spec["init_args"]["encoder"])
        return {**spec, "init_args": {**spec["init_args"], "encoder": carried}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the carried encoder also in the hyperparameters, which resuming (``--ckpt_path``) reads."""
        super().on_save_checkpoint(checkpoint)
        checkpoint["hyper_parameters"]["encoder"] = self.spec["init_args"]["encoder"]

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
