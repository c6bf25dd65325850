"""Paired comparisons of sweep rows (``sweep.compare``, ``python -m lightning_diffusion compare``) and the
ties and held-out selection of ``frontier.csv``, on rows whose saved samples the test writes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from bad_input import assert_says

from lightning_diffusion.__main__ import main
from lightning_diffusion.config import ConfigError
from lightning_diffusion.metrics.registry import Gathered
from lightning_diffusion.sweep.compare import PairedRows, compare_rows, parse_row
from lightning_diffusion.sweep.frontier import frontier_rows, write_frontier
from lightning_diffusion.sweep.saved_features import SweepRecord, save_reference, save_set

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets: spare threads only stall them

N, DIM = 200, 4
RECORD = SweepRecord(seed=0, num_samples=N, reference="ref", extractor="toy")


def write_row(
    folder: Path,
    label: str,
    scale: float,
    correct: torch.Tensor,
    features: torch.Tensor,
    record: SweepRecord = RECORD,
    seed_set: int = 0,
    indices: torch.Tensor | None = None,
) -> None:
    indices = torch.arange(len(correct)) if indices is None else indices
    gathered = Gathered(
        real=torch.zeros(1, DIM),
        generated=features,
        inputs={"features": features, "class_correct": correct},
        indices=indices,
    )
    save_set(folder, label, scale, seed_set, gathered, record)


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Rows a and b on the same noise: b reads 12 more samples correctly and shifts features a little."""
    generator = torch.Generator().manual_seed(0)
    save_reference(tmp_path, "ref", torch.randn(300, DIM, generator=generator))
    features = torch.randn(N, DIM, generator=generator)
    correct = (torch.rand(N, generator=generator) < 0.7).float()
    better = correct.clone()
    better[(correct == 0).nonzero()[:12, 0]] = 1.0
    write_row(tmp_path, "a", 1.0, correct, features)
    write_row(tmp_path, "b", 2.0, better, features + 0.01)
    write_row(tmp_path, "twin", 3.0, correct, features)
    return tmp_path


def test_paired_difference_sees_what_unpaired_intervals_cannot(sweep):
    """b - a in class accuracy is +0.06 on shared noise: the paired interval excludes 0, while the two
    rows' own intervals overlap."""
    paired = PairedRows(1000)
    a, b = paired.row(sweep, "a", 1.0), paired.row(sweep, "b", 2.0)
    found = paired.difference(a, b)["class_accuracy"]
    assert found.difference == pytest.approx(12 / N)
    assert 0 < found.low <= found.difference <= found.high and found.distinguishable
    own_a, own_b = paired.interval(a)["class_accuracy"], paired.interval(b)["class_accuracy"]
    assert own_b.low < own_a.high  # unpaired: overlapping intervals
    same = paired.difference(a, paired.row(sweep, "twin", 3.0))
    assert all(entry.difference == 0 and entry.low == entry.high == 0 for entry in same.values())
    assert not same["fid"].distinguishable


def test_compare_prints_each_metric_with_its_interval(sweep, capsys):
    main(["compare", str(sweep), "--rows", "a@1", "b@2", "--bootstrap", "200"])
    printed = capsys.readouterr().out
    assert "b@2" in printed and "minus a@1" in printed and "seed 0, N = 200" in printed
    lines = {line.split()[0]: line for line in printed.splitlines()[2:]}
    assert {"fid", "class_accuracy", "kid", "precision", "vendi"} <= set(lines)
    assert "+0.06" in lines["class_accuracy"] and lines["class_accuracy"].endswith("differ")


def test_two_sweeps_on_the_same_noise_compare(sweep, tmp_path):
    other = tmp_path / "other"
    save_reference(other, "ref", torch.load(sweep / "reference_ref.pt")["features"])
    (sweep / "features_b_s2_set0.pt").rename(other / "features_b_s2_set0.pt")
    table, found = compare_rows(sweep, ["a@1", "b@2"], other, resamples=200)
    assert str(other) in table and found["class_accuracy"].distinguishable


def rows_not_sharing_noise(sweep: Path, record: SweepRecord) -> None:
    torch.manual_seed(0)
    write_row(sweep, "c", 1.0, torch.ones(record.num_samples), torch.randn(record.num_samples, DIM), record)


@pytest.mark.parametrize(
    ("record", "phrases"),
    [
        (SweepRecord(1, N, "ref", "toy"), ("seeds 0 and 1", "same --seed and --num_samples")),
        (SweepRecord(0, 150, "ref", "toy"), ("N = 200 and 150", "same --seed and --num_samples")),
        (SweepRecord(0, N, "other", "toy2"), ("different real features", "toy vs toy2")),
    ],
)
def test_rows_that_do_not_share_noise_are_refused(sweep, capsys, record, phrases):
    rows_not_sharing_noise(sweep, record)
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", str(sweep), "--rows", "a@1", "c@1"])
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "Traceback" not in capsys.readouterr().err
    assert_says(message, "a@1", "c@1", *phrases)


@pytest.mark.parametrize(
    ("rows", "phrases"),
    [
        (["a@1", "z@4"], ("no saved features of row z@4", "--bootstrap")),
        (["a", "b@2"], ("LABEL@SCALE", "'a'")),
        (["a@one", "b@2"], ("LABEL@SCALE", "'a@one'")),
    ],
)
def test_missing_or_misnamed_rows_are_named(sweep, rows, phrases):
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", str(sweep), "--rows", *rows])
    assert_says(str(exit_info.value.code), *phrases)


def test_compare_refuses_few_resamples_and_a_missing_folder(sweep, tmp_path):
    with pytest.raises(SystemExit, match="at least 100"):
        main(["compare", str(sweep), "--rows", "a@1", "b@2", "--bootstrap", "20"])
    with pytest.raises(SystemExit, match="is not a folder"):
        main(["compare", str(tmp_path / "nowhere"), "--rows", "a@1", "b@2"])


def test_rows_sharing_no_finite_samples_are_refused(sweep):
    features = torch.randn(N, DIM)
    write_row(sweep, "d", 1.0, torch.ones(1), features[:1], indices=torch.tensor([7]))
    with pytest.raises(ConfigError, match="finite samples in common"):
        compare_rows(sweep, ["a@1", "d@1"])


def test_row_names_parse_with_an_optional_ema_length():
    assert parse_row("cfg@2") == ("cfg", 2.0, None)
    assert parse_row("cfg_interval@0.6@0.1") == ("cfg_interval", 0.6, 0.1)


def frontier_row(method: str, scale: float, fid: float, accuracy: float) -> dict:
    return {"method": method, "scale": scale, "fid": fid, "class_accuracy": accuracy, "nfe": 2.0}


def test_frontier_ties_the_methods_not_distinguishable_from_the_lowest_fid(sweep):
    """a and twin are the same samples (a tie by construction); b's features are shifted, so its FID
    differs from a's with near certainty; each entry's FID gets its interval."""
    paired = PairedRows(200)
    fid = {name: paired.interval(paired.row(sweep, name, scale))["fid"].value
           for name, scale in (("a", 1.0), ("b", 2.0), ("twin", 3.0))}  # fmt: skip
    rows = [
        frontier_row("a", 1.0, fid["a"], 0.99),
        frontier_row("b", 2.0, fid["b"], 0.99),
        frontier_row("twin", 3.0, fid["twin"], 0.99),
    ]
    table = frontier_rows(rows, paired, sweep)
    at_95 = {entry["method"]: entry for entry in table if entry["min_class_accuracy"] == 0.95}
    lowest = min(at_95, key=lambda name: at_95[name]["fid"])
    assert at_95[lowest]["tie"] is True
    assert at_95["a"]["tie"] is True and at_95["twin"]["tie"] is True  # the same samples: not distinguishable
    assert all(entry["fid_lo"] <= entry["fid_hi"] for entry in at_95.values())
    path = write_frontier(rows, sweep / "frontier.csv", paired, sweep)
    with open(path, newline="") as handle:
        header = next(csv.reader(handle))
    assert header[-3:] == ["fid_lo", "fid_hi", "tie"]


def test_frontier_without_saved_features_leaves_ties_empty(tmp_path, caplog):
    rows = [frontier_row("a", 1.0, 3.0, 0.99), frontier_row("b", 1.0, 4.0, 0.99)]
    table = frontier_rows(rows, PairedRows(200), tmp_path)
    assert all(entry["tie"] is None and entry["fid_lo"] is None for entry in table)
    assert "no saved features" in caplog.text
