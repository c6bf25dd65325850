"""Feature extractors for sample metrics, chosen by name: the project's evaluator, Inception-V3 via
torch-fidelity exactly as the reference FID computes it, or DINOv2 and CLIP ViT-L/14 through timm
(``metrics.vit_features``: FD_DINOv2 in the ``fid`` column, CMMD in ``cmmd``).

An extractor maps images in [-1, 1] to ``features`` (N, D) for FID and precision/recall and to
``logits`` (N, K) for the Inception Score and class accuracy. Its ``name`` identifies the network and
its weights (a digest of the weights file), so cached real-data features never outlive the weights.
Adding an extractor is one entry in ``FEATURES``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from lightning_diffusion.config import ConfigError, did_you_mean

WEIGHTS_FLAG = "--feature_weights (alias --inception_weights)"


class FeatureExtractor(Protocol):
    """What the metrics need: a name for cache keys, features and logits of images in [-1, 1]."""

    name: str

    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor]: ...


def file_digest(path: str | Path) -> str:
    """The first 16 hex digits of the SHA-256 of a file: the identity of a weights file in cache keys."""
    digest = hashlib.sha256()  # read in 1 MiB blocks (hashlib.file_digest needs Python 3.11; we take 3.10)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


class EvaluatorFeatures:
    """Features (penultimate layer) and logits of the project's evaluator component."""

    def __init__(self, evaluator: nn.Module, name: str) -> None:
        self.evaluator = evaluator.eval()
        self.name = name

    @torch.no_grad()
    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.evaluator.features_and_logits(images)


class InceptionFeatures:
    """Inception-V3 pool features (2048) and logits (1008) through torch-fidelity, as the reference FID.

    Images are mapped to uint8 RGB and resized by torch-fidelity as the TensorFlow FID does. Weights come
    from ``weights_path``, else torch-fidelity downloads them once into torch's hub cache.
    """

    def __init__(self, weights_path: str | Path | None = None) -> None:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        if weights_path is not None and not Path(weights_path).is_file():
            raise ConfigError(
                f"{WEIGHTS_FLAG} {str(weights_path)!r} is not a file; pass the path of torch-fidelity's "
                f"Inception-V3 weights ({inception_weights_url()}), or leave it out to download them."
            )
        try:
            self.model = FeatureExtractorInceptionV3(
                "inception-v3-compat",
                ["2048", "logits_unbiased"],
                feature_extractor_weights_path=None if weights_path is None else str(weights_path),
            ).eval()
        except OSError as error:  # urllib's URLError, timeouts and refused connections are all OSErrors
            if weights_path is not None:
                raise
            raise ConfigError(inception_download_failed(error)) from None
        self.name = f"inception-v3:{file_digest(weights_path or hub_weights_file())}"

    @torch.no_grad()
    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor]:
        rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        uint8 = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        self.model.to(images.device)
        features, logits = self.model(uint8)
        return features, logits


def inception_weights_url() -> str:
    """Where torch-fidelity downloads its Inception-V3 weights from."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return URL_INCEPTION_V3


def hub_weights_file() -> Path:
    """Where torch's hub cache keeps the downloaded Inception-V3 weights (and looks for them first)."""
    name = Path(urlparse(inception_weights_url()).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def inception_download_failed(error: OSError) -> str:
    """The one-paragraph way out when the Inception-V3 weights are neither given nor downloadable."""
    return (
        f"Inception-V3 features need torch-fidelity's weights, and downloading them failed ({error}). "
        f"Either download {inception_weights_url()} on a machine with internet and pass the file with "
        f"--feature_weights PATH (or copy it to {hub_weights_file()}, where torch's hub cache looks "
        "first), or run once where the network reaches github.com so that torch-fidelity caches it there "
        "(set TORCH_HOME to choose the cache folder)."
    )


@dataclass
class FeatureInputs:
    """What an extractor may be built from: the loaded evaluator with its checkpoint path, and a local
    weights file of the feature network (``--feature_weights``, alias ``--inception_weights``; None:
    download into the library's cache)."""

    evaluator: nn.Module | None = None
    evaluator_path: str | Path | None = None
    weights: str | Path | None = None

    @cached_property
    def evaluator_features(self) -> EvaluatorFeatures | None:
        """The evaluator as an extractor (one object however often asked), or None without one."""
        if self.evaluator is None or self.evaluator_path is None:
            return None
        return EvaluatorFeatures(self.evaluator, f"evaluator:{file_digest(self.evaluator_path)}")


def _evaluator(inputs: FeatureInputs) -> FeatureExtractor:
    if inputs.weights is not None:
        raise ConfigError(
            f"{WEIGHTS_FLAG} is for --features inception, dinov2 or clip; the evaluator's weights are its "
            "checkpoint (--evaluator). Leave it out, or choose one of those feature networks."
        )
    if inputs.evaluator_features is None:
        raise ConfigError(
            "features 'evaluator' need an evaluator: pass --evaluator PATH (train one with python train.py "
            "fit --config configs/<data>/evaluator.yaml), or choose --features inception, dinov2 or clip."
        )
    return inputs.evaluator_features


def _inception(inputs: FeatureInputs) -> FeatureExtractor:
    return InceptionFeatures(inputs.weights)


def vit_builder(space: str) -> Callable[[FeatureInputs], FeatureExtractor]:
    """The builder of a timm ViT feature space (``metrics.vit_features.VIT_SPACES``): weights from
    ``inputs.weights``, else the Hugging Face hub cache; named by space, architecture and weights digest."""

    def build(inputs: FeatureInputs) -> FeatureExtractor:
        from lightning_diffusion.metrics.vit_features import VIT_SPACES, VitFeatures, hub_weights

        network = VIT_SPACES[space]
        if inputs.weights is not None and not Path(inputs.weights).is_file():
            raise ConfigError(
                f"{WEIGHTS_FLAG} {str(inputs.weights)!r} is not a file; pass timm's weights of "
                f"{network.hub_repository} (model.safetensors), or leave it out to download them."
            )
        weights = Path(inputs.weights) if inputs.weights is not None else hub_weights(space)
        name = f"{space}:{network.architecture}.{network.tag}:{file_digest(weights)}"
        return VitFeatures(space, weights, name)

    return build


FEATURES: dict[str, Callable[[FeatureInputs], FeatureExtractor]] = {
    "evaluator": _evaluator,
    "inception": _inception,
    "dinov2": vit_builder("dinov2"),
    "clip": vit_builder("clip"),
}


def feature_builder(name: str) -> Callable[[FeatureInputs], FeatureExtractor]:
    """The builder registered as ``name`` in ``FEATURES``; an unknown name gets the closest and the list
    (``evaluate.py`` asks before it starts any process)."""
    if name not in FEATURES:
        raise ConfigError(
            f"unknown features {name!r}{did_you_mean(name, FEATURES)}; choose from {', '.join(FEATURES)}."
        )
    return FEATURES[name]


def build_features(name: str, inputs: FeatureInputs) -> FeatureExtractor:
    """The extractor registered as ``name`` in ``FEATURES``, built from ``inputs``."""
    return feature_builder(name)(inputs)


def identity_features(num_features: int) -> nn.Module:
    """An identity 'network' for torchmetrics metrics that are fed precomputed features."""
    module = nn.Identity()
    module.num_features = num_features
    return module
