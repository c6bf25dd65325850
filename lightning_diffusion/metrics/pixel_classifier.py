"""A quick reference classifier on raw pixels (scikit-learn), trained on real images only.

It never sees generated images or any guiding model, so the fraction of class-conditional samples
it labels as their condition is an independent check that samples are recognisable. It is a cheap
stand-in for the evaluator component; its own test accuracy bounds what the check can show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from sklearn.svm import SVC
from torch import Tensor


class LabelledSplits(Protocol):
    """What the classifier is fitted from: real images and labels by split (a ``DiffusionDataModule``)."""

    def real_images(self, split: str) -> Tensor: ...

    def labels(self, split: str) -> Tensor: ...


@dataclass
class PixelClassifier:
    """An RBF support-vector classifier on flattened [-1, 1] images, with its accuracy on real test data."""

    model: SVC
    test_accuracy: float

    def predict(self, images: Tensor) -> np.ndarray:
        return self.model.predict(images.flatten(1).numpy())

    def accuracy(self, images: Tensor, labels: Tensor) -> float:
        """Fraction of ``images`` classified as their ``labels``."""
        return float((self.predict(images) == labels.numpy()).mean())


def fit_pixel_classifier(
    datamodule: LabelledSplits, max_train: int = 10000, seed: int = 0
) -> PixelClassifier:
    """Fit on (up to ``max_train`` of) the train split; report accuracy on the test split."""
    images = datamodule.real_images("train")
    labels = datamodule.labels("train")
    if len(images) > max_train:
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:max_train]
        images, labels = images[keep], labels[keep]
    model = SVC(C=10.0, gamma="scale").fit(images.flatten(1).numpy(), labels.numpy())
    classifier = PixelClassifier(model, 0.0)
    classifier.test_accuracy = classifier.accuracy(datamodule.real_images("test"), datamodule.labels("test"))
    return classifier
