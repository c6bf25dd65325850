"""Data sources: where labelled (optionally captioned) images come from, as uint8 images.

A source is ``Configurable`` so a checkpoint records which data a model was trained on; ``load``
returns a split as an ``ImageSet``: labels and captions in memory, images either in memory (the small
data sets) or read on access (``ImageReader``, e.g. files decoded in DataLoader workers). The datamodule
turns items into batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from lightning_diffusion.config import ConfigError, Configurable, did_you_mean
from lightning_diffusion.data.idx import read_idx_pair

SPLITS = ("train", "test")


class ImageReader(Protocol):
    """Images read one at a time on access (so a split needs no memory per image): ``reader[i]`` is
    uint8 (C, H, W), ``shape`` is (N, C, H, W) and ``dtype`` is ``torch.uint8``, as for a tensor."""

    dtype: torch.dtype

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(N, C, H, W) of the whole split."""
        ...

    def __len__(self) -> int:
        """N."""
        ...

    def __getitem__(self, index: int) -> torch.Tensor:
        """Image ``index`` as uint8 (C, H, W)."""
        ...


@dataclass
class ImageSet:
    """One split of a source: uint8 images (N, C, H, W) in memory or read on access, long labels (N,),
    class names, captions, and attributes: long (N, A) indices into the value names ``attribute_values``
    lists per attribute name."""

    images: torch.Tensor | ImageReader
    labels: torch.Tensor
    class_names: list[str]
    captions: list[str] | None = None
    attributes: torch.Tensor | None = None
    attribute_values: dict[str, list[str]] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or len(self.images.shape) != 4:
            raise ValueError(
                f"ImageSet images must be a uint8 tensor (N, C, H, W), got {self.images.dtype} "
                f"with shape {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.long or self.labels.shape != (len(self.images),):
            raise ValueError(
                f"ImageSet labels must be a long tensor of shape ({len(self.images)},), got "
                f"{self.labels.dtype} with shape {tuple(self.labels.shape)}"
            )
        if not self.class_names:
            raise ValueError("ImageSet needs at least one class name")
        if len(self.labels) and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < len(
            self.class_names
        ):
            raise ValueError(f"ImageSet labels must lie in [0, {len(self.class_names)})")
        if self.captions is not None and len(self.captions) != len(self.images):
            raise ValueError(f"ImageSet has {len(self.images)} images but {len(self.captions)} captions")
        if (self.attributes is None) != (self.attribute_values is None):
            raise ValueError("ImageSet needs both attributes and attribute_values, or neither")
        if self.attributes is not None and self.attribute_values is not None:
            self._check_attributes(self.attributes, self.attribute_values)

    def _check_attributes(self, attributes: torch.Tensor, values: dict[str, list[str]]) -> None:
        """Refuse attributes that are not long (N, A) indices within each attribute's value names."""
        if attributes.dtype != torch.long or attributes.shape != (len(self.images), len(values)):
            raise ValueError(
                f"ImageSet attributes must be a long tensor of shape ({len(self.images)}, {len(values)}), "
                f"got {attributes.dtype} with shape {tuple(attributes.shape)}"
            )
        for column, (name, names) in zip(attributes.T, values.items(), strict=True):
            if len(column) and not 0 <= int(column.min()) <= int(column.max()) < len(names):
                raise ValueError(f"ImageSet attribute {name!r} must lie in [0, {len(names)})")

    def __len__(self) -> int:
        return len(self.images)


class DataSource(Configurable):
    """Base of every data source: ``load("train" | "test")`` and a short ``name`` for cache keys."""

    @property
    def name(self) -> str:
        """A short string naming the data, used in cache keys."""
        raise NotImplementedError

    def load(self, split: str) -> ImageSet:
        """The whole ``split`` ("train" or "test") in memory."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r} for data source {self.name}; use 'train' or 'test'.")
        return self._load(split)

    def _load(self, split: str) -> ImageSet:
        raise NotImplementedError


def image_set_from_numpy(images: np.ndarray, labels: Any, class_names: list[str]) -> ImageSet:
    """Build an ImageSet from uint8 (N, H, W) or (N, H, W, C) images and integer labels."""
    array = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    return ImageSet(
        images=torch.from_numpy(np.ascontiguousarray(array, dtype=np.uint8)),
        labels=torch.as_tensor(np.asarray(labels), dtype=torch.long),
        class_names=list(class_names),
    )


DIGITS_TEST_PER_CLASS = 30
DIGITS_SPLIT_SEED = 0


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 (N, 8, 8), labels, and the fixed test mask (loaded once)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    test = np.zeros(len(labels), dtype=bool)
    for label in range(10):
        indices = np.flatnonzero(labels == label)
        test[rng.permutation(indices)[:DIGITS_TEST_PER_CLASS]] = True
    return images, labels, test


class Digits(DataSource):
    """scikit-learn's 1797 8x8 handwritten digits: embedded, offline, quick to train on.

    There is no official split: the test split is a fixed stratified sample of 30 images per class
    (300 in all, chosen with seed 0), and the train split is the other 1497, both in original order.
    """

    def __init__(self) -> None:
        """Take no arguments; defined so that the spec records the class."""

    @property
    def name(self) -> str:
        """Always ``"digits"``."""
        return "digits"

    def _load(self, split: str) -> ImageSet:
        images, labels, test = _digits()
        keep = test if split == "test" else ~test
        return image_set_from_numpy(images[keep], labels[keep], [str(d) for d in range(10)])


FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def open_torchvision_dataset(cls_name: str, data_dir: str, split: str, download: bool) -> Any:
    """Open a torchvision dataset, or return None when its files are missing (or the download failed)."""
    import torchvision.datasets

    try:
        return getattr(torchvision.datasets, cls_name)(data_dir, train=split == "train", download=download)
    except (RuntimeError, OSError):
        return None


class FashionMNIST(DataSource):
    """Fashion-MNIST (60000 train / 10000 test, 28x28 grey): IDX files in ``root``, else torchvision's copy.

    ``root`` defaults to where Debian's ``dataset-fashion-mnist`` package installs the files; when
    they are not there, torchvision's copy under ``data_dir`` is used (downloaded if ``download``).
    """

    def __init__(
        self, root: str = "/usr/share/datasets/fashion-mnist", data_dir: str = "data", download: bool = False
    ) -> None:
        self.root = root
        self.data_dir = data_dir
        self.download = download

    @property
    def name(self) -> str:
        """Always ``"fashion_mnist"``."""
        return "fashion_mnist"

    def _load(self, split: str) -> ImageSet:
        paths = [Path(self.root) / file for file in FASHION_MNIST_FILES[split]]
        if all(path.is_file() for path in paths):
            images, labels = read_idx_pair(*paths)
            return image_set_from_numpy(images, labels, FASHION_MNIST_CLASSES)
        dataset = open_torchvision_dataset("FashionMNIST", self.data_dir, split, self.download)
        if dataset is None:
            raise ConfigError(
                f"Fashion-MNIST files were not found in {self.root!r} (expected "
                f"{', '.join(FASHION_MNIST_FILES[split])}) or in {self.data_dir!r}"
                f"{' and could not be downloaded' if self.download else ''}; install Debian's "
                "dataset-fashion-mnist package (apt-get install dataset-fashion-mnist) or set "
                "download: true on a machine with internet access."
            )
        return image_set_from_numpy(dataset.data.numpy(), dataset.targets, FASHION_MNIST_CLASSES)


TORCHVISION_DATASETS = {"MNIST": "mnist"}
OWN_SOURCES = {"CIFAR10": "CIFAR10", "FashionMNIST": "FashionMNIST"}  # data sets with a source of their own


class TorchvisionDataset(DataSource):
    """A torchvision dataset by class name (MNIST), stored under ``data_dir``."""

    def __init__(self, name: str, data_dir: str = "data", download: bool = False) -> None:
        if name in OWN_SOURCES:
            raise ConfigError(
                f"{name} has a source of its own: use class_path: lightning_diffusion.data."
                f"{OWN_SOURCES[name]} (it reads torchvision's files too)."
            )
        if name not in TORCHVISION_DATASETS:
            closest = did_you_mean(name, [*TORCHVISION_DATASETS, *OWN_SOURCES])
            raise ConfigError(
                f"unknown torchvision dataset {name!r}{closest}; the known ones are: "
                f"{', '.join(TORCHVISION_DATASETS)} (use CIFAR10 for CIFAR-10, FashionMNIST for "
                "Fashion-MNIST, ImageFolder for a folder of images)."
            )
        self.dataset_name = name
        self.data_dir = data_dir
        self.download = download

    @property
    def name(self) -> str:
        """``"mnist"``."""
        return TORCHVISION_DATASETS[self.dataset_name]

    def _load(self, split: str) -> ImageSet:
        dataset = open_torchvision_dataset(self.dataset_name, self.data_dir, split, self.download)
        if dataset is None:
            raise ConfigError(
                f"the {self.dataset_name} files were not found in {self.data_dir!r}"
                f"{' and could not be downloaded' if self.download else ''}; set download: true on a "
                f"machine with internet access, or copy torchvision's {self.dataset_name} folder there."
            )
        data = dataset.data
        images = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
        return image_set_from_numpy(images, dataset.targets, dataset.classes)
