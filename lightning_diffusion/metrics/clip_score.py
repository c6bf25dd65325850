"""CLIP score of generated images against their captions (Hessel et al. 2021), DDP-correct.

The scorer is a ``ContrastiveEncoder`` that must be trained separately (another seed) from the one
that guides sampling: scoring CLIP-guided samples with the guiding encoder rewards adversarial
images that fool that very encoder. ``evaluate.py`` enforces this rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lightning_diffusion.config import ConfigError

CLIP_SCORE_WEIGHT = 100.0  # w in Hessel et al. (2021), eq. 1 (torchmetrics' CLIPScore uses the same)


class ContrastiveEmbedder(Protocol):
    """What the CLIP score needs of an encoder: unit-norm image (at noise level t) and text embeddings."""

    def image_embedding(self, z: Tensor, t: Tensor) -> Tensor: ...

    def text_embedding(self, captions: Sequence[str]) -> Tensor: ...


@torch.no_grad()
def clip_scores(encoder: ContrastiveEmbedder, images: Tensor, captions: Sequence[str]) -> Tensor:
    """Per-image CLIP score 100 · max(cos(C_I(image, t=0), C_T(caption)), 0), shape (B,), in [0, 100]
    (Hessel et al. 2021, eq. 1 with w = 100, the torchmetrics convention); no gradients."""
    if len(captions) != images.shape[0]:
        raise ConfigError(f"got {len(captions)} captions for {images.shape[0]} images; pass one each.")
    clean = torch.zeros(images.shape[0], device=images.device)
    cosine = (encoder.image_embedding(images, clean) * encoder.text_embedding(captions)).sum(dim=-1)
    return CLIP_SCORE_WEIGHT * cosine.clamp(min=0.0)


class ClipScore(nn.Module):
    """Mean CLIP score over every rank's samples: a torchmetrics ``MeanMetric`` reduced across DDP ranks
    (``compute`` is a collective, so every rank calls it).

    The encoder is held outside the module's children, so moving or saving the metric neither moves
    nor stores it; put the encoder on the images' device yourself (and in eval mode).
    """

    def __init__(self, encoder: ContrastiveEmbedder) -> None:
        super().__init__()
        object.__setattr__(self, "encoder", encoder)  # not a submodule (see class docstring)
        self.mean = MeanMetric()

    def update(self, images: Tensor, captions: Sequence[str]) -> None:
        """Add the scores of ``images`` (B, C, H, W) in [-1, 1] against their ``captions``."""
        self.mean.update(clip_scores(self.encoder, images, captions).to(self.mean.device))

    def compute(self) -> float:
        """The mean CLIP score of every image added since the last ``reset``."""
        return float(self.mean.compute())

    def reset(self) -> None:
        """Forget the images added so far."""
        self.mean.reset()
