"""Non-finite samples (NaN or inf, e.g. at an extreme guidance scale) are counted in the row's
``non_finite`` column and left out of every metric alike; a row whose samples are all non-finite has null
metrics, not a crash."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from test_sweep import save_component, sweep_args, tiny_classifier, tiny_evaluator
from tiny import tiny_denoiser

import evaluate
from lightning_diffusion.metrics import METRIC_KEYS, NON_FINITE, SampleMetrics, columns

POISONED_LABEL = 7  # drawn for 3 of the 12 samples of seed 0


def metrics_of(
    real: torch.Tensor, features: torch.Tensor, logits: torch.Tensor, **extra: torch.Tensor
) -> dict[str, float | int | None]:
    finite = extra.pop("finite", None)
    metrics = SampleMetrics(real.shape[1])
    metrics.update_real(real)
    metrics.update_generated({"features": features, "logits": logits, **extra}, finite)
    torch.manual_seed(0)  # torchmetrics' Inception Score shuffles the logits with the global generator
    return metrics.compute()


@pytest.fixture
def sample_set() -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(30, 6, generator=generator)
    features, logits = torch.randn(20, 6, generator=generator), torch.randn(20, 10, generator=generator)
    correct = (torch.rand(20, generator=generator) > 0.5).float()
    return real, features, logits, correct


def test_non_finite_samples_are_left_out_of_every_metric_alike(sample_set):
    """NaN features in sample 2, an inf logit in sample 5, a NaN outcome in sample 7 and an image flagged
    non-finite (``finite`` False) in sample 11: the row equals the row of the 16 other samples alone."""
    real, features, logits, correct = sample_set
    features, logits, correct = features.clone(), logits.clone(), correct.clone()
    features[2, 1], logits[5, 0], correct[7] = math.nan, math.inf, math.nan
    finite = torch.ones(20, dtype=torch.bool)
    finite[11] = False
    values = metrics_of(real, features, logits, class_correct=correct, finite=finite)
    keep = torch.tensor([index not in (2, 5, 7, 11) for index in range(20)])
    expected = metrics_of(real, features[keep], logits[keep], class_correct=correct[keep])
    assert values[NON_FINITE] == 4 and expected[NON_FINITE] == 0
    assert {key: values[key] for key in METRIC_KEYS[:-1]} == {key: expected[key] for key in METRIC_KEYS[:-1]}
    assert all(values[key] is not None for key in ("fid", "precision", "density", "vendi", "class_accuracy"))


def test_a_row_of_only_non_finite_samples_has_null_metrics(sample_set):
    real, features, logits, correct = sample_set
    values = metrics_of(real, torch.full_like(features, math.nan), logits, class_correct=correct)
    assert values == {**dict.fromkeys(column.name for column in columns()), NON_FINITE: 20}


def test_too_few_finite_samples_for_a_metric_leave_its_columns_null(sample_set):
    """Two finite samples: FID (needs 2) is measured, precision/recall (need k + 1 = 4) are not."""
    real, features, logits, _ = sample_set
    finite = torch.zeros(20, dtype=torch.bool)
    finite[:2] = True
    values = metrics_of(real, features, logits, finite=finite)
    assert values[NON_FINITE] == 18 and values["fid"] is not None and values["vendi"] is not None
    assert values["precision"] is None and values["recall"] is None


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A denoiser whose label-3 embedding is NaN (its label-3 samples are NaN, the others finite), and one
    whose every label embedding, null included, is NaN (every sample is NaN)."""
    folder = tmp_path_factory.mktemp("non_finite")
    some, every = tiny_denoiser(), tiny_denoiser()
    with torch.no_grad():
        some.conditioner.label.embedding.weight[POISONED_LABEL] = math.nan
        every.conditioner.label.embedding.weight.fill_(math.nan)
    return {
        "denoiser": save_component(some, folder / "some.ckpt", with_data=True),
        "all_nan": save_component(every, folder / "every.ckpt", with_data=True),
        "evaluator": save_component(tiny_evaluator(), folder / "evaluator.ckpt"),
        "classifier": save_component(tiny_classifier(), folder / "classifier.ckpt"),
    }


def test_a_sweep_counts_the_non_finite_samples_of_a_row_and_says_so(checkpoints, tmp_path, caplog):
    out = tmp_path / "sweep"
    args = sweep_args(checkpoints, out, "--methods", "[cfg]", "--scales", "[1,2]", "--save_samples", "true")
    with caplog.at_level(logging.WARNING, logger="lightning_diffusion.sweep.run"):
        rows = evaluate.main(args)
    labels = np.load(out / "samples_cfg_s1.npz")["arr_1"]
    poisoned = int((labels == POISONED_LABEL).sum())
    assert 0 < poisoned < 12
    assert [row[NON_FINITE] for row in rows] == [poisoned, poisoned]
    assert all(
        row[key] is not None for row in rows for key in ("fid", "precision", "recall", "class_accuracy")
    )
    assert f"cfg s=1: {poisoned} of 12 samples are not finite" in caplog.text
    assert json.loads((out / "sweep.json").read_text()) == rows


def test_a_sweep_whose_samples_are_all_non_finite_reports_null_metrics(checkpoints, tmp_path, caplog):
    out = tmp_path / "sweep"
    args = sweep_args({**checkpoints, "denoiser": checkpoints["all_nan"]}, out, "--methods", "[cfg]",
                      "--scales", "[1e30]")  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="lightning_diffusion.sweep.run"):
        (row,) = evaluate.main(args)
    assert row[NON_FINITE] == 12 and all(row[column.name] is None for column in columns())
    assert "cfg s=1e+30: all 12 samples are not finite" in caplog.text
    assert (out / "curves.png").is_file() and (out / "frontier.csv").is_file()
