"""The LightningDataModule every component trains on: a data source as in-memory [-1, 1] tensors.

Batches follow the project's contract: ``"image"`` float (B, C, H, W) in [-1, 1], ``"label"`` long
(B,), and ``"caption"`` list[str] only when the source has captions.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from lightning_diffusion.config import ConfigError, instantiate
from lightning_diffusion.data.sources import DataSource, Digits, ImageSet

RESIZE_MODES = ("pad", "resize")
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


class ImageDictDataset(Dataset):
    """Items ``{"image", "label"[, "caption"]}`` from prepared tensors, so default collate gives batches."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, captions: list[str] | None) -> None:
        self.images = images
        self.labels = labels
        self.captions = captions

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        item: dict[str, torch.Tensor | str] = {"image": self.images[index], "label": self.labels[index]}
        if self.captions is not None:
            item["caption"] = self.captions[index]
        return item


class DiffusionDataModule(pl.LightningDataModule):
    """Loads a data source once, converts it to [-1, 1] at ``image_size``, and splits off validation.

    The source's train split is divided into train and val (``val_fraction`` of it, chosen with
    ``seed``); its test split is the test set. ``resize="pad"`` pads smaller images with -1 (the
    background), ``resize="resize"`` rescales them bilinearly.
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
    ) -> None:
        super().__init__()
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
        """(C, H, W) of the images in batches, after padding or resizing."""
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

    def _transform(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) to float in [-1, 1] at ``image_shape``."""
        _, height, width = self.image_shape
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
                self._datasets["test"] = ImageDictDataset(
                    self._transform(source.images), source.labels, source.captions
                )
            else:
                source = self._source_split("train")
                images = self._transform(source.images)
                for name, indices in zip(("train", "val"), self._train_val_indices(), strict=True):
                    captions = source.captions
                    self._datasets[name] = ImageDictDataset(
                        images[indices],
                        source.labels[indices],
                        None if captions is None else [captions[i] for i in indices.tolist()],
                    )
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

    @classmethod
    def from_hparams(cls, hparams: dict) -> DiffusionDataModule:
        """Rebuild the data module a checkpoint was trained on from its saved hyperparameters."""
        return cls(**{**hparams, "source": instantiate(hparams["source"])})

    def reference_id(self) -> dict:
        """What determines the real images of each split (for cache keys): source, size, split seed."""
        return {key: self.hparams[key] for key in ("source", "image_size", "resize", "val_fraction", "seed")}
