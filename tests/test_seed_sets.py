"""Seed sets: K disjoint noise sets per row, set 0 the sweep's usual noise; each metric's mean, sd and
minimum over the sets; held-out selection in frontier.csv; 1 and 2 processes agree; bad counts."""

from __future__ import annotations

import csv
import json
import statistics

import numpy as np
import pytest
import torch
from test_sweep import checkpoints, run_evaluate, sweep_args  # noqa: F401  (the module's fixture)

import evaluate
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import sample_generators, sample_seed
from lightning_diffusion.sweep import SweepSettings, read_rows
from lightning_diffusion.sweep.frontier import frontier_rows
from lightning_diffusion.sweep.seed_sets import combine

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets: spare threads only stall them

COLUMNS = ("fid", "inception_score", "precision", "recall", "class_accuracy", "kid", "vendi")


def test_set_zero_is_the_noise_before_seed_sets_and_other_sets_are_disjoint():
    before = np.random.SeedSequence([7, 3]).generate_state(2, dtype=np.uint32)
    assert sample_seed(7, 3) == sample_seed(7, 3, 0) == (int(before[0]) << 31) ^ int(before[1])
    seeds = {sample_seed(0, i, k) for i in range(2000) for k in range(4)}
    assert len(seeds) == 8000  # no two (index, set) pairs share a stream
    zero, one = sample_generators(0, [5], seed_set=0)[0], sample_generators(0, [5], seed_set=1)[0]
    assert not torch.equal(torch.randn(4, generator=zero), torch.randn(4, generator=one))


def test_plans_carry_the_seed_sets_as_an_axis():
    plans = SweepSettings(methods=["cfg", "classifier"], seed_sets=3).plans()
    assert [plan.seed_sets for plan in plans] == [(0, 1, 2), (0, 1, 2)]
    assert SweepSettings().plans()[0].seed_sets == (0,)


@pytest.mark.parametrize("count", [0, -1, 1.5, True])
def test_seed_sets_below_one_are_refused(count):
    with pytest.raises(ConfigError, match=r"seed_sets .* at least 1"):
        SweepSettings(seed_sets=count).validate()


def test_seed_sets_zero_is_refused_by_evaluate(checkpoints, tmp_path):  # noqa: F811
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(sweep_args(checkpoints, tmp_path / "sweep", "--seed_sets", "0"))
    message = str(exit_info.value.code)
    assert message.startswith("error: seed_sets") and "at least 1, got 0" in message
    assert not (tmp_path / "sweep" / "sweep.json").exists()


@pytest.fixture(scope="module")
def sweeps(checkpoints, tmp_path_factory):  # noqa: F811
    """The same two rows with one seed set (today's sweep) and with two."""
    folder = tmp_path_factory.mktemp("seed_sets")
    found = {}
    for sets in (1, 2):
        out = folder / f"sets{sets}"
        args = sweep_args(
            checkpoints, out, "--methods", "[cfg]", "--scales", "[0,2]", "--seed_sets", str(sets)
        )
        found[sets] = (out, evaluate.main([*args, "--save_samples", "true"]))
    return found


def test_one_seed_set_gives_todays_rows_and_set_zero_of_two_is_them(sweeps):
    (_, one), (out, two) = sweeps[1], sweeps[2]
    assert all("seed_sets" not in row and "fid_mean" not in row for row in one)
    for row_one, row_two in zip(one, two, strict=True):
        sets = row_two["seed_sets"]
        assert [entry["seed_set"] for entry in sets] == [0, 1]
        for key in (*COLUMNS, "non_finite"):
            assert sets[0][key] == row_one[key], key  # set 0 is bit for bit the one-set sweep
        assert sets[1]["fid"] != sets[0]["fid"]
    samples = np.load(out / "samples_cfg_s2.npz")  # grids and npz come from set 0
    np.testing.assert_array_equal(samples["arr_0"], np.load(sweeps[1][0] / "samples_cfg_s2.npz")["arr_0"])


def test_each_metric_has_its_mean_sd_and_minimum_over_the_sets(sweeps):
    out, rows = sweeps[2]
    for row in rows:
        for key in COLUMNS:
            values = [entry[key] for entry in row["seed_sets"]]
            assert row[key] == pytest.approx(statistics.fmean(values))
            assert row[f"{key}_mean"] == pytest.approx(statistics.fmean(values))
            assert row[f"{key}_sd"] == pytest.approx(statistics.stdev(values))
            assert row[f"{key}_min"] == min(values)
        assert row["non_finite"] == sum(entry["non_finite"] for entry in row["seed_sets"])
        assert row["nfe"] == (3 if row["scale"] == 0 else 6)  # per sample, as with one set
    assert json.loads((out / "sweep.json").read_text()) == rows
    with open(out / "sweep.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert {"fid_mean", "fid_sd", "fid_min", "kid_sd"} <= set(table[0]) and "seed_sets" not in table[0]
    assert float(table[0]["fid_sd"]) == pytest.approx(rows[0]["fid_sd"])
    assert (out / "curves.png").stat().st_size > 0


def test_adding_rows_of_another_seed_set_count_to_a_table_is_refused(sweeps, checkpoints):  # noqa: F811
    out, rows = sweeps[2]
    args = sweep_args(checkpoints, out, "--methods", "[cfg]", "--scales", "[0,2,3]", "--seed_sets", "3")
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(args)
    message = str(exit_info.value.code)
    assert "of 2 seed set(s)" in message and "draws 3" in message and "another --out" in message
    assert read_rows(out) == rows


def held_out_rows() -> list[dict]:
    """cfg: s=2 looks best on set 0 (a lucky draw) but s=3 is better on the others."""

    def row(scale: float, fids: list[float], accuracies: list[float]) -> dict:
        sets = [{"seed_set": k, "fid": f, "class_accuracy": a, "recall": 0.5, "non_finite": 0}
                for k, (f, a) in enumerate(zip(fids, accuracies, strict=True))]  # fmt: skip
        return {"method": "cfg", "scale": scale, **combine(sets), "nfe": 6.0, "seed_sets": sets}

    return [row(1.0, [9.0, 9.0, 9.0], [0.5, 0.5, 0.5]), row(2.0, [3.0, 5.0, 5.4], [0.99, 0.99, 0.99]),
            row(3.0, [3.5, 4.0, 4.2], [0.99, 0.98, 1.0])]  # fmt: skip


def test_frontier_chooses_on_one_set_and_reports_on_the_others():
    table = frontier_rows(held_out_rows())
    entry = next(e for e in table if e["min_class_accuracy"] == 0.95)
    assert entry["scale"] == 2.0  # chosen on set 0
    assert entry["fid"] == pytest.approx(5.2)  # reported on sets 1 and 2: the winner's curse shows
    assert entry["fid_same_set"] == 3.0
    assert entry["set_effect"] == pytest.approx(0.3)  # the other rows: (0 + 0.6) / 2
    assert entry["selection_bias"] == pytest.approx(2.2 - 0.3)
    assert entry["class_accuracy"] == pytest.approx(0.99) and entry["recall"] == 0.5


def test_a_set_harder_for_every_row_is_no_selection_bias():
    """Set 0 is 1.0 worse for every row (they share its noise) and no row is lucky: the held-out FID is
    1.0 lower than the same-set one, all of it set effect, none of it the winner's curse."""
    rows = held_out_rows()
    for row in rows:
        for entry in row["seed_sets"]:
            entry["fid"] = 4.0 + row["scale"] + (1.0 if entry["seed_set"] == 0 else 0.0)
        row.update(combine(row["seed_sets"]))
    entry = next(e for e in frontier_rows(rows) if e["min_class_accuracy"] == 0.95)
    assert entry["fid"] - entry["fid_same_set"] == pytest.approx(-1.0)
    assert entry["set_effect"] == pytest.approx(-1.0) and entry["selection_bias"] == pytest.approx(0.0)


def test_two_processes_give_the_rows_and_intervals_of_one(checkpoints, tmp_path):  # noqa: F811
    """Seed sets and bootstrap intervals over 2 DDP processes: the same rows, per-set values and intervals."""
    results = {}
    for devices in (1, 2):
        out = tmp_path / f"devices{devices}"
        args = sweep_args(checkpoints, out, "--methods", "[cfg]", "--scales", "[2]", "--num_samples", "13",
                          "--batch_size", "4", "--seed_sets", "2", "--bootstrap", "100")  # fmt: skip
        done = run_evaluate(args, devices)
        assert done.returncode == 0, done.stderr[-3000:]
        results[devices] = read_rows(out)
    (one,), (two,) = results[1], results[2]
    for key, value in one.items():
        if isinstance(value, float) and key != "seconds":
            assert two[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
    for set_one, set_two in zip(one["seed_sets"], two["seed_sets"], strict=True):
        for key in COLUMNS:
            assert set_two[key] == pytest.approx(set_one[key], rel=1e-6, abs=1e-6), key
    assert one["fid_lo"] < one["fid_hi"]
    a = torch.load(tmp_path / "devices1" / "features_cfg_s2_set1.pt", weights_only=True)
    b = torch.load(tmp_path / "devices2" / "features_cfg_s2_set1.pt", weights_only=True)
    assert a["indices"].tolist() == b["indices"].tolist() == list(range(13))
    torch.testing.assert_close(a["inputs"]["features"], b["inputs"]["features"], rtol=1e-5, atol=1e-6)
