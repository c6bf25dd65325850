"""Hostile input to evaluate.py: each refused with one clear paragraph naming what was wrong and what to
do, never a traceback (helpers in tests/bad_input.py), called in-process on tiny checkpoints.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from bad_input import _in_tmp_dir, assert_says, paths_fixture, refusal, with_paths  # noqa: F401

import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")

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
