"""DINOv2 and CLIP image features through timm, for FD_DINOv2 (Stein et al. 2023, "Exposing flaws of
generative model evaluation metrics", dgm-eval) and CMMD (Jayasumana et al. 2024).

Why timm: torch-fidelity 0.4's DINOv2 extractor loads code and weights through ``torch.hub`` (the network)
and refuses a local weights file, so it cannot run offline; timm defines the same ViTs (DINOv2 ViT-L/14,
OpenAI CLIP ViT-L/14 with QuickGELU and its projection), downloads their weights from the Hugging Face hub
where the network allows and loads a local file otherwise (its checkpoint filter resamples the position
embedding to the input size). One library serves both spaces; open_clip would add a text tower, a tokenizer
and timm itself.

- ``dinov2`` (dgm-eval's ``DINOv2Encoder``): uint8 RGB resized to 224 × 224 bicubic (antialiased and
  rounded back to uint8, as PIL does), ImageNet mean and std, the CLS token after the last norm: 1024
  features of ViT-L/14. timm resamples the 37 × 37 position embedding to 16 × 16 once at load time, where
  the hub model interpolates at run time: the same network up to that interpolation.
- ``clip`` (google-research/cmmd's ``ClipEmbeddingModel``, ``openai/clip-vit-large-patch14-336``): images
  in [0, 1] resized to 336 × 336 bicubic, CLIP's mean and std, the projected image embedding (768),
  normalised to unit length.

Neither network has class logits: the extractors return logits with no columns, so the Inception Score has
no classes to score (it reads exp(0) = 1) and means nothing under them. Weights come from
``--feature_weights PATH`` (timm's ``model.safetensors`` from the hub repository below), else from the
Hugging Face hub cache, downloaded once where the network allows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_diffusion.config import ConfigError

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
WEIGHTS_FILE = "model.safetensors"  # the file of a timm repository on the Hugging Face hub


@dataclass(frozen=True)
class VitSpace:
    """A feature space of a timm ViT: its architecture and pretrained tag, the input size and statistics
    of its reference preprocessing, whether that resize antialiases and rounds to uint8 (PIL), whether
    features are normalised to unit length, and architecture overrides (tests build tiny networks)."""

    architecture: str
    tag: str
    size: int
    statistics: tuple[tuple[float, ...], tuple[float, ...]]
    pil_resize: bool
    unit_length: bool
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def hub_repository(self) -> str:
        """The Hugging Face hub repository timm downloads the weights from."""
        from timm.models import get_pretrained_cfg

        return get_pretrained_cfg(f"{self.architecture}.{self.tag}").hf_hub_id


VIT_SPACES: dict[str, VitSpace] = {
    "dinov2": VitSpace("vit_large_patch14_dinov2", "lvd142m", 224, IMAGENET, True, False),
    "clip": VitSpace("vit_large_patch14_clip_quickgelu_336", "openai", 336, OPENAI_CLIP, False, True),
}


def hub_weights(space: str) -> Path:
    """The weights file of ``space`` from the Hugging Face hub cache, downloaded once; a ConfigError with
    the ways out where neither the cache nor the network has it."""
    from huggingface_hub import hf_hub_download

    repository = VIT_SPACES[space].hub_repository
    try:
        return Path(hf_hub_download(repository, WEIGHTS_FILE))
    except OSError as error:  # huggingface_hub's LocalEntryNotFoundError (offline, not cached) is one
        raise ConfigError(weights_download_failed(space, error)) from None


def weights_download_failed(space: str, error: OSError) -> str:
    """The one-paragraph way out when a ViT feature space has neither a weights file nor the network."""
    repository = VIT_SPACES[space].hub_repository
    return (
        f"--features {space} needs the weights of timm's {repository}, and downloading them from the "
        f"Hugging Face hub failed ({str(error).splitlines()[0]}). Either download "
        f"https://huggingface.co/{repository}/resolve/main/{WEIGHTS_FILE} on a machine with internet and "
        "pass the file with --feature_weights PATH, or run once where the network reaches huggingface.co "
        "so that huggingface_hub caches it (HF_HOME chooses the cache folder; copy that folder to this "
        "machine and set HF_HUB_OFFLINE=1 to use it without the network)."
    )


class VitFeatures:
    """Features of a timm ViT feature space (``VIT_SPACES``) with the reference preprocessing; logits have
    no columns (neither network classifies)."""

    def __init__(self, space: str, weights_path: Path, name: str) -> None:
        import timm

        self.name = name
        self.space = VIT_SPACES[space]
        self.model: nn.Module = timm.create_model(
            self.space.architecture,
            pretrained=True,
            pretrained_cfg_overlay={"file": str(weights_path)},
            img_size=self.space.size,
            **self.space.overrides,
        ).eval()
        mean, std = (torch.tensor(values).view(1, 3, 1, 1) for values in self.space.statistics)
        self.mean, self.std = mean, std

    @torch.no_grad()
    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor]:
        rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round()  # the uint8 levels of a saved image
        size = (self.space.size, self.space.size)
        resized = nn.functional.interpolate(pixels, size, mode="bicubic", antialias=self.space.pil_resize)
        if self.space.pil_resize:
            resized = resized.round().clamp(0, 255)
        inputs = (resized / 255 - self.mean.to(images.device)) / self.std.to(images.device)
        self.model.to(images.device)
        features = self.model(inputs).float()
        if self.space.unit_length:
            features = nn.functional.normalize(features, dim=1)
        return features, features.new_zeros(len(features), 0)
