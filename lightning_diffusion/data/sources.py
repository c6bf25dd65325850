"""Data sources: where labelled (optionally captioned) images come from, as uint8 tensors.

A source is ``Configurable`` so a checkpoint records which data a model was trained on; ``load``
returns a whole split in memory as an ``ImageSet``. The datamodule turns that into batches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from lightning_diffusion.config import ConfigError, Configurable
from lightning_diffusion.data.idx import read_idx_pair

SPLITS = ("train", "test")


@dataclass
class ImageSet:
    """One split of a source: uint8 images (N, C, H, W), long labels (N,), class names, captions, and
    attributes: long (N, A) indices into the value names ``attribute_values`` lists per attribute name."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    captions: list[str] | None = None
    attributes: torch.Tensor | None = None
    attribute_values: dict[str, list[str]] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
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


def _from_numpy(images: np.ndarray, labels: Any, class_names: list[str]) -> ImageSet:
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
        return _from_numpy(images[keep], labels[keep], [str(d) for d in range(10)])


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


def _torchvision_data(cls_name: str, data_dir: str, split: str, download: bool) -> Any:
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
            return _from_numpy(images, labels, FASHION_MNIST_CLASSES)
        dataset = _torchvision_data("FashionMNIST", self.data_dir, split, self.download)
        if dataset is None:
            raise ConfigError(
                f"Fashion-MNIST files were not found in {self.root!r} (expected "
                f"{', '.join(FASHION_MNIST_FILES[split])}) or in {self.data_dir!r}"
                f"{' and could not be downloaded' if self.download else ''}; install Debian's "
                "dataset-fashion-mnist package (apt-get install dataset-fashion-mnist) or set "
                "download: true on a machine with internet access."
            )
        return _from_numpy(dataset.data.numpy(), dataset.targets, FASHION_MNIST_CLASSES)


TORCHVISION_DATASETS = {"MNIST": "mnist", "CIFAR10": "cifar10"}


class TorchvisionDataset(DataSource):
    """A torchvision dataset by class name (MNIST or CIFAR10), stored under ``data_dir``."""

    def __init__(self, name: str, data_dir: str = "data", download: bool = False) -> None:
        if name not in TORCHVISION_DATASETS:
            raise ConfigError(
                f"unknown torchvision dataset {name!r}; the known ones are: "
                f"{', '.join(TORCHVISION_DATASETS)} (use FashionMNIST for Fashion-MNIST)."
            )
        self.dataset_name = name
        self.data_dir = data_dir
        self.download = download

    @property
    def name(self) -> str:
        """``"mnist"`` or ``"cifar10"``."""
        return TORCHVISION_DATASETS[self.dataset_name]

    def _load(self, split: str) -> ImageSet:
        dataset = _torchvision_data(self.dataset_name, self.data_dir, split, self.download)
        if dataset is None:
            raise ConfigError(
                f"the {self.dataset_name} files were not found in {self.data_dir!r}"
                f"{' and could not be downloaded' if self.download else ''}; set download: true on a "
                f"machine with internet access, or copy torchvision's {self.dataset_name} folder there."
            )
        data = dataset.data
        images = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
        return _from_numpy(images, dataset.targets, dataset.classes)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


class ImageFolder(DataSource):
    """Images in one sub-folder per class (``root/<class>/<image>``), optionally captioned.

    Class names are the sorted sub-folder names. When ``root`` has both ``train/`` and ``test/``
    sub-folders, each holds a split laid out as above; otherwise both splits are the whole folder.
    ``captions_file`` (relative to ``root`` or absolute) is a JSON object mapping each image's path
    relative to ``root`` (e.g. ``"cat/001.png"`` or ``"train/cat/001.png"``) to its caption.
    """

    def __init__(
        self, root: str, image_size: int | None = None, channels: int = 3, captions_file: str | None = None
    ) -> None:
        if channels not in (1, 3):
            raise ConfigError(f"ImageFolder channels must be 1 (grey) or 3 (RGB), got {channels}.")
        if image_size is not None and image_size < 1:
            raise ConfigError(
                f"ImageFolder image_size must be a positive number of pixels, got {image_size}."
            )
        self.root = root
        self.image_size = image_size
        self.channels = channels
        self.captions_file = captions_file

    @property
    def name(self) -> str:
        """``"folder:<root>"``."""
        return f"folder:{self.root}"

    def _split_dir(self, split: str) -> Path:
        root = Path(self.root)
        if not root.is_dir():
            raise ConfigError(
                f"image folder {self.root!r} does not exist; set root to a folder holding one "
                "sub-folder of images per class."
            )
        if (root / "train").is_dir() and (root / "test").is_dir():
            return root / split
        return root

    def _class_names(self, directory: Path) -> list[str]:
        names = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not names:
            raise ConfigError(
                f"image folder {str(directory)!r} has no class sub-folders; put each class's images "
                "in its own sub-folder (<root>/<class>/<image>)."
            )
        return names

    def _read(self, path: Path) -> np.ndarray:
        """One image as uint8 (C, H, W), converted to the channel count and resized if asked."""
        try:
            with Image.open(path) as image:
                image = image.convert("L" if self.channels == 1 else "RGB")
                if self.image_size is not None:
                    size = (self.image_size, self.image_size)
                    image = image.resize(size, Image.Resampling.BILINEAR)
                array = np.asarray(image, dtype=np.uint8)
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot read image {str(path)!r} ({error}); remove or replace it.") from None
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)

    def _captions(self) -> dict[str, str]:
        path = Path(self.root) / self.captions_file
        try:
            captions = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"cannot read captions file {str(path)!r} ({error}); it must be a JSON object mapping "
                "image paths relative to root to captions."
            ) from None
        if not isinstance(captions, dict) or not all(isinstance(c, str) for c in captions.values()):
            raise ConfigError(
                f"captions file {str(path)!r} must be a JSON object mapping image paths relative to "
                'root (e.g. "cat/001.png") to caption strings.'
            )
        return captions

    def _load(self, split: str) -> ImageSet:
        directory = self._split_dir(split)
        class_names = self._class_names(directory)
        if split == "test" and directory != Path(self.root):
            train_names = self._class_names(Path(self.root) / "train")
            if class_names != train_names:
                raise ConfigError(
                    f"the test classes {class_names} of {self.root!r} differ from its train classes "
                    f"{train_names}; give train/ and test/ the same class sub-folders."
                )
        files = [
            (path, label)
            for label, class_name in enumerate(class_names)
            for path in sorted((directory / class_name).iterdir())
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not files:
            raise ConfigError(
                f"image folder {str(directory)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                "in its class sub-folders; add some or point root elsewhere."
            )
        arrays = [self._read(path) for path, _ in files]
        shapes = {array.shape for array in arrays}
        if len(shapes) > 1:
            first = arrays[0].shape
            other = next(i for i, a in enumerate(arrays) if a.shape != first)
            raise ConfigError(
                f"the images in {str(directory)!r} have different sizes (e.g. {files[0][0].name} is "
                f"{first[1]}x{first[2]}, {files[other][0].name} is {arrays[other].shape[1]}x"
                f"{arrays[other].shape[2]}); set image_size to resize them all to one square size."
            )
        captions = None
        if self.captions_file is not None:
            table = self._captions()
            keys = [path.relative_to(self.root).as_posix() for path, _ in files]
            missing = [key for key in keys if key not in table]
            if missing:
                raise ConfigError(
                    f"{len(missing)} images in {self.root!r} have no caption in {self.captions_file!r} "
                    f"(e.g. {', '.join(missing[:5])}); add an entry for each image, keyed by its path "
                    "relative to root."
                )
            captions = [table[key] for key in keys]
        return ImageSet(
            images=torch.from_numpy(np.stack(arrays)),
            labels=torch.tensor([label for _, label in files], dtype=torch.long),
            class_names=class_names,
            captions=captions,
        )
