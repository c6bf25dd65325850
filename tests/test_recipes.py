"""The CIFAR-10 and ImageNet-64 recipes: every YAML parses and builds, each training recipe takes two
steps on a stand-in data set written in the real on-disk format, and bad data gets a clear message."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_cli import teacher_checkpoint_for
from test_inception import write_random_inception_weights
from tiny import REPO

import evaluate
import train
from lightning_diffusion.config import ConfigError
from lightning_diffusion.data import CIFAR10, DiffusionDataModule, ImageFolder
from lightning_diffusion.data.cifar import CIFAR10_CLASSES
from lightning_diffusion.precision import auto_choice

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPES = sorted([*REPO.glob("configs/cifar10/*.yaml"), *REPO.glob("configs/imagenet64/*.yaml")])
CIFAR_DENOISER = REPO / "configs" / "cifar10" / "denoiser.yaml"
CIFAR_CLASSIFIER = REPO / "configs" / "cifar10" / "noisy_classifier.yaml"
IMAGENET_DENOISER = REPO / "configs" / "imagenet64" / "denoiser.yaml"
STAND_IN_CLASSES = 3
# The ImageNet-64 U-Net at a quarter of its width: the full 260M-parameter net is the slow test's job.
NARROW_IMAGENET_NET = [
    "--model.init_args.net.init_args.channels=[48, 96, 144, 192]",
    "--model.init_args.net.init_args.cond_dim=192",
]


def write_cifar_stand_in(data_dir: Path, per_batch: int = 8, test_count: int = 10) -> Path:
    """torchvision's ``cifar-10-batches-py`` layout (five train batches, a test batch, batches.meta) with
    random images, their labels cycling through the ten classes."""
    folder = data_dir / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
    for name in names:
        count = test_count if name == "test_batch" else per_batch
        batch = {
            "batch_label": name,
            "data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
            "labels": [index % 10 for index in range(count)],
            "filenames": [f"{name}_{index}.png" for index in range(count)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {"label_names": list(CIFAR10_CLASSES)}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return data_dir


def write_imagenet_stand_in(
    root: Path, classes: int = STAND_IN_CLASSES, size: tuple[int, int] = (80, 72)
) -> Path:
    """An ImageNet-style tree: train/<wnid>/*.png (6 per class) and val/<wnid>/*.png (2 per class) of
    random non-square RGB images, which the recipe centre-crops and resizes to 64x64."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 2)):
        for label in range(classes):
            folder = root / split / f"n{label:08d}"
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index:04d}.png")
    return root


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory) -> Path:
    return write_cifar_stand_in(tmp_path_factory.mktemp("cifar"))


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory) -> Path:
    return write_imagenet_stand_in(tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    """Runs write into the test's own folder; class paths such as callbacks.* import from the repo."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setattr(sys, "argv", ["train.py"])


def quiet(root: Path) -> list[str]:
    return [
        "--trainer.default_root_dir",
        str(root),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger",
        "false",
    ]


def stand_in_data(config: Path, cifar_dir: Path, imagenet_root: Path) -> list[str]:
    """Arguments pointing a recipe at its stand-in data set (and, for ImageNet, at its class count)."""
    if "cifar10" in config.parts:
        return ["--data.init_args.source.init_args.data_dir", str(cifar_dir)]
    return [
        "--data.init_args.source.init_args.root",
        str(imagenet_root),
        "--model.init_args.num_classes",
        str(STAND_IN_CLASSES),
    ]


@pytest.mark.parametrize("config", RECIPES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_recipe_parses_and_builds(config, cifar_dir, imagenet_root, tmp_path):
    content = yaml.safe_load(config.read_text())
    if "model" not in content:  # an evaluate.py sweep config
        args = evaluate.build_parser().parse_args(
            ["--config", str(config), "--denoiser", "d.ckpt", "--out", "o"]
        )
        settings = evaluate.sweep_settings(args)
        assert settings.num_samples == 50000 and settings.num_real == 50000 and settings.real_split == "train"
        return
    args = [
        "--config",
        str(config),
        *quiet(tmp_path),
        *stand_in_data(config, cifar_dir, imagenet_root),
        *(NARROW_IMAGENET_NET if config == IMAGENET_DENOISER else []),
    ]
    if "teacher" in content["model"]["init_args"]:  # a distilled student: a small teacher of its data
        stand_in = DiffusionDataModule(CIFAR10(data_dir=str(cifar_dir)))
        teacher = teacher_checkpoint_for(config, content["model"], tmp_path / "teacher.ckpt", stand_in)
        args += ["--model.init_args.teacher", teacher]
    cli = train.main(args=args, run=False)
    assert tuple(cli.datamodule.image_shape) == tuple(cli.model.image_shape)
    assert cli.model.num_classes == cli.datamodule.num_classes
    assert cli.trainer.precision == auto_choice(cuda=False).precision  # precision: auto on this CPU
    assert any(type(callback).__name__ == "EMAWeightAveraging" for callback in cli.trainer.callbacks)


def fit_two_steps(config: Path, root: Path, *extra: str) -> int:
    """Fit a recipe for two steps at batch 2 (one validation batch); the global step of its last.ckpt."""
    args = [
        "fit",
        "--config",
        str(config),
        *quiet(root),
        "--trainer.max_steps",
        "2",
        "--trainer.limit_val_batches",
        "1",
        "--data.init_args.batch_size",
        "2",
        "--data.init_args.eval_batch_size",
        "2",
        *extra,
    ]
    train.main(args=args)
    return torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)[
        "global_step"
    ]


@pytest.mark.parametrize("config", [CIFAR_DENOISER, CIFAR_CLASSIFIER], ids=["denoiser", "noisy_classifier"])
def test_cifar10_recipe_trains_two_steps_on_a_stand_in(config, cifar_dir, tmp_path):
    assert fit_two_steps(config, tmp_path / "run", *stand_in_data(config, cifar_dir, cifar_dir)) == 2


def test_imagenet64_recipe_at_a_quarter_width_trains_two_steps_on_a_stand_in(imagenet_root, tmp_path):
    extra = [*stand_in_data(IMAGENET_DENOISER, imagenet_root, imagenet_root), *NARROW_IMAGENET_NET]
    assert fit_two_steps(IMAGENET_DENOISER, tmp_path / "run", *extra) == 2


@pytest.mark.slow
def test_imagenet64_recipe_at_full_size_trains_two_steps_on_a_stand_in(imagenet_root, tmp_path):
    extra = stand_in_data(IMAGENET_DENOISER, imagenet_root, imagenet_root)
    assert fit_two_steps(IMAGENET_DENOISER, tmp_path / "run", *extra) == 2


SWEEPS = {
    "cifar10": (CIFAR_DENOISER, []),
    "imagenet64": (IMAGENET_DENOISER, NARROW_IMAGENET_NET),
}


# ImageNet-64's sweep runs the same code at 64x64 (45 s): its config is parsed by the fast test above.
@pytest.mark.parametrize("data", ["cifar10", pytest.param("imagenet64", marks=pytest.mark.slow)])
def test_recipe_sweep_runs_sixteen_inception_samples_on_a_stand_in(data, cifar_dir, imagenet_root, tmp_path):
    """The recipe's own sweep config (Inception features, training-split reference) on a two-step model,
    with only N, the steps and the scales cut down: rows complete, class accuracy null (no evaluator)."""
    denoiser, narrow = SWEEPS[data]
    fit_two_steps(denoiser, tmp_path / "run", *stand_in_data(denoiser, cifar_dir, imagenet_root), *narrow)
    weights = write_random_inception_weights(tmp_path / "inception.pth")
    rows = evaluate.main([
        "--config", str(REPO / "configs" / data / "sweep.yaml"), "--methods", "[cfg]", "--scales", "[2.0]",
        "--denoiser", str(tmp_path / "run" / "checkpoints" / "last.ckpt"), "--inception_weights", weights,
        "--num_samples", "16", "--num_real", "16", "--batch_size", "16", "--sampler.steps", "2",
        "--out", str(tmp_path / "sweep"), "--cache_dir", str(tmp_path / "cache"), "--wandb", "false",
    ])  # fmt: skip
    assert [(row["method"], row["scale"], row["nfe"]) for row in rows] == [("cfg", 2.0, 4.0)]
    assert all(rows[0][key] is not None for key in ("fid", "inception_score", "precision", "recall"))
    assert rows[0]["class_accuracy"] is None
    assert (tmp_path / "sweep" / "curves.png").is_file()


def test_cifar10_stand_in_reads_as_torchvision_lays_it_out(cifar_dir):
    train_split, test_split = CIFAR10(str(cifar_dir)).load("train"), CIFAR10(str(cifar_dir)).load("test")
    assert train_split.images.shape == (40, 3, 32, 32) and test_split.images.shape == (10, 3, 32, 32)
    batch = pickle.loads((cifar_dir / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    first = torch.from_numpy(batch["data"][0].reshape(3, 32, 32))
    assert torch.equal(train_split.images[0], first)  # rows are R, G, B planes of 32x32
    assert train_split.labels[:10].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1]
    assert train_split.class_names[9] == "truck"


def test_imagenet_stand_in_is_centre_cropped_and_resized_as_it_is_read(imagenet_root):
    data = DiffusionDataModule(ImageFolder(str(imagenet_root), image_size=64, crop=True), val_fraction=0.0)
    assert data.image_shape == (3, 64, 64) and data.num_classes == STAND_IN_CLASSES
    assert len(data.real_images("test")) == 2 * STAND_IN_CLASSES  # val/ is the held-out split
    assert data.labels("test").tolist() == [0, 0, 1, 1, 2, 2]


def test_recipe_pointed_at_a_missing_cifar10_folder_says_how_to_get_it(tmp_path):
    with pytest.raises(
        ConfigError, match=r"CIFAR-10 was not found.*download: true.*cifar-10-python\.tar\.gz"
    ):
        fit_two_steps(
            CIFAR_DENOISER,
            tmp_path / "run",
            "--data.init_args.source.init_args.data_dir",
            str(tmp_path / "none"),
        )


def test_recipe_pointed_at_a_missing_image_folder_says_what_it_must_hold(tmp_path):
    missing = ["--data.init_args.source.init_args.root", str(tmp_path / "imagenet"), *NARROW_IMAGENET_NET]
    with pytest.raises(ConfigError, match=r"does not exist; set root .*train/<wnid>"):
        fit_two_steps(IMAGENET_DENOISER, tmp_path / "run", *missing)


def test_class_conditional_recipe_on_a_one_class_folder_says_the_class_counts_differ(tmp_path):
    one_class = write_imagenet_stand_in(tmp_path / "one_class", classes=1)
    args = ["--data.init_args.source.init_args.root", str(one_class), *NARROW_IMAGENET_NET]
    with pytest.raises(ConfigError, match=r"the data has 1 classes but the model is configured for 1000"):
        fit_two_steps(IMAGENET_DENOISER, tmp_path / "run", *args)


def test_gpu_overlay_keeps_the_recipe_ema_and_feeds_the_gpu(cifar_dir, tmp_path):
    overlay = REPO / "configs" / "trainer" / "gpu.yaml"
    on_cpu = ["--trainer.accelerator", "cpu", "--trainer.devices", "1"]  # parsed as on a GPU node, built here
    args = ["--config", str(CIFAR_DENOISER), "--config", str(overlay), *quiet(tmp_path), *on_cpu]
    cli = train.main(args=[*args, *stand_in_data(CIFAR_DENOISER, cifar_dir, cifar_dir)], run=False)
    names = [type(callback).__name__ for callback in cli.trainer.callbacks]
    assert "EMAWeightAveraging" in names and "GPUSpeedups" in names
    assert cli.datamodule.num_workers == 8 and cli.datamodule.pin_memory
    assert cli.datamodule.batch_size == 16  # the recipe's per-device batch survives the overlay
