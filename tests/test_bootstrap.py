"""Bootstrap intervals of a sweep row: coverage on a known distribution, each metric's resampled values
against the metric recomputed on the resampled samples, the sweep's interval columns and bad counts."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from test_sweep import checkpoints, sweep_args  # noqa: F401  (the module's checkpoints fixture)

import evaluate
from lightning_diffusion.config import ConfigError
from lightning_diffusion.metrics import METRICS, SampleMetrics
from lightning_diffusion.metrics.cmmd import gaussian_mmd2
from lightning_diffusion.metrics.frechet import sample_frechet_distance
from lightning_diffusion.metrics.kid import kernel_inception_distance
from lightning_diffusion.metrics.registry import Gathered, Resamples
from lightning_diffusion.metrics.vendi import vendi_score
from lightning_diffusion.sweep.bootstrap import (
    bootstrap_generator,
    bootstrap_interval,
    check_resamples,
    draw_resamples,
    resampled_values,
)
from lightning_diffusion.sweep.compare import PairedRows

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets: spare threads only stall them

REPEATS = 300
RESAMPLES = 1000


def coverage(samples: torch.Tensor, truth: float, metric: str, outcome: str) -> float:
    """The share of repeats whose 95 % interval of ``metric`` (a mean outcome) holds ``truth``."""
    registered = METRICS[metric](1)
    real = torch.zeros(2, 1)
    held = 0
    for repeat, values in enumerate(samples):
        gathered = Gathered(real, values[:, None], {outcome: values})
        draws = draw_resamples(len(values), 2, RESAMPLES, bootstrap_generator(0, repeat))
        low, high = bootstrap_interval(
            resampled_values([registered], gathered, draws)[metric], float(values.mean())
        )
        held += low <= truth <= high
    return held / len(samples)


def test_interval_of_a_gaussian_mean_covers_the_true_mean_95_percent_of_the_time():
    """300 samples of 40 draws of N(3, 2²): the interval of their mean holds 3 in 90-98 % of repeats."""
    samples = 3 + 2 * torch.randn(
        REPEATS, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    rate = coverage(samples, 3.0, "clip_score", "clip_scores")
    print(f"coverage of the Gaussian mean: {rate:.3f}")
    assert 0.90 <= rate <= 0.98


def test_interval_of_class_accuracy_covers_the_true_rate():
    """300 rows of 150 Bernoulli(0.8) outcomes: the accuracy interval holds 0.8 in 90-98 % of repeats."""
    samples = (torch.rand(REPEATS, 150, generator=torch.Generator().manual_seed(1)) < 0.8).double()
    rate = coverage(samples, 0.8, "class_accuracy", "class_correct")
    print(f"coverage of the Bernoulli rate: {rate:.3f}")
    assert 0.90 <= rate <= 0.98


def test_fid_interval_covers_the_expected_fid_at_this_n_despite_the_resamples_larger_bias():
    """FID of 100 samples of N(0.15, 1.15² I) against 200 of N(0, I) in 8 dimensions, 200 repeats: the
    interval holds E[FID_N] (the mean FID of 20,000 independent draws) in at least 90 % of repeats (98 %:
    it errs wide, as a resample's FID also spreads more than the row's), though the resamples' own FIDs lie
    above the row's (their duplicates add bias) and their plain quantiles hold it in about half."""
    generator = torch.Generator().manual_seed(2)
    dim, n_generated, n_real = 8, 100, 200

    def draw(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        real = torch.randn(count, n_real, dim, generator=generator, dtype=torch.float64)
        generated = 0.15 + 1.15 * torch.randn(
            count, n_generated, dim, generator=generator, dtype=torch.float64
        )
        return real, generated

    expected = float(sample_frechet_distance(*draw(20000)).mean())
    registered, held, plain = METRICS["fid"](dim), 0, 0
    for repeat, (real, generated) in enumerate(zip(*draw(200), strict=True)):
        draws = draw_resamples(n_generated, n_real, 300, bootstrap_generator(0, repeat))
        values = registered.resampled(Gathered(real, generated), draws)["fid"]
        low, high = bootstrap_interval(values, float(sample_frechet_distance(real, generated)))
        held += low <= expected <= high
        quantiles = torch.quantile(values, torch.tensor([0.025, 0.975], dtype=torch.float64))
        plain += quantiles[0] <= expected <= quantiles[1]
    print(f"E[FID_N] {expected:.4f}: coverage {held / 200:.3f}, plain percentile {plain / 200:.3f}")
    assert 0.90 <= held / 200 <= 0.995
    assert plain / 200 < 0.85


def gathered_row(generated: int = 30, real: int = 40, dim: int = 6, seed: int = 0):
    """A row's SampleMetrics fed Gaussian features, logits and outcomes; its values and gathered samples."""
    generator = torch.Generator().manual_seed(seed)
    metrics = SampleMetrics(dim)
    metrics.update_real(torch.randn(real, dim, generator=generator))
    inputs = {
        "features": 0.3 + 1.2 * torch.randn(generated, dim, generator=generator),
        "logits": 2 * torch.randn(generated, 5, generator=generator),
        "class_correct": (torch.rand(generated, generator=generator) < 0.7).float(),
    }
    metrics.update_generated(inputs, indices=torch.arange(generated))
    return metrics, *metrics.compute_and_gather()


def test_every_resampled_metric_on_the_samples_themselves_is_the_row_value():
    metrics, values, gathered = gathered_row()
    identity = Resamples.identity(len(gathered.generated), len(gathered.real))
    found = resampled_values(metrics.metrics.values(), gathered, identity)
    expected = {
        "fid",
        "inception_score",
        "precision",
        "recall",
        "density",
        "coverage",
        "vendi",
        "kid",
        "cmmd",
    }
    assert expected | {"class_accuracy"} <= set(found)
    for name, value in found.items():
        assert float(value[0]) == pytest.approx(values[name], rel=1e-5, abs=1e-7), name


def test_resampled_values_are_the_metric_of_the_resampled_samples():
    """FID, IS, KID, CMMD, Vendi and class accuracy on a resample (duplicates and all) equal the metric
    computed on the samples the resample draws."""
    metrics, _, gathered = gathered_row(generated=12, dim=16)  # fewer samples than dimensions: Vendi's kernel
    draws = draw_resamples(12, 40, 4, torch.Generator().manual_seed(3))
    found = resampled_values(metrics.metrics.values(), gathered, draws)
    for b in range(len(draws)):
        real, generated = gathered.real[draws.real[b]], gathered.generated[draws.generated[b]]
        logits = gathered.inputs["logits"][draws.generated[b]].double()
        p = logits.softmax(dim=1)
        inception = torch.exp((p * (p.log() - p.mean(dim=0, keepdim=True).log())).sum(dim=1).mean())
        expected = {
            "fid": float(sample_frechet_distance(real, generated)),
            "kid": kernel_inception_distance(real, generated),
            "cmmd": 1000 * gaussian_mmd2(real, generated),
            "vendi": vendi_score(generated),
            "inception_score": float(inception),
            "class_accuracy": float(gathered.inputs["class_correct"][draws.generated[b]].double().mean()),
        }
        for name, value in expected.items():
            assert float(found[name][b]) == pytest.approx(value, rel=1e-6), name


def test_samples_gathered_in_any_order_come_back_in_sample_index_order():
    metrics = SampleMetrics(2)
    metrics.update_real(torch.randn(5, 2))
    features, logits = torch.arange(12.0).reshape(6, 2), torch.arange(18.0).reshape(6, 3)
    for part in ([4, 0, 2], [5, 1, 3]):  # as two ranks would hold them
        inputs = {"features": features[part], "logits": logits[part]}
        metrics.update_generated(inputs, indices=torch.tensor(part))
    _, gathered = metrics.compute_and_gather()
    assert gathered.indices.tolist() == list(range(6))
    assert torch.equal(gathered.generated, features) and torch.equal(gathered.inputs["logits"], logits)


@pytest.mark.parametrize("count", [0, None])
def test_no_resamples_means_no_intervals(count):
    check_resamples(count)


@pytest.mark.parametrize("count", [1, 50, 99, -5, 2.5, True])
def test_too_few_resamples_are_refused(count):
    with pytest.raises(ConfigError, match=r"at least 100 .*e\.g\. 1000, or 0 \(null\)"):
        check_resamples(count)


def test_a_bootstrap_below_100_is_refused_by_evaluate(checkpoints, tmp_path, capsys):  # noqa: F811
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(sweep_args(checkpoints, tmp_path / "sweep", "--bootstrap", "50"))
    message = str(exit_info.value.code)
    assert "bootstrap" in message and "at least 100" in message and "got 50" in message
    assert not (tmp_path / "sweep" / "sweep.json").exists()


def test_a_sweep_with_bootstrap_writes_intervals_features_and_ties(checkpoints, tmp_path, monkeypatch):  # noqa: F811
    """Two seed sets with intervals: interval columns, saved features, compare's interval of a row equal to
    the sweep's, and a frontier (at accuracy >= 0: the untrained evaluator reaches no real level) chosen on
    set 0, reported on set 1, with intervals and ties."""
    monkeypatch.setattr("lightning_diffusion.sweep.frontier.ACCURACY_LEVELS", (0.0,))
    out = tmp_path / "sweep"
    args = sweep_args(checkpoints, out, "--methods", "[cfg,classifier]", "--scales", "[0,2]")
    rows = evaluate.main([*args, "--bootstrap", "200", "--seed_sets", "2"])
    for row in rows:
        for name in ("fid", "kid", "precision", "recall", "class_accuracy", "inception_score", "vendi"):
            assert row[f"{name}_lo"] <= row[f"{name}_hi"], name
        assert row["class_accuracy_lo"] <= row["class_accuracy"] <= row["class_accuracy_hi"]
    assert json.loads((out / "sweep.json").read_text()) == rows
    header = (out / "sweep.csv").read_text().splitlines()[0].split(",")
    assert {"fid_lo", "fid_hi", "kid_lo", "fid_mean", "fid_sd", "fid_min"} <= set(header)
    assert (out / "features_cfg_s2_set1.pt").is_file() and list(out.glob("reference_*.pt"))
    # compare's interval of one row is the sweep's: the same draws from the same samples
    paired = PairedRows(200)
    estimate = paired.interval(paired.row(out, "cfg", 2.0))["fid"]
    row = next(row for row in rows if (row["method"], row["scale"]) == ("cfg", 2.0))
    assert estimate.value == pytest.approx(row["fid"], rel=1e-5)
    assert estimate.low == pytest.approx(row["fid_lo"], rel=1e-6)
    assert estimate.high == pytest.approx(row["fid_hi"], rel=1e-6)
    with open(out / "frontier.csv", newline="") as handle:
        frontier = {entry["method"]: entry for entry in csv.DictReader(handle)}
    for method, entry in frontier.items():
        chosen = min((r for r in rows if r["method"] == method), key=lambda r: r["seed_sets"][0]["fid"])
        assert float(entry["scale"]) == chosen["scale"]
        assert float(entry["fid"]) == pytest.approx(chosen["seed_sets"][1]["fid"])
        assert float(entry["fid_same_set"]) == pytest.approx(chosen["seed_sets"][0]["fid"])
        assert float(entry["fid_lo"]) <= float(entry["fid_hi"]) and entry["tie"] in ("True", "False")
    lowest = min(frontier.values(), key=lambda entry: float(entry["fid"]))
    assert lowest["tie"] == "True"
