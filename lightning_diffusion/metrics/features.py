"""Feature extractors for sample metrics: the project's evaluator, or Inception-V3 via torch-fidelity.

An extractor maps images in [-1, 1] to ``features`` (N, D) for FID and precision/recall and to
``logits`` (N, K) for the Inception Score and class accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn

from lightning_diffusion.config import ConfigError

INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"


class FeatureExtractor(Protocol):
    """What the metrics need: a name for cache keys, features and logits of images in [-1, 1]."""

    name: str

    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor]: ...


class EvaluatorFeatures:
    """Features (penultimate layer) and logits of the project's evaluator component."""

    def __init__(self, evaluator: nn.Module, name: str) -> None:
        self.evaluator = evaluator.eval()
        self.name = name

    @torch.no_grad()
    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.evaluator.features_and_logits(images)


class InceptionFeatures:
    """Inception-V3 pool features (2048) and logits (1008) through torch-fidelity, from a local weights file.

    Images are mapped to uint8 RGB and resized by torch-fidelity as in the reference TensorFlow FID.
    """

    def __init__(self, weights_path: str | Path | None) -> None:
        if weights_path is None or not Path(weights_path).is_file():
            from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

            raise ConfigError(
                f"Inception-V3 features need its weights as a local file, and {weights_path!r} is not one. "
                f"Download {URL_INCEPTION_V3} on a machine with internet, copy it here and pass its path "
                "as inception_weights (or use the evaluator features, the default)."
            )
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.model = FeatureExtractorInceptionV3(
            "inception-v3-compat",
            ["2048", "logits_unbiased"],
            feature_extractor_weights_path=str(weights_path),
        ).eval()
        self.name = f"inception-v3:{Path(weights_path).name}"

    @torch.no_grad()
    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor]:
        rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        uint8 = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        self.model.to(images.device)
        features, logits = self.model(uint8)
        return features, logits


def identity_features(num_features: int) -> nn.Module:
    """An identity 'network' for torchmetrics metrics that are fed precomputed features."""
    module = nn.Identity()
    module.num_features = num_features
    return module
