"""A folder of images, one sub-folder per class: listed at setup, each image decoded when it is read.

Listing 1.28M ImageNet files takes seconds and a few dozen bytes per image; decoding happens in the
DataLoader workers, so start-up time and memory per rank do not grow with the images' pixels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lightning_diffusion.config import ConfigError
from lightning_diffusion.data.sources import DataSource, ImageSet

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
HELD_OUT_FOLDERS = ("test", "val")  # the held-out split's folder beside train/ (ImageNet ships val/)
FOLDER_LAYOUT = (
    "one sub-folder of images per class (<root>/<class>/<image>), or train/ and test/ (or val/) "
    "folders laid out that way, as ImageNet's train/<wnid>/*.JPEG and val/<wnid>/*.JPEG"
)


def read_image(path: str, channels: int, image_size: int | None, crop: bool) -> np.ndarray:
    """One image file as uint8 (C, H, W) with ``channels`` channels; with ``image_size``, resized
    (bicubic, antialiased when shrinking) to a square, after cutting its centre square when ``crop``."""
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if image_size is not None:
                width, height = image.size
                side = min(width, height)
                left, top = (width - side) // 2, (height - side) // 2
                box = (left, top, left + side, top + side) if crop else None
                image = image.resize((image_size, image_size), Image.Resampling.BICUBIC, box=box)
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read image {path!r} ({error}); remove or replace it.") from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


class ImageFiles:
    """The images of one split of a folder, decoded on access (an ``ImageReader``).

    File paths are one NumPy byte-string array, not a list of Python strings, so forked DataLoader
    workers share its pages instead of copying them as reference counts change."""

    dtype = torch.uint8

    def __init__(
        self, directory: Path, paths: np.ndarray, channels: int, image_size: int | None, crop: bool
    ) -> None:
        self.directory = str(directory)
        self.paths = paths
        self.channels, self.image_size, self.crop = channels, image_size, crop
        self.image_shape = self._decode(0).shape

    def path(self, index: int) -> str:
        """The file of image ``index``."""
        return os.path.join(self.directory, os.fsdecode(self.paths[index]))

    def _decode(self, index: int) -> np.ndarray:
        return read_image(self.path(index), self.channels, self.image_size, self.crop)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(N, C, H, W): the size of the first image (all are this size, or resized to ``image_size``)."""
        return (len(self.paths), *self.image_shape)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        array = self._decode(index)
        if array.shape != self.image_shape:
            _, height, width = self.image_shape
            raise ConfigError(
                f"the images in {self.directory!r} have different sizes ({self.path(0)} is {height}x{width}, "
                f"{self.path(index)} is {array.shape[1]}x{array.shape[2]}); set image_size to resize them "
                "all to one square size."
            )
        return torch.from_numpy(np.array(array, order="C"))  # a writable copy in C order


class ImageFolder(DataSource):
    """Images in one sub-folder per class (``root/<class>/<image>``), optionally captioned.

    Class names are the sorted sub-folder names. When ``root`` has a ``train/`` and a ``test/`` (or
    ``val/``, as ImageNet) sub-folder, each holds a split laid out as above; otherwise both splits are
    the whole folder. ``image_size`` resizes every image to a square (cutting its centre square first
    when ``crop``, as ADM prepares ImageNet). ``captions_file`` (relative to ``root`` or absolute) is a
    JSON object mapping each image's path relative to ``root`` (e.g. ``"cat/001.png"`` or
    ``"train/cat/001.png"``) to its caption.
    """

    def __init__(
        self,
        root: str,
        image_size: int | None = None,
        channels: int = 3,
        captions_file: str | None = None,
        crop: bool = False,
    ) -> None:
        if channels not in (1, 3):
            raise ConfigError(f"ImageFolder channels must be 1 (grey) or 3 (RGB), got {channels}.")
        if image_size is not None and image_size < 1:
            raise ConfigError(
                f"ImageFolder image_size must be a positive number of pixels, got {image_size}."
            )
        if crop and image_size is None:
            raise ConfigError("ImageFolder crop cuts the centre square before resizing: set image_size too.")
        self.root = root
        self.image_size = image_size
        self.channels = channels
        self.captions_file = captions_file
        self.crop = crop

    @property
    def name(self) -> str:
        """``"folder:<root>"``."""
        return f"folder:{self.root}"

    def _split_dir(self, split: str) -> Path:
        root = Path(self.root)
        if not root.is_dir():
            state = "is a file, not a folder" if root.exists() else "does not exist"
            raise ConfigError(
                f"image folder {self.root!r} {state}; set root (data.init_args.source.init_args.root) "
                f"to a folder holding {FOLDER_LAYOUT}."
            )
        held_out = next((root / name for name in HELD_OUT_FOLDERS if (root / name).is_dir()), None)
        if (root / "train").is_dir() and held_out is not None:
            return root / "train" if split == "train" else held_out
        return root

    def _class_names(self, directory: Path) -> list[str]:
        names = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not names:
            raise ConfigError(
                f"image folder {str(directory)!r} has no class sub-folders; it must hold {FOLDER_LAYOUT}."
            )
        return names

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

    def _list(self, directory: Path, class_names: list[str]) -> tuple[list[str], list[int]]:
        """Image paths relative to ``directory`` ("<class>/<file>", sorted within each class) and labels."""
        paths, labels = [], []
        for label, class_name in enumerate(class_names):
            with os.scandir(directory / class_name) as entries:
                names = sorted(
                    entry.name
                    for entry in entries
                    if entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES
                )
            paths += [f"{class_name}/{name}" for name in names]
            labels += [label] * len(names)
        return paths, labels

    def _load(self, split: str) -> ImageSet:
        directory = self._split_dir(split)
        class_names = self._class_names(directory)
        if split == "test" and directory != Path(self.root):
            train_names = self._class_names(Path(self.root) / "train")
            if class_names != train_names:
                raise ConfigError(
                    f"the {directory.name} classes {class_names} of {self.root!r} differ from its train "
                    f"classes {train_names}; give train/ and {directory.name}/ the same class sub-folders."
                )
        paths, labels = self._list(directory, class_names)
        if not paths:
            raise ConfigError(
                f"image folder {str(directory)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                "in its class sub-folders; add some or point root elsewhere."
            )
        captions = None
        if self.captions_file is not None:
            table = self._captions()
            prefix = directory.relative_to(self.root).as_posix()
            keys = [path if prefix == "." else f"{prefix}/{path}" for path in paths]
            missing = [key for key in keys if key not in table]
            if missing:
                raise ConfigError(
                    f"{len(missing)} images in {self.root!r} have no caption in {self.captions_file!r} "
                    f"(e.g. {', '.join(missing[:5])}); add an entry for each image, keyed by its path "
                    "relative to root."
                )
            captions = [table[key] for key in keys]
        encoded = np.array([os.fsencode(path) for path in paths])
        return ImageSet(
            images=ImageFiles(directory, encoded, self.channels, self.image_size, self.crop),
            labels=torch.tensor(labels, dtype=torch.long),
            class_names=class_names,
            captions=captions,
        )
