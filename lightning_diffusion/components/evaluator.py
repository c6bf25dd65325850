"""The evaluator: a clean-image classifier, independent of every guiding model, that metrics read.

It supplies features for FID and precision/recall, logits for the Inception Score and for the class
accuracy of conditional samples. It trains on real images only, so it shares no weights or biases
with the noisy classifier or the contrastive encoder that guide sampling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lightning_diffusion.components.base import (
    Component,
    adamw_with_warmup,
    check_network,
    classification_outcomes,
)
from lightning_diffusion.registry import register

BACKGROUND = -1.0
EVAL_STAGES = ("val", "test")
LOGGED = ("loss", "accuracy")


def random_translate(images: Tensor, max_shift: int) -> Tensor:
    """Shift each image by its own random offset of up to ``max_shift`` pixels per axis (pad and crop),
    filling uncovered pixels with the background value -1."""
    batch, _, height, width = images.shape
    padded = F.pad(images, (max_shift,) * 4, value=BACKGROUND).permute(0, 2, 3, 1)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, batch, 1), device=images.device)
    rows = offsets[0] + torch.arange(height, device=images.device)
    cols = offsets[1] + torch.arange(width, device=images.device)
    index = torch.arange(batch, device=images.device)[:, None, None]
    return padded[index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


@register("evaluator")
class Evaluator(Component):
    """Classifier of clean images around an injected network with ``features`` and ``forward``
    (e.g. ``ConvClassifier``). With ``augment``, training batches are randomly translated by up to
    ``max(1, H // 16)`` pixels (1 on 8x8 digits, 2 at 32x32); no flips, which would change digits."""

    def __init__(
        self,
        net: nn.Module,
        image_shape: Sequence[int] = (1, 8, 8),
        num_classes: int = 10,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        warmup_steps: int = 50,
        augment: bool = True,
    ) -> None:
        super().__init__()
        check_network(net, in_channels=image_shape[0], num_classes=num_classes)
        self.net = net
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps
        self.augment = augment
        self.max_shift = max(1, self.image_shape[1] // 16)
        self.epoch_means = nn.ModuleDict(
            {f"{stage}_{name}": MeanMetric() for stage in EVAL_STAGES for name in LOGGED}
        )
        self.save_hyperparameters(self.spec["init_args"])

    @property
    def feature_dim(self) -> int:
        """Width of the vectors ``features`` returns."""
        return self.net.feature_dim

    def features(self, images: Tensor) -> Tensor:
        """Penultimate activations (N, feature_dim) of [-1, 1] images in float32 (FID, precision/recall)."""
        return self.net.features(images).float()

    def logits(self, images: Tensor) -> Tensor:
        """Class logits (N, num_classes) of images in [-1, 1], in float32 (for IS and class accuracy)."""
        return self.net(images).float()

    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Features and logits from one forward pass (what the sample metrics need)."""
        features = self.net.features(images)
        return features.float(), self.net.head(self.net.dropout(features)).float()

    def augmented(self, images: Tensor) -> Tensor:
        """``images`` randomly translated in training mode with ``augment``; unchanged otherwise."""
        return random_translate(images, self.max_shift) if self.training and self.augment else images

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        losses, correct = classification_outcomes(self.logits(self.augmented(batch["image"])), batch["label"])
        loss = losses.mean()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/accuracy", correct.mean())
        return loss

    def _evaluate(self, batch: Mapping[str, Any], stage: str) -> None:
        """Accumulate and log ``<stage>/loss`` and ``<stage>/accuracy`` (epoch means, reduced over ranks)."""
        outcomes = classification_outcomes(self.logits(batch["image"]), batch["label"])
        for name, values in zip(LOGGED, outcomes, strict=True):
            metric = self.epoch_means[f"{stage}_{name}"]
            metric.update(values)
            self.log(f"{stage}/{name}", metric, prog_bar=name == "accuracy")

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW, warm-up, then a cosine decay over the run (if its length is known): a stable final model."""
        total_steps = self.trainer.estimated_stepping_batches
        return adamw_with_warmup(self, self.lr, self.weight_decay, self.warmup_steps, total_steps)

    def on_fit_start(self) -> None:
        """Refuse a data module whose images or classes do not match this model's configuration."""
        self.check_datamodule(self.image_shape, self.num_classes)
