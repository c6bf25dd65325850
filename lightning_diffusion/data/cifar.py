"""CIFAR-10 read straight from torchvision's on-disk format (``cifar-10-batches-py``).

torchvision's ``CIFAR10`` class refuses files whose MD5 differs from its list, so a copy made
elsewhere (or a stand-in a test writes) would not open through it; the format itself is simple: pickled
dicts with ``data`` (N, 3072) uint8 rows (R, G, B planes of 32x32) and ``labels``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from lightning_diffusion.config import ConfigError
from lightning_diffusion.data.sources import (
    DataSource,
    ImageSet,
    image_set_from_numpy,
    open_torchvision_dataset,
)

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_BATCHES = {"train": [f"data_batch_{index}" for index in range(1, 6)], "test": ["test_batch"]}
CIFAR10_META = "batches.meta"
CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def _unpickle(path: Path) -> Any:
    try:
        with open(path, "rb") as file:
            return pickle.load(file, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as error:
        raise ConfigError(
            f"cannot read the CIFAR-10 batch {str(path)!r} ({error}); replace {path.parent} with a fresh "
            "copy of cifar-10-python.tar.gz."
        ) from None


def read_cifar_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    """One pickled batch as uint8 (N, 32, 32, 3) images and its labels, checking shapes and types."""
    batch = _unpickle(path)
    data = batch.get("data") if isinstance(batch, dict) else None
    labels = batch.get("labels") if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ConfigError(
            f"{str(path)!r} is not a CIFAR-10 batch: its 'data' must be a uint8 array (N, 3072); replace "
            f"{path.parent} with a fresh copy of cifar-10-python.tar.gz."
        )
    if labels is None or len(labels) != len(data):
        raise ConfigError(
            f"{str(path)!r} holds {len(data)} images but {0 if labels is None else len(labels)} labels; "
            f"replace {path.parent} with a fresh copy of cifar-10-python.tar.gz."
        )
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), list(labels)


class CIFAR10(DataSource):
    """CIFAR-10 (50000 train / 10000 test, 32x32 RGB, 10 classes) from ``data_dir/cifar-10-batches-py``.

    The batches are read directly (whatever their checksum); ``download: true`` fetches them with
    torchvision's downloader when they are missing. The whole split (150 MB for train) stays in memory.
    """

    def __init__(self, data_dir: str = "data", download: bool = False) -> None:
        self.data_dir = data_dir
        self.download = download

    @property
    def name(self) -> str:
        """Always ``"cifar10"``."""
        return "cifar10"

    def _paths(self, split: str) -> list[Path]:
        folder = Path(self.data_dir) / CIFAR10_FOLDER
        paths = [folder / name for name in CIFAR10_BATCHES[split]]
        if not all(path.is_file() for path in paths) and self.download:
            open_torchvision_dataset("CIFAR10", self.data_dir, split, download=True)
        missing = [path.name for path in paths if not path.is_file()]
        if missing:
            raise ConfigError(
                f"CIFAR-10 was not found: {folder} lacks {', '.join(missing)}"
                f"{' and the download failed' if self.download else ''}. Set "
                "data.init_args.source.init_args.download: true on a machine with internet access, or "
                "unpack cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) into "
                f"{self.data_dir!r}, or point data_dir at the folder that holds {CIFAR10_FOLDER}/."
            )
        return paths

    def _class_names(self) -> list[str]:
        meta = Path(self.data_dir) / CIFAR10_FOLDER / CIFAR10_META
        if not meta.is_file():
            return list(CIFAR10_CLASSES)
        names = _unpickle(meta).get("label_names")
        if not isinstance(names, list) or len(names) != len(CIFAR10_CLASSES):
            raise ConfigError(f"{str(meta)!r} must hold 10 'label_names'; replace it with a fresh copy.")
        return names

    def _load(self, split: str) -> ImageSet:
        batches = [read_cifar_batch(path) for path in self._paths(split)]
        images = np.concatenate([images for images, _ in batches])
        labels = [label for _, batch_labels in batches for label in batch_labels]
        if labels and not 0 <= min(labels) <= max(labels) < len(CIFAR10_CLASSES):
            raise ConfigError(f"CIFAR-10 labels must lie in [0, 10); {self.data_dir!r} holds others.")
        return image_set_from_numpy(images, labels, self._class_names())
