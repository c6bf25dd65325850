"""The evaluator: a clean-image classifier, independent of every guiding model, that metrics read.

It supplies features for FID and precision/recall, logits for the Inception Score and for the class
accuracy of conditional samples. It trains on real images only, so it shares no weights or biases
with the noisy classifier or the contrastive encoder that guide sampling. With ``attribute_sizes`` it
also predicts per-image attributes (e.g. ``Shapes``' shape, colour, size, position), so samples of
text-conditional models can be scored against what their captions asked for.
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
from lightning_diffusion.config import ConfigError
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
    ``max(1, H // 16)`` pixels (1 on 8x8 digits, 2 at 32x32); no flips, which would change digits.

    ``attribute_sizes`` (the number of values of each attribute, as in the data's ``attribute_values``)
    adds a linear head on the features with one softmax per attribute, trained with the mean
    cross-entropy over attributes on batches that carry ``"attributes"``."""

    def __init__(
        self,
        net: nn.Module,
        image_shape: Sequence[int] = (1, 8, 8),
        num_classes: int = 10,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        warmup_steps: int = 50,
        augment: bool = True,
        attribute_sizes: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        check_network(net, in_channels=image_shape[0], num_classes=num_classes)
        if attribute_sizes is not None and (not attribute_sizes or min(attribute_sizes) < 2):
            raise ConfigError(
                "attribute_sizes must list at least one attribute, each with 2 or more values (the lengths "
                f"of the data's attribute_values), got {attribute_sizes}; leave it unset for no attributes."
            )
        self.net = net
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps
        self.augment = augment
        self.max_shift = max(1, self.image_shape[1] // 16)
        self.attribute_sizes = None if attribute_sizes is None else list(attribute_sizes)
        self.attribute_head = (
            None if attribute_sizes is None else nn.Linear(net.feature_dim, sum(attribute_sizes))
        )
        logged = LOGGED if attribute_sizes is None else (*LOGGED, "attribute_accuracy")
        self.epoch_means = nn.ModuleDict(
            {f"{stage}_{name}": MeanMetric() for stage in EVAL_STAGES for name in logged}
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

    def attribute_logits(self, features: Tensor) -> tuple[Tensor, ...]:
        """One logits tensor (N, size) per attribute from ``features``; a ConfigError without the head."""
        if self.attribute_head is None or self.attribute_sizes is None:
            raise ConfigError(
                "this evaluator has no attribute head; train one with model.init_args.attribute_sizes set "
                "to the sizes of the data's attribute_values (e.g. Shapes data)."
            )
        return self.attribute_head(self.net.dropout(features)).float().split(self.attribute_sizes, dim=1)

    def attribute_predictions(self, images: Tensor) -> Tensor:
        """The most likely value index of each attribute, long (N, A), for images in [-1, 1]."""
        return self.attribute_predictions_from(self.features(images))

    def attribute_predictions_from(self, features: Tensor) -> Tensor:
        """``attribute_predictions`` from already computed ``features`` (the sweep has them for FID)."""
        return torch.stack([logits.argmax(dim=1) for logits in self.attribute_logits(features)], 1)

    def attribute_outcomes(self, features: Tensor, attributes: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample cross-entropy and fraction of correct attributes, both averaged over attributes."""
        outcomes = [
            classification_outcomes(logits, target)
            for logits, target in zip(self.attribute_logits(features), attributes.T, strict=True)
        ]
        losses, correct = zip(*outcomes, strict=True)
        return torch.stack(losses).mean(dim=0), torch.stack(correct).mean(dim=0)

    def augmented(self, images: Tensor) -> Tensor:
        """``images`` randomly translated in training mode with ``augment``; unchanged otherwise."""
        return random_translate(images, self.max_shift) if self.training and self.augment else images

    def uses_attributes(self, batch: Mapping[str, Any]) -> bool:
        """Whether this model has an attribute head and ``batch`` carries ``"attributes"`` for it."""
        return self.attribute_head is not None and "attributes" in batch

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        features, logits = self.features_and_logits(self.augmented(batch["image"]))
        losses, correct = classification_outcomes(logits, batch["label"])
        loss = losses.mean()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/accuracy", correct.mean())
        if self.uses_attributes(batch):
            attribute_losses, attribute_correct = self.attribute_outcomes(features, batch["attributes"])
            self.log("train/attribute_loss", attribute_losses.mean())
            self.log("train/attribute_accuracy", attribute_correct.mean())
            loss = loss + attribute_losses.mean()
        return loss

    def _evaluate(self, batch: Mapping[str, Any], stage: str) -> None:
        """Accumulate and log ``<stage>/loss``, ``<stage>/accuracy`` and, with attributes,
        ``<stage>/attribute_accuracy`` (epoch means, reduced over ranks)."""
        features, logits = self.features_and_logits(batch["image"])
        outcomes = dict(zip(LOGGED, classification_outcomes(logits, batch["label"]), strict=True))
        if self.uses_attributes(batch):
            outcomes["attribute_accuracy"] = self.attribute_outcomes(features, batch["attributes"])[1]
        for name, values in outcomes.items():
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
        """Refuse a data module whose images, classes or attributes do not match this model's settings."""
        self.check_datamodule(self.image_shape, self.num_classes)
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.attribute_sizes is not None and hasattr(datamodule, "attribute_values"):
            self.check_attribute_values(datamodule.attribute_values)

    def check_attribute_values(self, values: dict[str, list[str]] | None) -> None:
        """Refuse data attributes (name -> value names) whose sizes differ from ``attribute_sizes``."""
        if values is None:
            raise ConfigError(
                f"the model has attribute_sizes {self.attribute_sizes} but the data has no attributes; use a "
                "source with attributes (e.g. Shapes) or remove model.init_args.attribute_sizes."
            )
        sizes = [len(names) for names in values.values()]
        if sizes != self.attribute_sizes:
            raise ConfigError(
                f"the data's attributes {list(values)} have {sizes} values but the model is configured for "
                f"{self.attribute_sizes}; set model.init_args.attribute_sizes to {sizes}."
            )
