"""A trained contrastive encoder used frozen inside another component (the unCLIP prior and decoder).

A component is configured with the encoder's checkpoint (``encoder: path``). Its own checkpoints are
self-contained: they record the encoder as a ``carried_encoder`` spec (how to build it, and the path
it was first loaded from) and hold its weights in their state dict, so ``load_component`` and resuming
with ``--ckpt_path`` rebuild it without the encoder's file. Its parameters never train and it stays in
eval mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_diffusion.components.contrastive_encoder import ContrastiveEncoder
from lightning_diffusion.config import ConfigError, import_class, instantiate, is_spec
from lightning_diffusion.registry import discover, load_component

CARRIED_KEY = "carried_encoder"  # {CARRIED_KEY: encoder spec, "trained_from": path}
EncoderSource = str | dict[str, Any]


def carried_encoder(encoder: ContrastiveEncoder, trained_from: EncoderSource) -> dict[str, Any]:
    """How a component's checkpoint records its frozen encoder: the encoder's spec (its weights travel in
    the same checkpoint's state dict) and the path it was first loaded from."""
    origin = trained_from.get("trained_from") if isinstance(trained_from, dict) else trained_from
    return {CARRIED_KEY: encoder.spec, "trained_from": origin}


def load_frozen_encoder(encoder: EncoderSource | ContrastiveEncoder, role: str) -> ContrastiveEncoder:
    """The frozen contrastive encoder a component needs; ``role`` (e.g. "the unCLIP decoder") names the
    component in error messages. ``encoder`` is a checkpoint path, an encoder object, or the
    ``carried_encoder`` record of a component checkpoint: the encoder is then built from its spec and
    gets its weights when the component's state dict is loaded."""
    if isinstance(encoder, dict):
        encoder = _build_carried(encoder, role)
    elif not isinstance(encoder, ContrastiveEncoder):
        encoder = _load_checkpoint(str(encoder), role)
    encoder.requires_grad_(False)
    return encoder.eval()


def _load_checkpoint(path: str, role: str) -> ContrastiveEncoder:
    if not Path(path).is_file():
        raise ConfigError(
            f"{role} embeds images and captions with the contrastive encoder checkpoint {path!r}, which "
            "does not exist; train one (python train.py fit --config "
            "configs/<data>/contrastive_encoder.yaml) and set encoder to its checkpoints/last.ckpt."
        )
    return load_component(path, kind="contrastive_encoder")


def _build_carried(record: dict[str, Any], role: str) -> ContrastiveEncoder:
    """An encoder (untrained until the component's weights are loaded) from a ``carried_encoder`` record
    (whose spec ``instantiate`` may already have built)."""
    encoder = record.get(CARRIED_KEY)
    if is_spec(encoder) and issubclass(import_class(encoder["class_path"]), ContrastiveEncoder):
        discover()
        encoder = instantiate(encoder)
    if not isinstance(encoder, ContrastiveEncoder):
        raise ConfigError(
            f"{role} needs encoder to be the path of a contrastive encoder checkpoint (or, as its own "
            f"checkpoints record it, {{{CARRIED_KEY!r}: <ContrastiveEncoder spec>, 'trained_from': path}}), "
            f"got a dict with keys {sorted(record)}."
        )
    return encoder


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
        carried = carried_encoder(encoder, spec["init_args"]["encoder"])
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
