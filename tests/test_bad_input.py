"""Hostile input at every public entry point: each is refused with one clear paragraph that names what was
wrong and what to do (a ConfigError, the text an entry point exits with, or the argument parser's error),
never a traceback from deep inside torch; or it works. Issue 12, item 7: the ids are the list of inputs tried.

Entry points: ``evaluate.py``, ``train.py`` (LightningCLI), ``python -m lightning_diffusion`` and its
sub-commands, ``sample``, ``SamplerSpec``, ``load_component`` / ``read_checkpoint`` and the data sources,
all called in-process on tiny checkpoints the tests write.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from test_sweep import save_component, tiny_evaluator
from tiny import REPO, tiny_denoiser

import evaluate
import train
from lightning_diffusion.__main__ import build_parser
from lightning_diffusion.__main__ import main as lightning_diffusion_main
from lightning_diffusion.config import ConfigError
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

DIGITS = REPO / "configs" / "digits" / "denoiser.yaml"
SMALL_FIT = [
    "--trainer.enable_progress_bar=false",
    "--trainer.logger=false",
    "--trainer.limit_val_batches=1",
    "--trainer.max_steps=1",
    "--model.init_args.net.init_args.channels=[8, 16]",
    "--model.init_args.net.init_args.num_res_blocks=1",
    "--model.init_args.net.init_args.attention_levels=[1]",
]


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    """Runs write relative paths (runs/, config.yaml) into the test's own folder; LightningCLI reads
    ``args=``, not pytest's own argv."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setattr(sys, "argv", ["train.py"])


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Tiny checkpoints of each kind, and files that are not checkpoints."""
    folder = tmp_path_factory.mktemp("bad_input")
    denoiser = save_component(tiny_denoiser(), folder / "denoiser.ckpt", with_data=True)
    content = Path(denoiser).read_bytes()
    (folder / "truncated.ckpt").write_bytes(content[: len(content) // 2])
    (folder / "text.ckpt").write_text("a text file, not a checkpoint\n")
    (folder / "folder.ckpt").mkdir()
    (folder / "broken.yaml").write_text("model: [\n")
    (folder / "no_data.yaml").write_text("trainer:\n  max_steps: 1\n")
    (folder / "bad_data.yaml").write_text(
        "data:\n  class_path: DiffusionDataModule\n  init_args:\n    batch_sise: 3\n"
    )
    torch.save({"state_dict": {"weight": torch.zeros(2)}}, folder / "plain.ckpt")
    return {
        "denoiser": denoiser,
        "no_data": save_component(tiny_denoiser(), folder / "no_data.ckpt"),
        "unconditional": save_component(tiny_denoiser(None), folder / "unconditional.ckpt", with_data=True),
        "evaluator": save_component(tiny_evaluator(), folder / "evaluator.ckpt"),
        "truncated_ckpt": str(folder / "truncated.ckpt"),
        "text_ckpt": str(folder / "text.ckpt"),
        "plain_ckpt": str(folder / "plain.ckpt"),
        "folder": str(folder / "folder.ckpt"),
        "missing": str(folder / "missing.ckpt"),
        "broken_yaml": str(folder / "broken.yaml"),
        "no_data_yaml": str(folder / "no_data.yaml"),
        "bad_data_yaml": str(folder / "bad_data.yaml"),
    }


def refusal(call: Callable[[], Any], capsys: pytest.CaptureFixture[str]) -> str:
    """The message ``call`` refuses its input with: a ConfigError's text or the text an entry point exits
    with (one line, no chained traceback), or the argument parser's error after its usage (status 2)."""
    with pytest.raises((ConfigError, SystemExit)) as caught:
        call()
    error = caught.value
    if isinstance(error, ConfigError):
        assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
        message = str(error)
    elif isinstance(error.code, str):
        message = error.code.removeprefix("error: ")
    else:
        assert error.code == 2, f"exit status {error.code!r} without a message"
        printed = capsys.readouterr().err
        assert "Traceback" not in printed, printed
        return printed.split("error: ", 1)[1]
    assert "\n" not in message.strip() and "Traceback" not in message, message
    return message


def with_paths(args: Sequence[str], paths: dict[str, str]) -> list[str]:
    """``args`` with each ``{name}`` replaced by the path ``paths[name]``."""
    return [
        paths.get(arg.removeprefix("{").removesuffix("}"), arg) if arg.startswith("{") else arg
        for arg in args
    ]


def assert_says(message: str, *phrases: str) -> None:
    """Each key phrase is in the message (what was wrong, what to do)."""
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in {message!r}"


# --- evaluate.py --------------------------------------------------------------------------------------


def evaluate_args(paths: dict[str, str], out: Path, extra: list[str]) -> list[str]:
    """A two-step, four-sample cfg sweep of the tiny checkpoints, then ``extra`` (``{name}`` is a path
    of ``paths``; a later option replaces an earlier one)."""
    base = [
        "--denoiser", paths["denoiser"], "--evaluator", paths["evaluator"], "--out", str(out),
        "--cache_dir", str(out.parent / "cache"), "--sampler.steps", "2", "--num_samples", "4",
        "--batch_size", "4", "--wandb", "false", "--scales", "[1]",
    ]  # fmt: skip
    return base + with_paths(extra, paths)


EVALUATE_REFUSED = [
    pytest.param(["--denoiser", "{missing}"], ["missing.ckpt", "does not exist"], id="denoiser-missing-file"),
    pytest.param(
        ["--denoiser", "{evaluator}"],
        ["kind 'evaluator'", "not of kind 'denoiser'"],
        id="denoiser-wrong-kind",
    ),
    pytest.param(
        ["--denoiser", "{truncated_ckpt}"], ["cannot read checkpoint", "damaged"], id="denoiser-truncated"
    ),
    pytest.param(["--denoiser", "{text_ckpt}"], ["not a PyTorch checkpoint"], id="denoiser-text-file"),
    pytest.param(
        ["--denoiser", "{plain_ckpt}"],
        ["not a lightning-diffusion component checkpoint"],
        id="denoiser-plain-dict",
    ),
    pytest.param(
        ["--denoiser", "{folder}"],
        ["folder.ckpt", "is a directory"],
        id="denoiser-is-a-directory",
    ),
    pytest.param(
        ["--evaluator", "{denoiser}"],
        ["kind 'denoiser'", "not of kind 'evaluator'"],
        id="evaluator-wrong-kind",
    ),
    pytest.param(["--num_samples", "0"], ["num_samples must be at least 2"], id="num_samples-zero"),
    pytest.param(
        ["--num_samples", "-3"], ["num_samples must be at least 2", "-3"], id="num_samples-negative"
    ),
    pytest.param(["--num_samples", "abc"], ["num_samples", "abc"], id="num_samples-not-a-number"),
    pytest.param(["--num_samples", "1e30"], ["num_samples", "int"], id="num_samples-huge-float"),
    pytest.param(["--batch_size", "0"], ["batch_size must be at least 1"], id="batch_size-zero"),
    pytest.param(["--scales", "[]"], ["scales", "empty"], id="scales-empty"),
    pytest.param(["--scales", "[a]"], ["scales", "a"], id="scales-not-numbers"),
    pytest.param(
        ["--scales", "[.nan]"],
        ["scale", "finite"],
        id="scales-nan",
    ),
    pytest.param(["--methods", "[]"], ["list of methods is empty", "cfg"], id="methods-empty"),
    pytest.param(["--methods", "[cfgg]"], ["unknown guidance method", "autoguidance"], id="methods-unknown"),
    pytest.param(
        ["--methods", "[cfgg]"],
        ["did you mean cfg?"],
        id="methods-unknown-did-you-mean",
    ),
    pytest.param(
        ["--sampler.name", "ddimm"], ["unknown sampler 'ddimm' (did you mean ddim?)"], id="sampler-unknown"
    ),
    pytest.param(["--sampler.steps", "0"], ["steps of at least 1", "got 0"], id="sampler-steps-zero"),
    pytest.param(["--sampler.grid", "log_snr"], ["(did you mean logsnr?)"], id="sampler-grid-unknown"),
    pytest.param(
        ["--sampler.name", "heun", "--sampler.eta", "0.5"], ["does not use eta"], id="sampler-eta-on-heun"
    ),
    pytest.param(
        ["--sampler.sigma_max", ".nan"], ["sigma_max", "positive and finite"], id="sampler-sigma_max-nan"
    ),
    pytest.param(
        ["--sampler.sigma_min", "-1"], ["sigma_min", "positive and finite"], id="sampler-sigma_min-negative"
    ),
    pytest.param(
        ["--features", "incepton"], ["unknown features 'incepton'", "inception"], id="features-unknown"
    ),
    pytest.param(
        ["--features", "incepton"],
        ["did you mean inception?"],
        id="features-unknown-did-you-mean",
    ),
    pytest.param(
        ["--evaluator", "null"], ["need an evaluator", "--evaluator PATH"], id="features-without-evaluator"
    ),
    pytest.param(
        ["--features", "inception", "--inception_weights", "{missing}"],
        ["--inception_weights", "is not a file"],
        id="inception_weights-missing",
    ),
    pytest.param(["--devices", "0"], ["--devices must be at least 1"], id="devices-zero"),
    pytest.param(["--devices", "-2"], ["--devices must be at least 1", "-2"], id="devices-negative"),
    pytest.param(
        ["--accelerator", "tpu"],
        ["accelerator", "tpu"],
        id="accelerator-unavailable",
    ),
    pytest.param(
        ["--captions", "{missing}"], ["--captions", "neither a list nor a text file"], id="captions-missing"
    ),
    pytest.param(["--num_real", "1"], ["num_real must be at least 2"], id="num_real-one"),
    pytest.param(
        ["--methods", "[cfg_interval]", "--interval", "[5, 1]"],
        ["sigma_min < sigma_max"],
        id="interval-reversed",
    ),
    pytest.param(
        ["--interval", "[0.1, 1]"],
        ["--interval", "cfg"],
        id="interval-without-an-interval-method",
    ),
    pytest.param(["--rescale", "-1"], ["rescale", "[0, 1]"], id="rescale-negative"),
    pytest.param(["--rescale", ".nan"], ["rescale", "nan"], id="rescale-nan"),
    pytest.param(["--threshold", "2"], ["percentile", "(0, 1]"], id="threshold-above-one"),
    pytest.param(["--aug_level", "-1"], ["aug_level", "[0, 1]"], id="aug_level-negative"),
    pytest.param(
        ["--prior_candidates", "0"], ["prior candidates must be at least 1"], id="prior_candidates-zero"
    ),
    pytest.param(
        ["--grid_size", "0"],
        ["grid_size", "at least 1"],
        id="grid_size-zero",
    ),
    pytest.param(["--seed", "-1"], ["seed", "0 or more"], id="seed-negative"),
    pytest.param(["--config", "{missing}"], ["config", "does not exist"], id="config-missing"),
    pytest.param(["--config", "{folder}"], ["config", "not a file"], id="config-is-a-directory"),
    pytest.param(["--real_split", "validation"], ["unknown split 'validation'"], id="real_split-unknown"),
    pytest.param(
        ["--source", "{class_path: Digitz}"], ["'Digitz'", "package.module.Class"], id="source-unknown-class"
    ),
    pytest.param(["--captions", "[]"], ["captions", "empty"], id="captions-empty-list"),
    pytest.param(
        ["--methods", "[classifier]"], ["--classifier PATH"], id="classifier-method-without-classifier"
    ),
    pytest.param(["--methods", "[autoguidance]"], ["--guide PATH"], id="autoguidance-without-guide"),
    pytest.param(["--methods", "[clip]"], ["no captions", "--captions"], id="clip-on-data-without-captions"),
    pytest.param(["--methods", "[cascade]"], ["--cascade"], id="cascade-without-stages"),
    pytest.param(
        ["--out", "{text_ckpt}"],
        ["--out", "is a file"],
        id="out-is-a-file",
    ),
]


@pytest.mark.parametrize("extra, phrases", EVALUATE_REFUSED)
def test_evaluate_refuses(paths, tmp_path, capsys, extra, phrases):
    message = refusal(lambda: evaluate.main(evaluate_args(paths, tmp_path / "sweep", extra)), capsys)
    assert_says(message, *phrases)


def test_evaluate_takes_save_samples_as_a_bare_flag(paths, tmp_path):
    out = tmp_path / "sweep"
    evaluate.main(evaluate_args(paths, out, ["--save_samples"]))
    assert list(out.glob("*.npz"))


def test_evaluate_takes_a_negative_guidance_scale(paths, tmp_path):
    """s < 0 extrapolates away from the condition: unusual, but a valid point of the curve."""
    rows = evaluate.main(evaluate_args(paths, tmp_path / "sweep", ["--scales", "[-2]"]))
    assert [row["scale"] for row in rows] == [-2.0] and math.isfinite(rows[0]["fid"])


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


# --- python -m lightning_diffusion --------------------------------------------------------------------


QUICK = ("--per_class", "1", "--sampler.steps", "2", "--scales", "1")
COMMAND_REFUSED = [
    pytest.param((), ["required: command"], id="no-command"),
    pytest.param(("sampel",), ["invalid choice: 'sampel'", "'sample'"], id="command-unknown"),
    pytest.param(("sample", "{missing}"), ["missing.ckpt", "does not exist"], id="sample-checkpoint-missing"),
    pytest.param(
        ("sample", "{folder}"),
        ["folder.ckpt", "is a directory"],
        id="sample-checkpoint-is-a-directory",
    ),
    pytest.param(
        ("sample", "{evaluator}"),
        ["kind 'evaluator'", "not of kind 'denoiser'"],
        id="sample-wrong-kind",
    ),
    pytest.param(("sample", "{truncated_ckpt}"), ["damaged"], id="sample-checkpoint-truncated"),
    pytest.param(("sample", "{text_ckpt}"), ["not a PyTorch checkpoint"], id="sample-checkpoint-text-file"),
    pytest.param(
        ("sample", "{unconditional}", *QUICK),
        ["unconditional", "class-conditional"],
        id="sample-unconditional",
    ),
    pytest.param(
        ("sample", "{denoiser}", "--per_class", "0"), ["--per_class", "at least 1"], id="per_class-0"
    ),
    pytest.param(
        ("sample", "{denoiser}", "--per_class", "-1"),
        ["--per_class", "at least 1"],
        id="per_class-negative",
    ),
    pytest.param(
        ("sample", "{denoiser}", "--per_class", "two"),
        ["--per_class", "whole number"],
        id="per_class-word",
    ),
    pytest.param(("sample", "{denoiser}", "--scales", "nan"), ["--scales", "finite"], id="sample-scales-nan"),
    pytest.param(("sample", "{denoiser}", "--scales", "inf"), ["--scales", "finite"], id="sample-scales-inf"),
    pytest.param(
        ("sample", "{denoiser}", "--scales"), ["--scales", "at least one"], id="sample-scales-empty"
    ),
    pytest.param(
        ("sample", "{denoiser}", "--sampler.steps", "0"), ["steps of at least 1"], id="sample-steps-0"
    ),
    pytest.param(
        ("sample", "{denoiser}", "--sampler.name", "ddimm"),
        ["did you mean ddim?"],
        id="sample-sampler-unknown",
    ),
    pytest.param(("sample", "{denoiser}", "--sampler.eta", "nan"), ["eta", "finite"], id="sample-eta-nan"),
    pytest.param(("sample", "{denoiser}", "--seed", "-1"), ["seed", "0 or more"], id="sample-seed-negative"),
    pytest.param(
        ("sample", "{denoiser}", *QUICK, "--out", "{text_ckpt}"),
        ["--out", "is a file"],
        id="sample-out-is-a-file",
    ),
    pytest.param(
        ("sample", "{no_data}", *QUICK, "--check_labels"),
        ["does not record the data it was trained on", "cannot check labels"],
        id="check_labels-without-data",
    ),
    pytest.param(
        ("upsampler-fidelity", "{denoiser}"),
        ["kind 'denoiser'", "not of kind 'upsampler'"],
        id="upsampler-fidelity-wrong-kind",
    ),
    pytest.param(
        ("upsampler-fidelity", "{denoiser}", "--split", "train"),
        ["--split", "invalid choice"],
        id="upsampler-fidelity-split",
    ),
    pytest.param(("upsampler-fidelity", "{denoiser}", "--n", "0"), ["--n", "at least 1"], id="upsampler-n-0"),
    pytest.param(
        ("upsampler-fidelity", "{denoiser}", "--aug_level", "nan"),
        ["--aug_level", "finite"],
        id="aug_level-nan",
    ),
    pytest.param(
        ("prior-quality", "{denoiser}"),
        ["kind 'denoiser'", "not of kind 'prior'"],
        id="prior-quality-wrong-kind",
    ),
    pytest.param(
        ("prior-quality", "{denoiser}", "--candidates", "0"),
        ["--candidates", "at least 1"],
        id="candidates-0",
    ),
    pytest.param(
        ("variations", "{denoiser}"),
        ["is a Denoiser, not an unCLIP decoder"],
        id="variations-plain-denoiser",
    ),
    pytest.param(
        ("variations", "{evaluator}"),
        ["kind 'evaluator'", "not of kind 'denoiser'"],
        id="variations-wrong-kind",
    ),
    pytest.param(
        ("variations", "{denoiser}", "--per_image", "0"),
        ["--per_image", "at least 1"],
        id="per_image-0",
    ),
    pytest.param(
        ("variations", "{denoiser}", "--out", "{text_ckpt}"),
        ["--out", "is a file"],
        id="variations-out-file",
    ),
    pytest.param(("vocab",), ["required: --config"], id="vocab-without-config"),
    pytest.param(("vocab", "--config", "{missing}"), ["cannot read the training config"], id="vocab-missing"),
    pytest.param(("vocab", "--config", "{folder}"), ["Is a directory"], id="vocab-config-is-a-directory"),
    pytest.param(
        ("vocab", "--config", "{denoiser}"), ["as YAML", "utf-8"], id="vocab-config-is-a-checkpoint"
    ),
    pytest.param(("vocab", "--config", "{broken_yaml}"), ["as YAML", "line 2"], id="vocab-yaml-syntax-error"),
    pytest.param(
        ("vocab", "--config", "{no_data_yaml}"), ["has no data section"], id="vocab-no-data-section"
    ),
    pytest.param(
        ("vocab", "--config", "{bad_data_yaml}"),
        ["data section", "Option 'batch_sise' is not accepted"],
        id="vocab-unknown-data-option",
    ),
    pytest.param(
        ("vocab", "--config", str(DIGITS)),
        ["digits has no captions", "Shapes"],
        id="vocab-data-without-captions",
    ),
]


@pytest.mark.parametrize("args, phrases", COMMAND_REFUSED)
def test_command_refuses(paths, capsys, args, phrases):
    argv = with_paths(args, paths)
    assert_says(refusal(lambda: lightning_diffusion_main(argv), capsys), *phrases)


def test_components_command_lists_the_registered_components(capsys):
    lightning_diffusion_main(["components"])
    assert "lightning_diffusion.components.denoiser.Denoiser" in capsys.readouterr().out


def test_sample_check_labels_works_as_a_bare_flag(paths, tmp_path, capsys):
    lightning_diffusion_main(["sample", paths["denoiser"], *QUICK, "--out", str(tmp_path), "--check_labels"])
    assert "label accuracy by a pixel classifier" in capsys.readouterr().out
    assert (tmp_path / "samples.png").is_file()


@pytest.mark.parametrize(
    "args, flag, value",
    [
        pytest.param(["sample", "x.ckpt", "--check_labels"], "check_labels", True, id="check_labels"),
        pytest.param(["sample", "x.ckpt", "--compile"], "compile", True, id="compile"),
        pytest.param(["variations", "x.ckpt", "--no_wandb"], "wandb", False, id="no_wandb"),
    ],
)
def test_boolean_options_of_the_commands_are_bare_flags(args, flag, value):
    assert getattr(build_parser().parse_args(args), flag) is value


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
