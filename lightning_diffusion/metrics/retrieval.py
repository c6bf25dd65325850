"""Retrieval between images and captions from a score matrix (CLIP, Radford et al. 2021, Sec. 3.1): which
captions count as the same (the positives) and whether each query's best-scoring key is one of them.
Tensors in, tensors out: the contrastive encoder's validation and the prior's quality both use them."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor


def caption_ids(captions: Sequence[str], device: torch.device | None = None) -> Tensor:
    """Int64 ids (B,) equal exactly where the captions are equal and the same in every process (the first
    8 bytes of a BLAKE2b digest; Python's ``hash`` is salted per process), so ranks match identical
    captions by gathering these ids instead of the strings, without a host round trip."""
    digests = [hashlib.blake2b(caption.encode(), digest_size=8).digest() for caption in captions]
    return torch.tensor([int.from_bytes(digest, "little", signed=True) for digest in digests], device=device)


def same_caption(captions: Sequence[str], device: torch.device | None = None) -> Tensor:
    """Boolean (B, B) matrix: entry (i, j) is True where caption i and caption j are the same string."""
    ids = caption_ids(captions, device)
    return ids[:, None] == ids[None, :]


def retrieval_hits(scores: Tensor, positives: Tensor) -> Tensor:
    """Per-query correctness (1.0 or 0.0): whether the best-scoring column of each row is a positive."""
    rows = torch.arange(scores.shape[0], device=scores.device)
    return positives[rows, scores.argmax(dim=1)].float()


def retrieval_outcomes(logits: Tensor, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Per-query correctness (1.0 or 0.0) of retrieval within the batch: image→text is right when the
    best-scoring caption reads the same as the image's own, text→image when the best-scoring image's
    caption reads the same as the query."""
    positives = same_caption(captions, logits.device)
    return retrieval_hits(logits, positives), retrieval_hits(logits.T, positives)
