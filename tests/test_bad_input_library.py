"""Hostile input to the Python API (``sample``, ``SamplerSpec``, ``load_component`` / ``read_checkpoint``,
the data sources): each refused with one clear paragraph naming what was wrong and what to do, never a
traceback (helpers in tests/bad_input.py), called in-process on tiny checkpoints.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from bad_input import _in_tmp_dir, assert_says, paths_fixture, refusal, with_paths  # noqa: F401
from tiny import tiny_denoiser

from lightning_diffusion.data import (
    CIFAR10,
    Captioned,
    DiffusionDataModule,
    Digits,
    FashionMNIST,
    ImageFolder,
    Shapes,
    TorchvisionDataset,
)
from lightning_diffusion.diffusion import SamplerSpec
from lightning_diffusion.registry import load_component, read_checkpoint
from lightning_diffusion.sampling import sample

pytestmark = pytest.mark.usefixtures("one_thread")

# --- sample() -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def denoiser():
    return tiny_denoiser().eval()


STEPS = {"name": "ddim", "steps": 2}
SAMPLE_REFUSED = [
    pytest.param({"labels": []}, ["labels to sample is empty"], id="labels-empty"),
    pytest.param({"labels": [10]}, ["labels must lie in [0, 9]", "guidance_scale=0"], id="labels-null-index"),
    pytest.param({"labels": [-1]}, ["labels must lie in [0, 9]", "from -1"], id="labels-negative"),
    pytest.param({"labels": [1.5]}, ["integers"], id="labels-fractional"),
    pytest.param({"labels": "abc"}, ["class indices"], id="labels-a-string"),
    pytest.param({"n": 0}, ["positive integer", "n=0"], id="n-zero"),
    pytest.param({"n": -2}, ["positive integer", "n=-2"], id="n-negative"),
    pytest.param({"n": 2.5}, ["positive integer", "n=2.5"], id="n-fractional"),
    pytest.param({"labels": [1], "guidance_scale": math.nan}, ["guidance_scale", "finite"], id="scale-nan"),
    pytest.param({"labels": [1], "guidance_scale": math.inf}, ["guidance_scale", "finite"], id="scale-inf"),
    pytest.param({"labels": [1], "sampler": "ddimm"}, ["did you mean ddim?"], id="sampler-unknown"),
    pytest.param(
        {"labels": [1], "sampler": {"stpes": 3}}, ["(did you mean steps?)"], id="sampler-setting-unknown"
    ),
    pytest.param(
        {"labels": [1], "sampler": 3}, ["a sampler is a SamplerSpec", "not int"], id="sampler-an-int"
    ),
    pytest.param(
        {"labels": [1], "batch_size": 0}, ["batch_size must be a positive integer"], id="batch_size-zero"
    ),
    pytest.param({"labels": [1], "seed": -1}, ["seed", "0 or more"], id="seed-negative"),
]


@pytest.mark.parametrize("kwargs, phrases", SAMPLE_REFUSED)
def test_sample_refuses(denoiser, capsys, kwargs, phrases):
    assert_says(refusal(lambda: sample(denoiser, **{"sampler": STEPS, **kwargs}), capsys), *phrases)


def test_sample_refuses_labels_for_an_unconditional_denoiser(capsys):
    message = refusal(lambda: sample(tiny_denoiser(None), labels=[1], sampler=STEPS), capsys)
    assert_says(message, "unconditional", "n=...")


@pytest.mark.parametrize(
    "name, phrases",
    [
        pytest.param("missing", ["does not exist"], id="missing"),
        pytest.param("evaluator", ["kind 'evaluator'", "not of kind 'denoiser'"], id="wrong-kind"),
    ],
)
def test_sample_from_a_bad_checkpoint_path_refuses(paths, capsys, name, phrases):
    assert_says(refusal(lambda: sample(paths[name], labels=[1], sampler=STEPS), capsys), *phrases)


# --- SamplerSpec --------------------------------------------------------------------------------------

SPEC_REFUSED = [
    pytest.param({"name": "dpmpp2m"}, ["unknown sampler 'dpmpp2m' (did you mean dpmpp_2m?)"], id="name-typo"),
    pytest.param({"grid": "log_snr"}, ["(did you mean logsnr?)", "uniform_t"], id="grid-typo"),
    pytest.param({"steps": True}, ["integer number of steps", "True"], id="steps-bool"),
    pytest.param({"steps": 2.5}, ["integer number of steps", "2.5"], id="steps-fractional"),
    pytest.param({"steps": "10"}, ["integer number of steps", "'10'"], id="steps-a-string"),
    pytest.param({"steps": -4}, ["integer number of steps", "-4"], id="steps-negative"),
    pytest.param({"eta": math.nan}, ["eta", "finite"], id="eta-nan"),
    pytest.param({"eta": -0.5}, ["eta must not be negative"], id="eta-negative"),
    pytest.param({"sigma_max": math.inf}, ["sigma_max", "positive and finite"], id="sigma_max-inf"),
    pytest.param({"sigma_min": 0.0}, ["sigma_min", "positive and finite"], id="sigma_min-zero"),
    pytest.param({"sigma_min": 5.0, "sigma_max": 1.0}, ["must be below sigma_max"], id="sigmas-reversed"),
    pytest.param({"name": "edm", "S_churn": 1e9}, ["S_churn", "out of range"], id="S_churn-huge"),
]


@pytest.mark.parametrize("fields, phrases", SPEC_REFUSED)
def test_sampler_spec_refuses(capsys, fields, phrases):
    assert_says(refusal(lambda: SamplerSpec(**fields), capsys), *phrases)


# --- load_component / read_checkpoint -----------------------------------------------------------------

CHECKPOINT_REFUSED = [
    pytest.param("denoiser", "evaluator", ["kind 'denoiser'", "not of kind 'evaluator'"], id="wrong-kind"),
    pytest.param(
        "denoiser", "denoisr", ["unknown component kind 'denoisr'", "noisy_classifier"], id="unknown-kind"
    ),
    pytest.param("truncated_ckpt", None, ["cannot read checkpoint", "damaged"], id="truncated"),
    pytest.param("text_ckpt", None, ["not a PyTorch checkpoint"], id="text-file"),
    pytest.param("broken_yaml", None, ["not a PyTorch checkpoint"], id="yaml-file"),
    pytest.param(
        "plain_ckpt", None, ["not a lightning-diffusion component checkpoint"], id="plain-torch-file"
    ),
    pytest.param("missing", None, ["does not exist", "train.py fit"], id="missing"),
    pytest.param(
        "folder",
        None,
        ["is a directory"],
        id="directory",
    ),
]


@pytest.mark.parametrize("name, kind, phrases", CHECKPOINT_REFUSED)
def test_load_component_refuses(paths, capsys, name, kind, phrases):
    assert_says(refusal(lambda: load_component(paths[name], kind=kind), capsys), *phrases)


def test_read_checkpoint_of_a_missing_file_says_so(paths, capsys):
    assert_says(refusal(lambda: read_checkpoint(paths["missing"]), capsys), "does not exist")


# --- data sources -------------------------------------------------------------------------------------

SOURCE_REFUSED = [
    pytest.param(
        lambda tmp: FashionMNIST(root=str(tmp), data_dir=str(tmp)).load("train"),
        ["apt-get install dataset-fashion-mnist", "download: true"],
        id="fashion_mnist-missing",
    ),
    pytest.param(
        lambda tmp: TorchvisionDataset("MNIST", data_dir=str(tmp)).load("train"),
        ["MNIST files were not found", "download: true"],
        id="mnist-missing",
    ),
    pytest.param(
        lambda tmp: CIFAR10(data_dir=str(tmp)).load("train"),
        ["CIFAR-10 was not found", "cifar-10-python.tar.gz", "download: true"],
        id="cifar10-missing",
    ),
    pytest.param(
        lambda tmp: TorchvisionDataset("MNSIT"), ["(did you mean MNIST?)"], id="torchvision-name-typo"
    ),
    pytest.param(
        lambda tmp: TorchvisionDataset("CIFAR10"), ["source of its own", "CIFAR10"], id="torchvision-own"
    ),
    pytest.param(
        lambda tmp: ImageFolder(str(tmp / "none")).load("train"), ["does not exist"], id="folder-missing"
    ),
    pytest.param(
        lambda tmp: ImageFolder(str(Path(__file__))).load("train"),
        ["is a file, not a folder"],
        id="folder-is-a-file",
    ),
    pytest.param(
        lambda tmp: ImageFolder(str(tmp)).load("train"), ["no class sub-folders"], id="folder-empty"
    ),
    pytest.param(
        lambda tmp: ImageFolder(str(tmp), channels=2), ["1 (grey) or 3 (RGB)"], id="folder-channels-2"
    ),
    pytest.param(lambda tmp: Digits().load("validation"), ["'train' or 'test'"], id="split-unknown"),
    pytest.param(lambda tmp: Shapes(image_size=0), ["at least 8 pixels"], id="shapes-image_size-zero"),
    pytest.param(
        lambda tmp: Shapes(num_train=-1), ["0 or more", "num_train=-1"], id="shapes-num_train-negative"
    ),
    pytest.param(
        lambda tmp: Shapes(combinations="sen"), ["seen, held_out, all"], id="shapes-combinations-unknown"
    ),
    pytest.param(
        lambda tmp: Captioned(Digits(), seed=-1), ["seed must be 0 or more"], id="captioned-seed-negative"
    ),
    pytest.param(lambda tmp: DiffusionDataModule(val_fraction=1.5), ["[0, 1)"], id="datamodule-val_fraction"),
    pytest.param(
        lambda tmp: DiffusionDataModule(batch_size=0), ["batch_size must be at least 1"], id="batch_size-0"
    ),
    pytest.param(
        lambda tmp: DiffusionDataModule(resize="crop"), ["pad, resize"], id="datamodule-resize-unknown"
    ),
]


@pytest.mark.parametrize("make, phrases", SOURCE_REFUSED)
def test_data_refuses(tmp_path, capsys, make, phrases):
    assert_says(refusal(lambda: make(tmp_path), capsys), *phrases)
