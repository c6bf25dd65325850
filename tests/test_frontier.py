"""frontier.csv and Pareto fronts from hand-made sweep rows."""

from __future__ import annotations

import csv

from lightning_diffusion.sweep.frontier import (
    CLASS_ACCURACY,
    FID,
    FRONTIER_KEYS,
    PRECISION,
    RECALL,
    frontier_rows,
    fronts_by_method,
    pareto_front,
    write_frontier,
)


def row(method: str, scale: float, **metrics: float | None) -> dict:
    return {
        "method": method,
        "scale": scale,
        "nfe": 2.0,
        "vendi": 10 * scale,
        "recall": 1 - scale / 10,
        **metrics,
    }


ROWS = [
    row("cfg", 0.0, fid=5.0, class_accuracy=0.80, precision=0.5, recall=0.9),
    row("cfg", 1.0, fid=6.0, class_accuracy=0.92, precision=0.6, recall=0.8),
    row("cfg", 2.0, fid=9.0, class_accuracy=0.9499999881, precision=0.7, recall=0.85),  # float32 19/20
    row("cfg", 3.0, fid=7.0, class_accuracy=0.97, precision=0.6, recall=0.6),
    row("cfg", 4.0, fid=12.0, class_accuracy=0.99, precision=0.55, recall=0.5),
    row("clip", 1.0, fid=4.0, class_accuracy=None, precision=0.4, recall=0.7),
    row("apg", 2.0, fid=3.0, class_accuracy=0.91, precision=0.8, recall=0.8),
]


def test_frontier_gives_each_method_its_lowest_fid_at_each_accuracy_level():
    table = {(entry["method"], entry["min_class_accuracy"]): entry for entry in frontier_rows(ROWS)}
    assert list(table) == [(m, level) for m in ("cfg", "clip", "apg") for level in (0.90, 0.95, 0.99)]
    assert table["cfg", 0.90]["scale"] == 1.0 and table["cfg", 0.90]["fid"] == 6.0
    assert table["cfg", 0.95] == {  # 0.9499999881 (19 of 20 in float32) counts as 0.95, but FID 9 > 7
        "method": "cfg", "min_class_accuracy": 0.95, "fid": 7.0, "class_accuracy": 0.97, "scale": 3.0,
        "ema": None, "recall": 0.6, "vendi": 30.0, "nfe": 2.0,
    }  # fmt: skip
    assert table["cfg", 0.99]["fid"] == 12.0
    assert all(table["clip", level]["fid"] is None for level in (0.90, 0.95, 0.99))  # no class accuracy
    assert table["apg", 0.90]["fid"] == 3.0 and table["apg", 0.95]["scale"] is None


def test_accuracy_of_19_in_20_read_as_float32_reaches_the_95_percent_level():
    table = frontier_rows([row("cfg", 2.0, fid=9.0, class_accuracy=0.9499999881)])
    assert [entry["fid"] for entry in table] == [9.0, 9.0, None]


def test_write_frontier_writes_a_csv_with_empty_cells_where_no_row_qualifies(tmp_path):
    path = write_frontier(ROWS, tmp_path / "out" / "frontier.csv")
    with open(path, newline="") as handle:
        written = list(csv.DictReader(handle))
    assert tuple(written[0]) == FRONTIER_KEYS and len(written) == 9
    clip = [entry for entry in written if entry["method"] == "clip"]
    assert all(entry["fid"] == "" and entry["scale"] == "" for entry in clip)
    assert written[1]["fid"] == "7.0" and written[1]["min_class_accuracy"] == "0.95"


def test_precision_recall_front_keeps_the_rows_no_other_row_beats_in_both():
    """cfg: (recall, precision) = (0.9, 0.5), (0.8, 0.6), (0.85, 0.7), (0.6, 0.6), (0.5, 0.55). (0.85, 0.7)
    beats (0.8, 0.6), (0.6, 0.6) and (0.5, 0.55); (0.9, 0.5) has the best recall."""
    cfg = [entry for entry in ROWS if entry["method"] == "cfg"]
    front = pareto_front(cfg, RECALL, PRECISION)
    assert [entry["scale"] for entry in front] == [2.0, 0.0]  # sorted by recall


def test_fid_accuracy_front_mixes_directions_lower_fid_higher_accuracy():
    """cfg: (accuracy, FID) = (0.80, 5), (0.92, 6), (0.95, 9), (0.97, 7), (0.99, 12); (0.97, 7) beats
    (0.95, 9); the others each trade accuracy for FID."""
    fronts = fronts_by_method(ROWS, CLASS_ACCURACY, FID)
    assert [entry["scale"] for entry in fronts["cfg"]] == [0.0, 1.0, 3.0, 4.0]
    assert fronts["clip"] == [] and [entry["scale"] for entry in fronts["apg"]] == [2.0]


def test_equal_points_do_not_dominate_each_other():
    twins = [row("cfg", 1.0, fid=5.0, class_accuracy=0.9), row("cfg", 2.0, fid=5.0, class_accuracy=0.9)]
    assert pareto_front(twins, CLASS_ACCURACY, FID) == twins


class RecordingRun:
    """Stands in for a W&B run: keeps what ``log`` received (tables and plots are real W&B objects)."""

    def __init__(self) -> None:
        self.logged: dict = {}

    def log(self, data: dict) -> None:
        self.logged.update(data)


def test_sweep_summary_logs_the_frontier_table_and_each_front_to_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    from lightning_diffusion.sweep.curves import plot_curves
    from lightning_diffusion.sweep.wandb_logging import log_sweep_summary

    rows = [{**entry, "inception_score": 2.0} for entry in ROWS]
    plot_curves(rows, tmp_path / "curves.png")
    run = RecordingRun()
    log_sweep_summary(run, rows, tmp_path)
    frontier = run.logged["sweep/frontier"]
    assert frontier.columns == list(FRONTIER_KEYS) and len(frontier.data) == 9
    assert frontier.data[1][:3] == ["cfg", 0.95, 7.0]
    for name, points in (
        ("precision_recall", 4),
        ("fid_accuracy", 5),
    ):  # cfg 2 + apg 1 + clip 1; cfg 4 + apg 1
        assert len(run.logged[f"sweep/front/{name}"].table.data) == points, name
    assert "sweep/curves" in run.logged and "sweep/table" in run.logged
