"""Hostile input to ``python -m lightning_diffusion`` and its sub-commands: each refused with one clear
paragraph naming what was wrong and what to do, never a traceback (helpers in tests/bad_input.py), called
in-process on tiny checkpoints.
"""

from __future__ import annotations

import pytest
from bad_input import DIGITS, _in_tmp_dir, assert_says, paths_fixture, refusal, with_paths  # noqa: F401

from lightning_diffusion.__main__ import build_parser
from lightning_diffusion.__main__ import main as lightning_diffusion_main

pytestmark = pytest.mark.usefixtures("one_thread")

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
    pytest.param(
        ("vocab", "--config", "{missing}"), ["--config", "missing.ckpt", "cannot be read"], id="vocab-missing"
    ),
    pytest.param(("vocab", "--config", "{folder}"), ["Is a directory"], id="vocab-config-is-a-directory"),
    pytest.param(
        ("vocab", "--config", "{denoiser}"),
        ["denoiser.ckpt", "not UTF-8", "save it as UTF-8"],
        id="vocab-config-is-a-checkpoint",
    ),
    pytest.param(
        ("vocab", "--config", "{broken_yaml}"), ["not valid YAML", "line 2"], id="vocab-yaml-syntax-error"
    ),
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
