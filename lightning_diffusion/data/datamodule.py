"""The LightningDataModule every component trains on: a data source's uint8 items as [-1, 1] batches.

Batches follow the project's contract: ``"image"`` float (B, C, H, W) in [-1, 1], ``"label"`` long
(B,), ``"caption"`` list[str] only when the source has captions, and ``"attributes"`` long (B, A) only
when it has attributes (e.g. ``Shapes``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

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
    """Items ``{"image", "label"[, "caption"][, "attributes"]}`` of a source split (those at ``indices``
    when given), with uint8 images read one at a time: ``BatchTransform`` makes them batches."""

    def __init__(self, data: ImageSet, indices: torch.Tensor | None = None) -> None:
        self.data = data
        self.indices = torch.arange(len(data)) if indices is None else indices

    @property
    def labels(self) -> torch.Tensor:
        """The labels of the items, in order."""
        return self.data.labels[self.indices]

    @property
    def captions(self) -> list[str] | None:
        """The captions of the items, in order, or None when the source has none."""
        captions = self.data.captions
        return None if captions is None else [captions[i] for i in self.indices.tolist()]

    @property
    def attributes(self) -> torch.Tensor | None:
        """The attributes (N, A) of the items, in order, or None when the source has none."""
        return None if self.data.attributes is None else self.data.attributes[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        source_index = int(self.indices[index])
        data = self.data
        item: dict[str, torch.Tensor | str] = {
            "image": data.images[source_index],
            "label": data.labels[source_index],
        }
        if data.captions is not None:
            item["caption"] = data.captions[source_index]
        if data.attributes is not None:
            item["attributes"] = data.attributes[source_index]
        return item


class BatchTransform:
    """The collate function of every loader: stacks items, then turns their uint8 images into float
    in [-1, 1] at ``size`` (padding with -1 or resizing), shrunk to ``downsample_to`` and, when
    ``flip``, mirrored left-right with probability 1/2 each. It runs per batch in the DataLoader
    workers, so no split is ever converted as a whole."""

    def __init__(
        self,
        size: tuple[int, int],
        resize: str = "pad",
        downsample_to: int | None = None,
        downsample: str = "area",
        flip: bool = False,
    ) -> None:
        self.size = size
        self.resize = resize
        self.downsample_to = downsample_to
        self.downsample = downsample
        self.flip = flip

    def __call__(self, items: list[dict]) -> dict:
        batch = default_collate(items)
        batch["image"] = self.images(batch["image"])
        return batch

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) to the float (B, C, h, w) images of batches."""
        result = self._full_size(images.to(torch.float32).div_(127.5).sub_(1.0))
        if self.downsample_to is not None:
            result = downsample_images(result, self.downsample_to, self.downsample)
        if self.flip:
            mirrored = torch.rand(len(result)) < 0.5
            result[mirrored] = result[mirrored].flip(-1)
        return result

    def _full_size(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] padded (with -1, the background) or resized to ``size``."""
        height, width = self.size
        if images.shape[-2:] == (height, width):
            return images
        if self.resize == "pad":
            top, left = (height - images.shape[-2]) // 2, (width - images.shape[-1]) // 2
            padding = (left, width - images.shape[-1] - left, top, height - images.shape[-2] - top)
            return F.pad(images, padding, value=-1.0)
        resized = F.interpolate(images, size=(height, width), mode="bilinear", antialias=True)
        return resized.clamp_(-1.0, 1.0)


class DiffusionDataModule(pl.LightningDataModule):
    """Serves a data source as batches in [-1, 1] at ``image_size`` and splits off validation.

    The source's train split is divided into train and val (``val_fraction`` of it, chosen with
    ``seed``); its test split is the test set. Items stay uint8 (in memory for the small sources, read
    from files for an ``ImageFolder``) and each batch is converted on its own (``BatchTransform``):
    ``resize="pad"`` pads smaller images with -1 (the background), ``resize="resize"`` rescales them
    bilinearly; ``downsample_to`` then shrinks them by ``downsample`` (area: box filter) to the low
    resolution a cascade's base stage learns, exactly as an upsampler trained on the full-size data
    makes its low-res condition. ``random_flip`` mirrors training images left-right (DDPM, ADM).

    Loader settings that keep a GPU fed: ``num_workers`` processes read and convert batches,
    ``pin_memory`` (None: on when the trainer runs on CUDA) pages them for fast copies,
    ``persistent_workers`` keeps the workers between epochs and ``prefetch_factor`` batches per worker
    are read ahead (torch's default when None); the last two apply only with workers.
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
        random_flip: bool = False,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
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
        for name, value in (
            ("batch_size", batch_size),
            ("eval_batch_size", eval_batch_size),
            ("prefetch_factor", prefetch_factor),
        ):
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
        self.random_flip = random_flip
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.prefetch_factor = prefetch_factor
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
                "random_flip": random_flip,
                "pin_memory": pin_memory,
                "persistent_workers": persistent_workers,
                "prefetch_factor": prefetch_factor,
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

    def batch_transform(self, flip: bool = False) -> BatchTransform:
        """The collate function that makes this data's batches (``flip``: with random mirroring)."""
        _, height, width = self._full_size_shape
        self.image_shape  # noqa: B018 (checks that downsample_to divides the size)
        return BatchTransform((height, width), self.resize, self.downsample_to, self.downsample, flip)

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
        """The items of "train", "val" or "test", listed once (images are read per item)."""
        if split not in ("train", "val", "test"):
            raise ConfigError(f"unknown split {split!r}; use 'train', 'val' or 'test'.")
        if split not in self._datasets:
            if split == "test":
                self._datasets["test"] = ImageDictDataset(self._source_split("test"))
            else:
                source = self._source_split("train")
                for name, indices in zip(("train", "val"), self._train_val_indices(), strict=True):
                    self._datasets[name] = ImageDictDataset(source, indices)
        return self._datasets[split]

    def setup(self, stage: str | None = None) -> None:
        """Prepare the splits ``stage`` needs (all of them when ``stage`` is None); for ``fit``, refuse a
        training split smaller than one batch."""
        self.batch_transform()  # size checks before any worker starts
        for split in STAGE_SPLITS.get(stage, ("train", "val", "test")):
            self._dataset(split)
        if stage == "fit":
            self._check_one_batch()

    def _check_one_batch(self) -> None:
        """A training split with fewer images than one batch (on every rank) would train on partial
        batches of another size than configured, or, with the last partial batch dropped, not at all."""
        count = len(self._dataset("train"))
        ranks = self.trainer.world_size if self.trainer is not None else 1
        if count >= self.batch_size * ranks:
            return
        per_rank = f" on each of {ranks} ranks" if ranks > 1 else ""
        total = len(self._source_split("train"))
        raise ConfigError(
            f"the training split of {self.source.name} has {count} images, fewer than one batch of "
            f"{self.batch_size}{per_rank}; lower data.init_args.batch_size to at most "
            f"{max(1, count // ranks)}, or give the source more images (val_fraction {self.val_fraction} "
            f"holds out {total - count} of its {total})."
        )

    def _uses_cuda(self) -> bool:
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def _loader(self, dataset: Dataset, batch_size: int, flip: bool = False, **kwargs: Any) -> DataLoader:
        workers = self.num_workers
        pin_memory = self._uses_cuda() if self.pin_memory is None else self.pin_memory
        worker_options = (
            {"persistent_workers": self.persistent_workers, "prefetch_factor": self.prefetch_factor}
            if workers > 0
            else {}
        )
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=workers,
            collate_fn=self.batch_transform(flip),
            pin_memory=pin_memory,
            **worker_options,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded by ``seed``) full train batches (fit refuses a split smaller than one batch)."""
        dataset = self._dataset("train")
        return self._loader(
            dataset,
            self.batch_size,
            flip=self.random_flip,
            shuffle=True,
            generator=torch.Generator().manual_seed(self.seed),
            drop_last=True,
        )

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        return self._loader(self._dataset("val"), self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order."""
        return self._loader(self._dataset("test"), self.eval_batch_size)

    def real_batches(self, split: str, n: int | None = None) -> Iterator[torch.Tensor]:
        """The first ``n`` (all when None; fewer if the split is smaller) images of a split, in [-1, 1],
        batch by batch: only those are read, through the same loader path as training, and no more than
        one batch is held at a time (a 50,000-image reference set streams)."""
        dataset = self._dataset(split)
        count = len(dataset) if n is None else min(n, len(dataset))
        for batch in self._loader(Subset(dataset, range(count)), self.eval_batch_size):
            yield batch["image"]

    def real_images(self, split: str, n: int | None = None) -> torch.Tensor:
        """``real_batches(split, n)`` as one tensor (N, C, H, W)."""
        batches = list(self.real_batches(split, n))
        return torch.cat(batches) if batches else torch.empty(0, *self.image_shape)

    def labels(self, split: str, n: int | None = None) -> torch.Tensor:
        """The labels matching ``real_images(split, n)``."""
        return self._dataset(split).labels[:n]

    def captions(self, split: str, n: int | None = None) -> list[str]:
        """The captions matching ``real_images(split, n)``; a ConfigError when the source has none."""
        captions = self._dataset(split).captions
        if captions is None:
            raise ConfigError(f"the data source {self.source.name} has no captions; use {CAPTIONED_SOURCES}.")
        return captions[:n]

    def attributes(self, split: str, n: int | None = None) -> torch.Tensor:
        """The attributes (N, A) matching ``real_images(split, n)``; a ConfigError if the source has none."""
        attributes = self._dataset(split).attributes
        if attributes is None:
            raise ConfigError(f"the data source {self.source.name} has no attributes; use Shapes.")
        return attributes[:n]

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
