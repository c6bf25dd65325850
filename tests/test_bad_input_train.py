"""Hostile input to train.py (LightningCLI): each refused with one clear paragraph naming what was wrong
and what to do, never a traceback (helpers in tests/bad_input.py), called in-process on tiny checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bad_input import DIGITS, _in_tmp_dir, assert_says, paths_fixture, refusal, with_paths  # noqa: F401

import train

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL_FIT = [
    "--trainer.enable_progress_bar=false",
    "--trainer.logger=false",
    "--trainer.limit_val_batches=1",
    "--trainer.max_steps=1",
    "--model.init_args.net.init_args.channels=[8, 16]",
    "--model.init_args.net.init_args.num_res_blocks=1",
    "--model.init_args.net.init_args.attention_levels=[1]",
]


# --- train.py -----------------------------------------------------------------------------------------


def fit(*extra: str) -> Callable[[], Any]:
    return lambda: train.main(args=["fit", "--config", str(DIGITS), *SMALL_FIT, *extra])


def parse_only(*extra: str) -> Callable[[], Any]:
    return lambda: train.main(args=["--config", str(DIGITS), *SMALL_FIT, *extra], run=False)


def edited_config(tmp_path: Path, old: str, new: str) -> str:
    """The digits config with ``old`` replaced by ``new``, written into ``tmp_path``."""
    path = tmp_path / "edited.yaml"
    content = DIGITS.read_text()
    assert old in content
    path.write_text(content.replace(old, new))
    return str(path)


TRAIN_REFUSED = [
    pytest.param(
        lambda tmp: (
            lambda: train.main(
                args=["fit", "--config", edited_config(tmp, "class_path: Denoiser", "class_path: Denoisr")],
                run=False,
            )
        ),
        ["no component is named 'Denoisr' (did you mean Denoiser?)", "NoisyClassifier"],
        id="model-class_path-unknown",
    ),
    pytest.param(lambda tmp: parse_only("--model.init_args.lr", "abc"), ["lr", "abc"], id="lr-not-a-number"),
    pytest.param(
        lambda tmp: (
            lambda: train.main(
                args=["--config", edited_config(tmp, "batch_size: 64", "batch_size: sixty-four")], run=False
            )
        ),
        ["batch_size", "sixty-four"],
        id="yaml-batch_size-a-word",
    ),
    pytest.param(
        lambda tmp: fit("--model.init_args.lr", "-1"),
        ["lr", "-1"],
        id="lr-negative",
    ),
    pytest.param(
        lambda tmp: fit("--model.init_args.lr", ".nan"),
        ["lr", "nan"],
        id="lr-nan",
    ),
    pytest.param(
        lambda tmp: parse_only("--data.init_args.batch_size", "0"),
        ["batch_size must be at least 1"],
        id="batch_size-zero",
    ),
    pytest.param(
        lambda tmp: parse_only("--data.init_args.val_fraction", "1.5"),
        ["val_fraction must lie in [0, 1)"],
        id="val_fraction-above-one",
    ),
    pytest.param(
        lambda tmp: parse_only("--data.init_args.source", "Digitz"),
        ["Digitz", "did you mean Digits?"],
        id="data-source-unknown",
    ),
    pytest.param(
        lambda tmp: fit(
            "--data.init_args.source=FashionMNIST",
            "--data.init_args.source.init_args.root=/nonexistent",
            "--data.init_args.source.init_args.data_dir=/nonexistent",
        ),
        ["Fashion-MNIST files were not found", "apt-get install dataset-fashion-mnist", "download: true"],
        id="data-missing-fashion_mnist",
    ),
    pytest.param(
        lambda tmp: fit("--model.init_args.image_shape=[1, 16, 16]"),
        ["(1, 8, 8)", "set model.init_args.image_shape to [1, 8, 8]"],
        id="image_shape-not-the-data's",
    ),
    pytest.param(
        lambda tmp: fit("--model.init_args.num_classes=5"),
        ["data has 10 classes", "set model.init_args.num_classes to 10"],
        id="num_classes-not-the-data's",
    ),
    pytest.param(
        lambda tmp: fit("--data.init_args.image_size=7", "--model.init_args.image_shape=[1, 7, 7]"),
        ["image_size 7 is smaller than the 8x8 images", "resize"],
        id="image_size-below-the-data's",
    ),
    pytest.param(
        lambda tmp: fit("--data.init_args.batch_size=100000"),
        ["batch_size", "100000"],
        id="batch-larger-than-the-data-set",
    ),
    pytest.param(
        lambda tmp: lambda: train.main(args=["fit", "--config", str(tmp / "missing.yaml")], run=False),
        ["config", "does not exist"],
        id="config-missing",
    ),
    pytest.param(
        lambda tmp: lambda: train.main(args=["fit", "--config", str(tmp)], run=False),
        ["config", "not a file"],
        id="config-is-a-directory",
    ),
]


@pytest.mark.parametrize("make_call, phrases", TRAIN_REFUSED)
def test_train_refuses(tmp_path, capsys, make_call, phrases):
    assert_says(refusal(make_call(tmp_path), capsys), *phrases)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("checkpoint", id="config-is-a-checkpoint"),
        pytest.param("broken_yaml", id="config-yaml-syntax-error"),
    ],
)
def test_train_refuses_a_config_that_is_not_yaml(paths, capsys, name):
    config = paths["denoiser"] if name == "checkpoint" else paths[name]
    message = refusal(lambda: train.main(args=["fit", "--config", config], run=False), capsys)
    assert_says(message, config, "YAML")


def test_train_negative_max_steps_gets_lightning_s_one_line_reason():
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    with pytest.raises(MisconfigurationException, match="`max_steps` must be a non-negative integer or -1"):
        fit("--trainer.max_steps=-5")()
