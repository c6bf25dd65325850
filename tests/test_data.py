"""Tests for the data sources (digits, IDX Fashion-MNIST, image folders) and the datamodule's batches."""

from __future__ import annotations

import gzip
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_diffusion.config import ConfigError, instantiate
from lightning_diffusion.data import (
    CIFAR10,
    DataSource,
    DiffusionDataModule,
    Digits,
    FashionMNIST,
    ImageFiles,
    ImageFolder,
    ImageSet,
    TorchvisionDataset,
)
from lightning_diffusion.data.idx import read_idx

REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzip IDX file."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


def _tiny_fashion(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write a 12-image train and a 5-image test IDX pair with known values; return the arrays."""
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, prefix, count in (("train", "train", 12), ("test", "t10k", 5)):
        images = (np.arange(count * 28 * 28) * 7 + count).reshape(count, 28, 28) % 256
        labels = np.arange(count) % 10
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
        arrays[split] = (images.astype(np.uint8), labels)
    return arrays


def _write_png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (6, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


COLORS = {"cat/001.png": (255, 0, 0), "cat/002.png": (0, 255, 0), "dog/001.png": (0, 0, 255)}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two classes of 6x6 PNGs with a captions file."""
    root = tmp_path / "images"
    for name, color in COLORS.items():
        _write_png(root / name, color)
    (root / "captions.json").write_text(json.dumps({name: f"a photo of {name}" for name in COLORS}))
    return root


class CountingDigits(Digits):
    """Digits that counts how often each split is loaded."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []

    def _load(self, split: str) -> ImageSet:
        self.loads.append(split)
        return super()._load(split)


def test_digits_shapes_range_and_split() -> None:
    train, test = Digits().load("train"), Digits().load("test")
    assert train.images.shape == (1497, 1, 8, 8) and test.images.shape == (300, 1, 8, 8)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.long
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    assert train.class_names == [str(d) for d in range(10)]
    assert torch.bincount(test.labels, minlength=10).tolist() == [30] * 10
    again = Digits().load("test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)
    assert Digits().name == "digits"
    assert isinstance(instantiate(Digits().spec), Digits)


def test_bad_split_is_config_error() -> None:
    with pytest.raises(ConfigError, match="'train' or 'test'"):
        Digits().load("validation")


def test_fashion_mnist_reads_idx_files(tmp_path: Path) -> None:
    arrays = _tiny_fashion(tmp_path)
    source = FashionMNIST(root=str(tmp_path), data_dir=str(tmp_path / "unused"))
    for split, (images, labels) in arrays.items():
        loaded = source.load(split)
        assert loaded.images.shape == (len(images), 1, 28, 28)
        assert torch.equal(loaded.images[:, 0], torch.from_numpy(images))
        assert loaded.labels.tolist() == labels.tolist()
        assert loaded.class_names[0] == "T-shirt/top" and loaded.class_names[9] == "Ankle boot"
    assert source.name == "fashion_mnist"


def test_idx_corrupt_magic_and_truncation(tmp_path: Path) -> None:
    _tiny_fashion(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "rb") as file:
        data = bytearray(file.read())
    with gzip.open(path, "wb") as file:
        file.write(b"\x12\x34" + bytes(data[2:]))
    with pytest.raises(ConfigError, match="magic number"):
        FashionMNIST(root=str(tmp_path)).load("train")
    truncated = tmp_path / "short.gz"
    with gzip.open(truncated, "wb") as file:
        file.write(bytes(data[:-10]))
    with pytest.raises(ConfigError, match="shape"):
        read_idx(truncated)
    with pytest.raises(ConfigError, match="dimensions"):
        read_idx(tmp_path / "train-labels-idx1-ubyte.gz", ndim=3)


def test_fashion_mnist_missing_files_message(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    source = FashionMNIST(root=str(tmp_path / "nowhere"), data_dir=str(empty), download=False)
    with pytest.raises(ConfigError) as error:
        source.load("train")
    message = str(error.value)
    assert "apt-get install dataset-fashion-mnist" in message and "download" in message
    assert str(tmp_path / "nowhere") in message and str(empty) in message


@pytest.mark.skipif(
    not (REAL_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed at /usr/share/datasets/fashion-mnist",
)
def test_real_fashion_mnist() -> None:
    train = FashionMNIST().load("train")
    assert train.images.shape == (60000, 1, 28, 28)
    assert sorted(set(train.labels.tolist())) == list(range(10))


def test_torchvision_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"known ones are: MNIST .*CIFAR10 for CIFAR-10"):
        TorchvisionDataset("SVHN")
    with pytest.raises(ConfigError, match=r"lightning_diffusion\.data\.CIFAR10"):
        TorchvisionDataset("CIFAR10")
    source = TorchvisionDataset("MNIST", data_dir=str(tmp_path))
    assert source.name == "mnist"
    with pytest.raises(ConfigError, match="download: true"):
        source.load("test")


def test_image_folder_rgb_grey_and_captions(folder: Path) -> None:
    rgb = ImageFolder(str(folder), captions_file="captions.json").load("train")
    assert rgb.class_names == ["cat", "dog"]
    assert rgb.labels.tolist() == [0, 0, 1]
    assert rgb.images.shape == (3, 3, 6, 6) and rgb.images.dtype == torch.uint8
    for image, color in zip(rgb.images, COLORS.values(), strict=True):
        assert torch.equal(image, torch.tensor(color, dtype=torch.uint8)[:, None, None].expand(3, 6, 6))
    assert rgb.captions == [f"a photo of {name}" for name in COLORS]
    grey = ImageFolder(str(folder), channels=1).load("test")
    assert grey.images.shape == (3, 1, 6, 6) and grey.captions is None
    expected = [round(0.299 * r + 0.587 * g + 0.114 * b) for r, g, b in COLORS.values()]
    assert [int(image[0, 0, 0]) for image in grey.images] == pytest.approx(expected, abs=1)


def test_image_folder_errors(folder: Path, tmp_path: Path) -> None:
    _write_png(folder / "dog" / "002.png", (9, 9, 9))
    with pytest.raises(ConfigError, match=r"dog/002\.png"):
        ImageFolder(str(folder), captions_file="captions.json").load("train")
    _write_png(folder / "dog" / "003.png", (9, 9, 9), size=(8, 5))
    mixed = ImageFolder(str(folder)).load("train").images  # listed at once, read one at a time
    with pytest.raises(ConfigError, match=r"003\.png is 5x8\); set image_size"):
        [mixed[index] for index in range(len(mixed))]
    assert ImageFolder(str(folder), image_size=4).load("train").images.shape == (5, 3, 4, 4)
    with pytest.raises(ConfigError, match="does not exist"):
        ImageFolder(str(tmp_path / "missing")).load("train")
    with pytest.raises(ConfigError, match="channels"):
        ImageFolder(str(folder), channels=2)


def test_image_folder_train_test_layout(tmp_path: Path) -> None:
    for split, count in (("train", 3), ("test", 1)):
        for index in range(count):
            for name in ("a", "b"):
                _write_png(tmp_path / split / name / f"{index}.png", (index, 0, 0))
    source = ImageFolder(str(tmp_path))
    assert len(source.load("train")) == 6 and len(source.load("test")) == 2
    assert source.load("test").class_names == ["a", "b"]


def test_datamodule_batches_and_lazy_properties() -> None:
    source = CountingDigits()
    datamodule = DiffusionDataModule(source, batch_size=32, eval_batch_size=50)
    assert datamodule.image_shape == (1, 8, 8)
    assert datamodule.num_classes == 10 and datamodule.class_names[3] == "3"
    assert not datamodule.has_captions
    datamodule.setup("fit")
    datamodule.setup("test")
    assert source.loads == ["train", "test"]
    batch = next(iter(datamodule.train_dataloader()))
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (32, 1, 8, 8) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (32,) and batch["label"].dtype == torch.long
    assert float(batch["image"].min()) >= -1 and float(batch["image"].max()) <= 1
    train, val = datamodule.real_images("train"), datamodule.real_images("val")
    assert len(val) == 150 and len(train) == 1497 - 150
    assert float(train.min()) == -1 and float(train.max()) == 1
    assert len(datamodule.train_dataloader()) == len(train) // 32
    assert next(iter(datamodule.val_dataloader()))["image"].shape == (50, 1, 8, 8)
    assert datamodule.real_images("test", 7).shape == (7, 1, 8, 8)


def test_datamodule_split_determinism() -> None:
    first, same, other = (DiffusionDataModule(batch_size=16, seed=seed) for seed in (0, 0, 1))
    for datamodule in (first, same, other):
        datamodule.setup("fit")
    assert torch.equal(first.real_images("val"), same.real_images("val"))
    assert not torch.equal(first.real_images("val"), other.real_images("val"))
    batch, same_batch = (next(iter(dm.train_dataloader())) for dm in (first, same))
    assert torch.equal(batch["image"], same_batch["image"])
    assert torch.equal(batch["label"], same_batch["label"])


def test_datamodule_pads_and_resizes(tmp_path: Path) -> None:
    arrays = _tiny_fashion(tmp_path)
    source = FashionMNIST(root=str(tmp_path))
    datamodule = DiffusionDataModule(source, image_size=32, val_fraction=0.0, batch_size=4)
    assert datamodule.image_shape == (1, 32, 32)
    images = datamodule.real_images("test")
    original = torch.from_numpy(arrays["test"][0]).float() / 127.5 - 1
    assert torch.allclose(images[:, 0, 2:30, 2:30], original)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert bool((images[:, 0][:, border] == -1).all())
    resized = DiffusionDataModule(source, image_size=16, resize="resize", val_fraction=0.25)
    assert resized.real_images("train").shape == (9, 1, 16, 16)
    assert len(resized.real_images("val")) == 3
    with pytest.raises(ConfigError, match="resize"):
        DiffusionDataModule(source, image_size=16).image_shape  # noqa: B018


def test_datamodule_captions_collate(folder: Path) -> None:
    source = ImageFolder(str(folder), captions_file="captions.json")
    datamodule = DiffusionDataModule(source, batch_size=2, val_fraction=0.0)
    assert datamodule.has_captions
    batch = next(iter(datamodule.test_dataloader()))
    assert batch["caption"] == ["a photo of cat/001.png", "a photo of cat/002.png"]
    assert batch["image"].shape == (2, 3, 6, 6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"resize": "crop"},
        {"val_fraction": 1.0},
        {"val_fraction": -0.1},
        {"batch_size": 0},
        {"eval_batch_size": 0},
        {"image_size": 0},
    ],
)
def test_datamodule_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        DiffusionDataModule(**kwargs)


def test_image_set_validates() -> None:
    assert issubclass(Digits, DataSource)
    with pytest.raises(ValueError, match="labels"):
        ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.long), ["a"])


def test_downsample_to_box_filters_the_full_size_images_like_an_upsampler_condition():
    full = DiffusionDataModule(Digits(), image_size=8)
    low = DiffusionDataModule(Digits(), image_size=8, downsample_to=4)
    assert low.image_shape == (1, 4, 4)
    expected = torch.nn.functional.avg_pool2d(full.real_images("test", 5), 2)
    torch.testing.assert_close(low.real_images("test", 5), expected)
    assert low.reference_id() != full.reference_id()
    with pytest.raises(ConfigError, match="downsample_to 3 must divide the 8x8 images"):
        DiffusionDataModule(Digits(), downsample_to=3).setup("fit")


def test_image_folder_lists_at_setup_and_decodes_only_the_images_asked_for(
    tmp_path: Path, monkeypatch
) -> None:
    for index in range(12):
        _write_png(tmp_path / f"c{index % 3}" / f"{index:02d}.png", (index, 0, 0))
    decoded: list[int] = []
    read = ImageFiles.__getitem__
    monkeypatch.setattr(
        ImageFiles, "__getitem__", lambda self, index: decoded.append(index) or read(self, index)
    )
    datamodule = DiffusionDataModule(
        ImageFolder(str(tmp_path), image_size=4), batch_size=4, val_fraction=0.25
    )
    datamodule.setup("fit")
    assert datamodule.image_shape == (3, 4, 4) and decoded == []
    images = datamodule.real_images("val", 2)
    assert images.shape == (2, 3, 4, 4) and images.dtype == torch.float32 and len(decoded) == 2
    assert datamodule.labels("train").tolist() == [0] * 3 + [1] * 3 + [2] * 3  # 3 of 12 held out


def test_loaders_turn_uint8_items_into_float_batches_in_workers_with_gpu_settings() -> None:
    datamodule = DiffusionDataModule(batch_size=8, num_workers=2, prefetch_factor=3, eval_batch_size=5)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    assert loader.persistent_workers and loader.prefetch_factor == 3 and not loader.pin_memory  # no CUDA
    assert datamodule._dataset("val")[0]["image"].dtype == torch.uint8  # items stay uint8 until a batch
    in_workers = next(iter(datamodule.val_dataloader()))["image"]
    torch.testing.assert_close(in_workers, datamodule.real_images("val", 5))
    assert DiffusionDataModule(pin_memory=True).train_dataloader().pin_memory


def test_random_flip_mirrors_training_batches_only() -> None:
    plain = DiffusionDataModule(batch_size=64, val_fraction=0.0)
    flipped = DiffusionDataModule(batch_size=64, val_fraction=0.0, random_flip=True)
    torch.manual_seed(0)
    batch, same = next(iter(plain.train_dataloader())), next(iter(flipped.train_dataloader()))
    assert torch.equal(batch["label"], same["label"])
    mirrored = [not torch.equal(a, b) for a, b in zip(batch["image"], same["image"], strict=True)]
    for a, b, flip in zip(batch["image"], same["image"], mirrored, strict=True):
        assert torch.equal(b, a.flip(-1) if flip else a)
    assert 10 < sum(mirrored) < 54  # about half of 64
    assert torch.equal(plain.real_images("train", 8), flipped.real_images("train", 8))


def test_cifar10_missing_and_corrupt_batches_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"lacks data_batch_1, .*download: true"):
        CIFAR10(str(tmp_path)).load("train")
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ConfigError, match="cannot read the CIFAR-10 batch"):
        CIFAR10(str(tmp_path)).load("test")

    (folder / "test_batch").write_bytes(
        pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]})
    )
    with pytest.raises(ConfigError, match=r"uint8 array \(N, 3072\)"):
        CIFAR10(str(tmp_path)).load("test")


def test_real_batches_stream_the_images_real_images_returns():
    """A sweep's reference set streams: batches of at most eval_batch_size, together real_images."""
    datamodule = DiffusionDataModule(eval_batch_size=4)
    batches = list(datamodule.real_batches("test", 10))
    assert [len(batch) for batch in batches] == [4, 4, 2]
    assert torch.equal(torch.cat(batches), datamodule.real_images("test", 10))
