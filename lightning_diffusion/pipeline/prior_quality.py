"""How well a diffusion prior predicts image embeddings from captions (DALL-E 2, Ramesh et al. 2022).

For each held-out (image, caption) pair: the cosine similarity of the embedding predicted from the
caption to the image's true C_I, and text→image retrieval, i.e. whether the true embedding nearest to
the prediction (among all the pairs') belongs to an image with the same caption; and, as sets, the
Fréchet distance and precision/recall between predicted and true embeddings. Two baselines without
a prior map C_T straight to C_I: C_T itself, and the least-squares linear map C_T → C_I fitted on
training pairs (a deterministic regression, the conditional mean a linear model can reach).
This module samples through the prior; the measures themselves are ``metrics.embedding_quality``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_diffusion.components.prior import Prior
from lightning_diffusion.diffusion import SamplerSpec, sample_generators
from lightning_diffusion.metrics.embedding_quality import prediction_quality


@torch.no_grad()
def embedding_pairs(
    prior: Prior, images: Tensor, captions: Sequence[str], batch_size: int = 250
) -> tuple[Tensor, Tensor]:
    """True unit-norm image embeddings C_I (N, E) and text embeddings C_T (N, E) of the prior's encoder."""
    device = next(prior.parameters()).device
    image_parts, text_parts = [], []
    for start in range(0, len(images), batch_size):
        stop = start + batch_size
        image_parts.append(prior.clean_image_embedding(images[start:stop].to(device)).cpu())
        text_parts.append(prior.encoder.text_embedding(list(captions[start:stop])).cpu())
    return torch.cat(image_parts), torch.cat(text_parts)


def fit_linear_map(text: Tensor, image: Tensor) -> Tensor:
    """Least-squares affine map W ((E + 1) x E) with [C_T, 1] W ≈ C_I on training pairs."""
    inputs = torch.cat([text, torch.ones(len(text), 1)], dim=1).double()
    return torch.linalg.lstsq(inputs, image.double()).solution.float()


def apply_linear_map(weights: Tensor, text: Tensor) -> Tensor:
    """Unit-norm predictions of C_I from C_T by a map from ``fit_linear_map``."""
    return F.normalize(torch.cat([text, torch.ones(len(text), 1)], dim=1) @ weights, dim=-1)


def sampled_embeddings(
    prior: Prior,
    captions: Sequence[str],
    guidance_scale: float,
    candidates: int,
    sampler: SamplerSpec | str,
    seed: int,
    batch_size: int,
) -> Tensor:
    """One prior sample per caption (sample i from a generator seeded by (seed, i)), on the CPU."""
    device = next(prior.parameters()).device
    parts = []
    for start in range(0, len(captions), batch_size):
        batch = list(captions[start : start + batch_size])
        generators = sample_generators(seed, range(start, start + len(batch)), device)
        parts.append(prior.sample_embeddings(batch, generators, guidance_scale, candidates, sampler).cpu())
    return torch.cat(parts)


def prior_quality(
    prior: Prior,
    test: tuple[Tensor, Sequence[str]],
    train: tuple[Tensor, Sequence[str]],
    scales: Sequence[float] = (1.0,),
    candidates: Sequence[int] = (1,),
    sampler: SamplerSpec | str = "ddim",
    seed: int = 0,
    batch_size: int = 250,
    test_labels: Tensor | None = None,
) -> list[dict[str, Any]]:
    """Rows of ``prediction_quality`` on the ``test`` (images, captions) pairs (with class retrieval
    where ``test_labels`` are given): the two baselines (the linear map fitted on the ``train`` pairs)
    and the prior at each CFG scale and number of candidates."""
    test_images, test_captions = test
    true, text = embedding_pairs(prior, test_images, test_captions, batch_size)
    train_true, train_text = embedding_pairs(prior, *train, batch_size)

    def quality(predicted: Tensor) -> dict[str, float]:
        return prediction_quality(predicted, true, test_captions, test_labels)

    rows = [
        {"predictor": "C_T as C_I", **quality(text)},
        {
            "predictor": "linear map C_T -> C_I",
            **quality(apply_linear_map(fit_linear_map(train_text, train_true), text)),
        },
    ]
    for scale in scales:
        for count in candidates:
            predicted = sampled_embeddings(prior, test_captions, scale, count, sampler, seed, batch_size)
            rows.append(
                {
                    "predictor": "prior",
                    "scale": float(scale),
                    "candidates": count,
                    **quality(predicted),
                }
            )
    return rows
