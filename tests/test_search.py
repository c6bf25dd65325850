"""The scale search (``--search``): its successive-halving schedule and ranking, a search end to end with
fresh noise per round and an interval on its result, and the settings it refuses."""

from __future__ import annotations

import json

import pytest
import torch
from test_sweep import checkpoints, sweep_args  # noqa: F401  (the module's checkpoints fixture)
from tiny import tiny_denoiser

import evaluate
from lightning_diffusion.config import ConfigError
from lightning_diffusion.metrics import column
from lightning_diffusion.sweep import SweepContext, SweepModels, SweepSettings, run_sweep
from lightning_diffusion.sweep.prompts import Prompts
from lightning_diffusion.sweep.search import ranked, schedule

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets: spare threads only stall them


@pytest.mark.parametrize(
    ("scales", "budget", "rounds"),
    [
        (9, None, [(9, 10), (3, 20), (1, 40)]),
        (10, None, [(10, 10), (4, 20), (2, 40), (1, 80)]),
        (1, None, [(1, 10)]),
        (9, 149, [(9, 10)]),  # a second round (60 samples) would pass the budget
        (9, 150, [(9, 10), (3, 20)]),
        (9, 190, [(9, 10), (3, 20), (1, 40)]),
    ],
)
def test_each_round_keeps_a_third_of_the_scales_at_twice_the_samples(scales, budget, rounds):
    assert schedule(scales, 10, 1, budget) == rounds


def test_seed_sets_multiply_what_a_round_costs():
    assert schedule(9, 10, 3, 300) == [(9, 10)]


def test_ranking_puts_scales_reaching_the_target_first_by_the_metric():
    rows = [
        {"scale": 1.0, "fid": 2.0, "class_accuracy": 0.80},
        {"scale": 2.0, "fid": 5.0, "class_accuracy": 0.96},
        {"scale": 3.0, "fid": 4.0, "class_accuracy": 0.99},
        {"scale": 4.0, "fid": None, "class_accuracy": None},
        {"scale": 5.0, "fid": 1.0, "class_accuracy": 0.90},
    ]
    order = [row["scale"] for row in ranked(rows, column("fid"), 0.95)]
    assert order == [3.0, 2.0, 5.0, 1.0, 4.0]
    assert [row["scale"] for row in ranked(rows, column("fid"), None)][:2] == [5.0, 1.0]
    assert ranked(rows, column("class_accuracy"), None)[0]["scale"] == 3.0  # higher is better


def test_a_search_spends_its_rounds_on_fresh_noise_and_reports_an_interval(checkpoints, tmp_path):  # noqa: F811
    out = tmp_path / "search"
    args = sweep_args(checkpoints, out, "--methods", "[cfg]", "--scales", "[0,1,2,3,4]", "--num_samples", "8")
    found = evaluate.main([*args, "--search", "--search_target", "0.05", "--bootstrap", "100"])
    (result,) = found
    assert result["method"] == "cfg" and result["scale"] in (0.0, 1.0, 2.0, 3.0, 4.0)
    assert result["rounds"] == 3 and result["num_samples"] == 32
    assert result["samples"] == 5 * 8 + 2 * 16 + 1 * 32
    assert result["fid_lo"] <= result["fid_hi"] and result["search_target"] == 0.05
    record = json.loads((out / "search.json").read_text())
    history = record[0]["history"]
    assert [entry["seed_sets"] for entry in history] == [[0], [1], [2]]  # each round on fresh noise
    assert [len(entry["ranking"]) for entry in history] == [5, 2, 1]
    kept = [entry["scale"] for entry in history[0]["ranking"][:2]]
    assert sorted(entry["scale"] for entry in history[1]["ranking"]) == sorted(kept)
    assert (out / "round2" / f"features_cfg_s{result['scale']:g}_set2.pt").is_file()
    assert (out / "search.csv").read_text().startswith("method,scale,fid")
    assert (out / "curves.png").is_file() and (out / "frontier.csv").is_file()


def test_an_accuracy_target_without_an_evaluator_is_refused_before_sampling(tmp_path):
    models = SweepModels(tiny_denoiser(), extractor=None, evaluator=None)
    with pytest.raises(ConfigError) as caught:
        context = SweepContext(lambda n: [torch.zeros(n, 1, 8, 8)], {}, tmp_path)
        run_sweep(models, SweepSettings(search=True), tmp_path, context)
    message = str(caught.value)
    for phrase in ("class accuracy >= 0.95", "--evaluator PATH", "--search_metric"):
        assert phrase in message
    assert not list(tmp_path.iterdir())


def test_an_accuracy_target_with_captions_without_labels_is_refused(tmp_path):
    models = SweepModels(tiny_denoiser(), extractor=None, evaluator=object())
    prompts = Prompts(captions=["a red square", "a blue circle"])
    with pytest.raises(ConfigError, match=r"carry no class labels .* --search_metric"):
        run_sweep(models, SweepSettings(search=True), tmp_path, SweepContext(list, {}, tmp_path, prompts))


@pytest.mark.parametrize(
    ("settings", "phrases"),
    [
        ({"search_target": 0.9}, ("search_target is a setting of the scale search", "--search")),
        ({"search": True, "search_target": 1.5}, ("search_target", "(0, 1]")),
        ({"search": True, "search_metric": "fdi"}, ("search_metric 'fdi'", "did you mean fid?")),
        ({"search": True, "search_budget": 100, "num_samples": 50}, ("search_budget 100", "4 scales x 50")),
    ],
)
def test_bad_search_settings_are_refused(settings, phrases):
    with pytest.raises(ConfigError) as caught:
        SweepSettings(**settings).validate()
    for phrase in phrases:
        assert phrase in str(caught.value)
