"""How well predicted image embeddings match the true ones (DALL-E 2's prior, Ramesh et al. 2022): pair by
pair (cosine similarity, text→image retrieval) and as sets (Fréchet distance, precision/recall). Tensors
in; ``pipeline.prior_quality`` samples the predictions."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor
from torch_fidelity.metric_prc import calculate_precision_recall_full
from torchmetrics.image.fid import FrechetInceptionDistance

from lightning_diffusion.metrics.features import identity_features
from lightning_diffusion.metrics.precision_recall import NEIGHBOURHOOD
from lightning_diffusion.metrics.retrieval import retrieval_outcomes


def prediction_quality(
    predicted: Tensor, true: Tensor, captions: Sequence[str], labels: Tensor | None = None
) -> dict[str, float]:
    """How predicted embeddings match the true ones, pair by pair and as a set.

    Pairwise: the mean cosine similarity to the true embedding, and the text→image retrieval accuracy
    among all true embeddings (a hit: the retrieved image has the query's caption; with ``labels``,
    ``class_retrieval`` also counts a retrieved image of the query's class, which is what retrieval
    means where many captions name one class, e.g. templates with synonyms). As a set: the
    Fréchet distance between the two sets (FID's formula on the embeddings) and precision/recall
    (Kynkäänniemi et al. 2019, k = 3), which tell a predictor that collapses each caption to one point
    (low recall) from one that samples the spread of its images' embeddings."""
    predicted = F.normalize(predicted, dim=-1)
    cosine = (predicted * true).sum(dim=-1).mean().item()
    logits = true @ predicted.T
    _, text_to_image = retrieval_outcomes(logits, captions)
    frechet = FrechetInceptionDistance(feature=identity_features(true.shape[1]))
    frechet.update(true.double(), real=True)
    frechet.update(predicted.double(), real=False)
    precision, recall = calculate_precision_recall_full(predicted, true, NEIGHBOURHOOD)
    quality = {"cosine": cosine, "retrieval": text_to_image.mean().item()}
    if labels is not None:
        _, same_class = retrieval_outcomes(logits, [str(label) for label in labels.tolist()])
        quality["class_retrieval"] = same_class.mean().item()
    return {
        **quality,
        "frechet": float(frechet.compute()),
        "precision": float(precision),
        "recall": float(recall),
    }
