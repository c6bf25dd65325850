"""CLIP score of generated images against their captions (Hessel et al. 2021).

The scorer is a ``ContrastiveEncoder`` that must be trained separately (another seed) from the one
that guides sampling: scoring CLIP-guided samples with the guiding encoder rewards adversarial
images that fool that very encoder. ``evaluate.py`` enforces this rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

from lightning_diffusion.config import ConfigError

CLIP_SCORE_WEIGHT = 100.0  # torchmetrics' CLIPScore convention (Hessel et al. 2021, eq. 1, use w = 2.5)


class ContrastiveEmbedder(Protocol):
    """What the CLIP score needs of an encoder: unit-norm image (at noise level t) and text embeddings."""

    def image_embedding(self, z: Tensor, t: Tensor) -> Tensor: ...

    def text_embedding(self, captions: Sequence[str]) -> Tensor: ...


@torch.no_grad()
def clip_scores(encoder: ContrastiveEmbedder, images: Tensor, captions: Sequence[str]) -> Tensor:
    """Per-image CLIP score 100 · max(cos(C_I(image, t=0), C_T(caption)), 0), shape (B,), in [0, 100]
    (Hessel et al. 2021, eq. 1, with torchmetrics' w = 100 instead of their 2.5); no gradients. The
    sweep averages them in a torchmetrics MeanMetric, so the mean is reduced across DDP ranks."""
    if len(captions) != images.shape[0]:
        raise ConfigError(f"got {len(captions)} captions for {images.shape[0]} images; pass one each.")
    clean = torch.zeros(images.shape[0], device=images.device)
    cosine = (encoder.image_embedding(images, clean) * encoder.text_embedding(captions)).sum(dim=-1)
    return CLIP_SCORE_WEIGHT * cosine.clamp(min=0.0)
