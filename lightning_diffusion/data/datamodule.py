"""The LightningDataModule every component trains on: a data source as in-memory [-1, 1] tensors.

Batches follow the project's contract: ``"image"`` float (B, C, H, W) in [-1, 1], ``"label"`` long
(B,), ``"caption"`` list[str] only when the source has captions, and ``"attributes"`` long (B, A) only
when it has attributes (e.g. ``Shapes``).
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from lightning_diffusion.config import ConfigError, instantiate
from lightning_diffusion.data.sources import DataSource, Digits, ImageSet
from lightning_diffusion.nets.text import caption_vocabulary
from lightning_diffusion.resampling import check_downsample_mode, downsample_images

RESIZE_MODES = ("pad", "resize")
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
CAPTIONED_SOURCES = (
    "Shapes, Captioned (wrapping a labelled source, e.g. Captioned(FashionMNIST())) or ImageFolder with "
    "a captions_file"
)


class ImageDictDataset(Dataset):
    """Items ``{"image", "label"[, "caption"][, "attributes"]}`` from prepared tensors, so default
    collate gives batches."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        captions: list[str] | None,
        attributes: torch.Tensor | None = None,
    ) -> None:
        self.images = images
        self.labels = labels
        self.captions = captions
        self.attributes = attributes

    @classmethod
    def select(
        cls, images: torch.Tensor, data: ImageSet, indices: torch.Tensor | None = None
    ) -> ImageDictDataset:
        """Prepared ``images`` with the labels, captions and attributes of ``data`` (those at ``indices``
        when given; ``images`` are already selected)."""
        if indices is None:
            return cls(images, data.labels, data.captions, data.attributes)
        captions = None if data.captions is None else [data.captions[i] for i in indices.tolist()]
        attributes = None if data.attributes is None else data.attributes[indices]
        return cls(images, data.labels[indices], captions, attributes)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        item: dict[str, torch.Tensor | str] = {"image": self.images[index], "label": self.labels[index]}
        if self.captions is not None:
            item["caption"] = self.captions[index]
        if self.attributes is not None:
            item["attributes"] = self.attributes[index]
        return item


class DiffusionDataModule(pl.LightningDataModule):
    """Loads a data source once, converts it to [-1, 1] at ``image_size``, and splits off validation.

    The source's train split is divided into train and val (``val_fraction`` of it, chosen with
    ``seed``); its test split is the test set. ``resize="pad"`` pads smaller images with -1 (the
    background), ``resize="resize"`` rescales them bilinearly. ``downsample_to`` then shrinks them by
    ``downsample`` (area: box filter) to the low resolution a cascade's base stage learns, exactly as an
    upsampler trained on the full-size data makes its low-res condition.
    """

    def __init__(
        self,
        source: DataSource | None = None,
        image_size: int | None = None,
        resize: str = "pad",
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
        downsample_to: int | None = None,
        downsample: str = "area",
    ) -> None:
        super().__init__()
        check_downsample_mode(downsample)
        if resize not in RESIZE_MODES:
            raise ConfigError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}.")
        if not 0 <= val_fraction < 1:
            raise ConfigError(
                f"val_fraction must lie in [0, 1) (the share of the train split held out for "
                f"validation), got {val_fraction}."
            )
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}.")
        if image_size is not None and image_size < 1:
            raise ConfigError(f"image_size must be a positive number of pixels, got {image_size}.")
        if num_workers < 0:
            raise ConfigError(f"num_workers must be 0 or more, got {num_workers}.")
        self.source = source if source is not None else Digits()
        self.image_size = image_size
        self.resize = resize
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.num_workers = num_workers
        self.downsample_to = downsample_to
        self.downsample = downsample
        self.save_hyperparameters(
            {
                "source": self.source.spec,
                "image_size": image_size,
                "resize": resize,
                "batch_size": batch_size,
                "eval_batch_size": eval_batch_size,
                "val_fraction": val_fraction,
                "seed": seed,
                "num_workers": num_workers,
                "downsample_to": downsample_to,
                "downsample": downsample,
            }
        )
        self._loaded: dict[str, ImageSet] = {}
        self._datasets: dict[str, ImageDictDataset] = {}

    def _source_split(self, split: str) -> ImageSet:
        """The source's "train" or "test" split, loaded once."""
        if split not in self._loaded:
            self._loaded[split] = self.source.load(split)
        return self._loaded[split]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images in batches, after padding or resizing and downsampling."""
        channels, height, width = self._full_size_shape
        if self.downsample_to is None:
            return channels, height, width
        if height % self.downsample_to or width % self.downsample_to:
            raise ConfigError(
                f"downsample_to {self.downsample_to} must divide the {height}x{width} images (an integer "
                "factor, as the upsampler's low_res_size)."
            )
        return channels, self.downsample_to, self.downsample_to

    @property
    def _full_size_shape(self) -> tuple[int, int, int]:
        """(C, H, W) after padding or resizing, before ``downsample_to``."""
        _, channels, height, width = self._source_split("train").images.shape
        if self.image_size is None:
            return channels, height, width
        if self.resize == "pad" and max(height, width) > self.image_size:
            raise ConfigError(
                f"image_size {self.image_size} is smaller than the {height}x{width} images of "
                f"{self.source.name}, so they cannot be padded to it; set resize: resize to shrink them "
                "or raise image_size."
            )
        return channels, self.image_size, self.image_size

    @property
    def class_names(self) -> list[str]:
        """The source's class names; label ``i`` is ``class_names[i]``."""
        return self._source_split("train").class_names

    @property
    def num_classes(self) -> int:
        """How many classes the labels range over."""
        return len(self.class_names)

    @property
    def has_captions(self) -> bool:
        """Whether items (and batches) carry a ``"caption"``."""
        return self._source_split("train").captions is not None

    @property
    def attribute_values(self) -> dict[str, list[str]] | None:
        """Attribute name -> value names (that batches' ``"attributes"`` index), or None if there are none."""
        return self._source_split("train").attribute_values

    def _transform(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) to float in [-1, 1] at ``image_shape``."""
        full_size = self._full_size(images)
        if self.downsample_to is None:
            return full_size
        return downsample_images(full_size, self.image_shape[-1], self.downsample)  # checks the factor

    def _full_size(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) to float in [-1, 1], padded or resized to ``image_size``."""
        _, height, width = self._full_size_shape
        result = images.to(torch.float32).div_(127.5).sub_(1.0)
        if result.shape[-2:] == (height, width):
            return result
        if self.resize == "pad":
            top, left = (height - result.shape[-2]) // 2, (width - result.shape[-1]) // 2
            padding = (left, width - result.shape[-1] - left, top, height - result.shape[-2] - top)
            return F.pad(result, padding, value=-1.0)
        resized = F.interpolate(result, size=(height, width), mode="bilinear", antialias=True)
        return resized.clamp_(-1.0, 1.0)

    def _train_val_indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Sorted train and val indices into the source's train split, chosen with ``seed``."""
        count = len(self._source_split("train"))
        val_count = round(count * self.val_fraction)
        if self.val_fraction > 0:
            val_count = max(val_count, 1)
        if val_count >= count:
            raise ConfigError(
                f"val_fraction {self.val_fraction} leaves no training images out of {count}; lower it."
            )
        order = torch.randperm(count, generator=torch.Generator().manual_seed(self.seed))
        return order[val_count:].sort().values, order[:val_count].sort().values

    def _dataset(self, split: str) -> ImageDictDataset:
        """The prepared dataset of "train", "val" or "test", built once."""
        if split not in ("train", "val", "test"):
            raise ConfigError(f"unknown split {split!r}; use 'train', 'val' or 'test'.")
        if split not in self._datasets:
            if split == "test":
                source = self._source_split("test")
                self._datasets["test"] = ImageDictDataset.select(self._transform(source.images), source)
            else:
                source = self._source_split("train")
                images = self._transform(source.images)
                for name, indices in zip(("train", "val"), self._train_val_indices(), strict=True):
                    self._datasets[name] = ImageDictDataset.select(images[indices], source, indices)
        return self._datasets[split]

    def setup(self, stage: str | None = None) -> None:
        """Prepare the splits ``stage`` needs (all of them when ``stage`` is None)."""
        for split in STAGE_SPLITS.get(stage, ("train", "val", "test")):
            self._dataset(split)

    def _loader(self, split: str, batch_size: int, **kwargs: object) -> DataLoader:
        return DataLoader(
            self._dataset(split),
            batch_size=batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded by ``seed``) train batches, dropping a last partial batch when one is full."""
        dataset = self._dataset("train")
        return self._loader(
            "train",
            self.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(self.seed),
            drop_last=len(dataset) >= self.batch_size,
        )

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        return self._loader("val", self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order."""
        return self._loader("test", self.eval_batch_size)

    def real_images(self, split: str, n: int | None = None) -> torch.Tensor:
        """The first ``n`` (all when None; fewer if the split is smaller) images of a split, in [-1, 1]."""
        images = self._dataset(split).images
        return images if n is None else images[:n]

    def labels(self, split: str, n: int | None = None) -> torch.Tensor:
        """The labels matching ``real_images(split, n)``."""
        labels = self._dataset(split).labels
        return labels if n is None else labels[:n]

    def captions(self, split: str, n: int | None = None) -> list[str]:
        """The captions matching ``real_images(split, n)``; a ConfigError when the source has none."""
        captions = self._dataset(split).captions
        if captions is None:
            raise ConfigError(f"the data source {self.source.name} has no captions; use {CAPTIONED_SOURCES}.")
        return captions if n is None else captions[:n]

    def attributes(self, split: str, n: int | None = None) -> torch.Tensor:
        """The attributes (N, A) matching ``real_images(split, n)``; a ConfigError if the source has none."""
        attributes = self._dataset(split).attributes
        if attributes is None:
            raise ConfigError(f"the data source {self.source.name} has no attributes; use Shapes.")
        return attributes if n is None else attributes[:n]

    def vocabulary(self) -> list[str]:
        """The sorted words of the source's train-split captions: the ``vocab`` of a text encoder for it."""
        captions = self._source_split("train").captions
        if captions is None:
            raise ConfigError(
                f"the data source {self.source.name} has no captions, so it has no vocabulary; use "
                f"{CAPTIONED_SOURCES}."
            )
        return caption_vocabulary(captions)

    @classmethod
    def from_hparams(cls, hparams: dict) -> DiffusionDataModule:
        """Rebuild the data module a checkpoint was trained on from its saved hyperparameters."""
        return cls(**{**hparams, "source": instantiate(hparams["source"])})

    def reference_id(self) -> dict:
        """What determines the real images of each split (for cache keys): source, size, split seed."""
        keys = ("source", "image_size", "resize", "val_fraction", "seed", "downsample_to", "downsample")
        return {key: self.hparams.get(key) for key in keys}
