"""The quality-diversity trade-off of a sweep, per method: the best FID at a minimum class accuracy
(``frontier.csv``) and Pareto fronts over two metrics (the rows no other row of the method beats in both).
Directions, the fronts and the columns reported beside the best FID come from the metric registry.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_diffusion.metrics import Column, column, columns, trade_offs

ACCURACY_LEVELS = (0.90, 0.95, 0.99)
ACCURACY_TOLERANCE = 1e-6  # class accuracy is a float32 mean: 19 of 20 correct reads 0.9499999881
REPORTED = tuple(entry.name for entry in columns() if entry.frontier)  # beside the best FID, e.g. recall
FRONTIER_KEYS = ("method", "min_class_accuracy", "fid", "class_accuracy", "scale", "ema", *REPORTED, "nfe")

PRECISION, RECALL, FID, CLASS_ACCURACY = (
    column(name) for name in ("precision", "recall", "fid", "class_accuracy")
)
FRONTS = {  # name -> (x, y) of a plot, from the registered trade-offs that shade a front
    trade_off.front: (column(trade_off.x), column(trade_off.y))
    for trade_off in trade_offs()
    if trade_off.front is not None
}


def methods_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The methods of the rows, in the order they first appear."""
    return list(dict.fromkeys(row["method"] for row in rows))


def pareto_front(rows: Sequence[dict[str, Any]], first: Column, second: Column) -> list[dict[str, Any]]:
    """The rows no other row dominates (at least as good in both metrics and better in one), sorted by
    ``first``'s value; rows missing either metric take no part. Pass one method's rows for its front."""
    scored = [row for row in rows if first.value(row) is not None and second.value(row) is not None]

    def dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
        objectives = (first, second)
        no_worse = all(o.at_least_as_good(o.value(a), o.value(b)) for o in objectives)
        return no_worse and any(o.value(a) != o.value(b) for o in objectives)

    front = [row for row in scored if not any(dominates(other, row) for other in scored)]
    return sorted(front, key=first.value)


def fronts_by_method(
    rows: Sequence[dict[str, Any]], first: Column, second: Column
) -> dict[str, list[dict[str, Any]]]:
    """Each method's Pareto front over ``first`` and ``second`` (empty where its rows lack either)."""
    return {
        method: pareto_front([row for row in rows if row["method"] == method], first, second)
        for method in methods_of(rows)
    }


def frontier_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method and accuracy level, the row with the lowest FID among those whose class accuracy is at
    least the level: its FID, class accuracy, scale, EMA length (scale and length chosen jointly over a
    method's rows), the ``REPORTED`` columns (recall, Vendi score) and NFE (None where no row qualifies, e.g.
    unconditional or text rows without class accuracy)."""
    table = []
    for method in methods_of(rows):
        for level in ACCURACY_LEVELS:
            qualifying = [
                row
                for row in rows
                if row["method"] == method
                and row.get("class_accuracy") is not None
                and row["class_accuracy"] >= level - ACCURACY_TOLERANCE
                and row.get("fid") is not None
            ]
            best = min(qualifying, key=lambda row: row["fid"], default={})
            table.append(
                {
                    "method": method,
                    "min_class_accuracy": level,
                    **{key: best.get(key) for key in FRONTIER_KEYS[2:]},
                }
            )
    return table


def write_frontier(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write ``frontier_rows(rows)`` as CSV to ``path`` (e.g. ``out / "frontier.csv"``); empty cells where
    no row qualifies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FRONTIER_KEYS)
        writer.writeheader()
        writer.writerows(frontier_rows(rows))
    return path
