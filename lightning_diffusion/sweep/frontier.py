"""The quality-diversity trade-off of a sweep, per method: the best FID at a minimum class accuracy
(``frontier.csv``) and Pareto fronts over two metrics (the rows no other row of the method beats in both).
Directions, the fronts and the columns reported beside the best FID come from the metric registry. With
seed sets the best scale is chosen on one set and reported on the others; with saved features the table
gives the reported FID's interval and marks the methods tied with the lowest (``frontier_rows``).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_diffusion.atomic import atomic_write
from lightning_diffusion.config import ConfigError
from lightning_diffusion.metrics import Column, column, columns, trade_offs
from lightning_diffusion.sweep.seed_sets import combine, row_sets

if TYPE_CHECKING:
    from lightning_diffusion.sweep.compare import PairedRows

log = logging.getLogger(__name__)

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


def frontier_rows(
    rows: Sequence[dict[str, Any]], paired: PairedRows | None = None, folder: str | Path | None = None
) -> list[dict[str, Any]]:
    """Per method and accuracy level, the row with the lowest FID among those whose class accuracy is at
    least the level: its FID, class accuracy, scale, EMA length (scale and length chosen jointly over a
    method's rows), the ``REPORTED`` columns (recall, Vendi score) and NFE (None where no row qualifies, e.g.
    unconditional or text rows without class accuracy).

    Rows of K >= 2 seed sets are chosen on their first set and reported on the mean of the others
    (held-out selection, as Kynkäänniemi et al. 2024 choose the guidance interval): ``fid_same_set`` is
    the chosen row's FID on the set it was chosen on (the same-set optimum, biased low). Every row sees
    the same noise in a set, so sets differ for all rows alike (one set may be harder): ``set_effect`` is
    that shared difference, held-out minus selection-set FID averaged over the other rows, and
    ``selection_bias`` the chosen row's held-out minus same-set FID net of it (the winner's curse). With
    ``paired`` (``sweep.compare``: the rows' saved features in ``folder``), ``fid_lo``/``fid_hi`` bound the
    reported FID and ``tie`` marks, at each level, the methods whose FID is not distinguishable from the
    lowest (the paired 95 % interval of the difference holds 0; the lowest itself is True)."""
    table: list[dict[str, Any]] = []
    chosen: dict[int, tuple[dict[str, Any], list[int] | None]] = {}  # entry position -> row, report sets
    held_out = any(row_sets(row) for row in rows)
    for method in methods_of(rows):
        for level in ACCURACY_LEVELS:
            best = _best([row for row in rows if row["method"] == method], level)
            report = _reported(best) if best is not None else {}
            entry = {
                "method": method,
                "min_class_accuracy": level,
                "fid": report.get("fid"),
                "class_accuracy": report.get("class_accuracy"),
                "scale": best["scale"] if best is not None else None,
                "ema": best.get("ema") if best is not None else None,
                **{key: report.get(key) for key in REPORTED},
                "nfe": best.get("nfe") if best is not None else None,
            }
            if held_out:
                same_set = _selection(best).get("fid") if best is not None else None
                effect = set_effect([row for row in rows if row is not best]) if best is not None else None
                entry["fid_same_set"] = same_set
                entry["set_effect"] = effect
                entry["selection_bias"] = (
                    None if same_set is None or effect is None else entry["fid"] - same_set - effect
                )
            if best is not None:
                sets = row_sets(best)
                chosen[len(table)] = (best, None if sets is None else [s["seed_set"] for s in sets[1:]])
            table.append(entry)
    if paired is not None and folder is not None:
        _mark_intervals_and_ties(table, chosen, paired, Path(folder))
    return table


def set_effect(rows: Sequence[dict[str, Any]]) -> float | None:
    """The mean over ``rows`` (those with seed sets and a FID on each) of their FID on the report sets
    minus their FID on the selection set: how much the held-out sets differ for any row, chosen or not."""
    differences = [
        _reported(row)["fid"] - _selection(row)["fid"]
        for row in rows
        if row_sets(row) and _selection(row).get("fid") is not None and _reported(row).get("fid") is not None
    ]
    return sum(differences) / len(differences) if differences else None


def _selection(row: dict[str, Any]) -> dict[str, Any]:
    """The values a row is chosen on: its first seed set's (the row itself with one set)."""
    sets = row_sets(row)
    return row if sets is None else sets[0]


def _reported(row: dict[str, Any]) -> dict[str, Any]:
    """The values a chosen row is reported with: the mean over its other seed sets (itself with one)."""
    sets = row_sets(row)
    return row if sets is None else combine(sets[1:])


def reaches_accuracy(values: dict[str, Any], level: float | None) -> bool:
    """Whether ``values`` (a row, or one seed set's) reach ``level`` class accuracy; any do for None."""
    accuracy = values.get("class_accuracy")
    return level is None or (accuracy is not None and accuracy >= level - ACCURACY_TOLERANCE)


def _best(rows: Sequence[dict[str, Any]], level: float) -> dict[str, Any] | None:
    """The row of lowest FID (on the selection set) among those reaching ``level`` class accuracy there."""
    qualifying = [
        row
        for row in rows
        if reaches_accuracy(_selection(row), level) and _selection(row).get("fid") is not None
    ]
    return min(qualifying, key=lambda row: _selection(row)["fid"], default=None)


def _mark_intervals_and_ties(
    table: list[dict[str, Any]],
    chosen: dict[int, tuple[dict[str, Any], list[int] | None]],
    paired: PairedRows,
    folder: Path,
) -> None:
    """Fill ``fid_lo``, ``fid_hi`` and ``tie`` of each entry (None where the rows' features are missing)."""
    for entry in table:
        entry.update(fid_lo=None, fid_hi=None, tie=None)
    for level in ACCURACY_LEVELS:
        at_level = [
            p for p in chosen if table[p]["min_class_accuracy"] == level and table[p]["fid"] is not None
        ]
        if not at_level:
            continue
        winner = min(at_level, key=lambda p: table[p]["fid"])
        for position in at_level:
            row, sets = chosen[position]
            try:
                saved = paired.row(folder, row["method"], row["scale"], row.get("ema"))
                estimate = paired.interval(saved, sets, only=("fid",)).get("fid")
                if estimate is not None:
                    table[position].update(fid_lo=estimate.low, fid_hi=estimate.high)
                if position == winner:
                    table[position]["tie"] = True
                    continue
                best = chosen[winner][0]
                lowest = paired.row(folder, best["method"], best["scale"], best.get("ema"))
                found = paired.difference(lowest, saved, sets, only=("fid",))
            except ConfigError as error:
                log.warning("frontier.csv: no interval for %s s=%g (%s)", row["method"], row["scale"], error)
                continue
            if "fid" in found and found["fid"].distinguishable is not None:
                table[position]["tie"] = not found["fid"].distinguishable


def frontier_keys(table: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The columns of a frontier table: ``FRONTIER_KEYS`` and those its entries add (held-out selection,
    intervals and ties)."""
    extra = {key: None for entry in table for key in entry if key not in FRONTIER_KEYS}
    return (*FRONTIER_KEYS, *extra)


def write_frontier(
    rows: Sequence[dict[str, Any]],
    path: str | Path,
    paired: PairedRows | None = None,
    folder: str | Path | None = None,
) -> Path:
    """Write ``frontier_rows(rows, paired, folder)`` as CSV to ``path`` (e.g. ``out / "frontier.csv"``),
    atomically; empty cells where no row qualifies."""
    path = Path(path)
    table = frontier_rows(rows, paired, folder)

    def write(handle: Any) -> None:
        writer = csv.DictWriter(handle, fieldnames=frontier_keys(table))
        writer.writeheader()
        writer.writerows(table)

    atomic_write(path, write, mode="w")
    return path


def read_frontier(path: str | Path) -> list[dict[str, Any]]:
    """A ``frontier.csv`` read back: empty cells None, True/False booleans, numbers as floats."""

    def value(text: str) -> Any:
        if text == "":
            return None
        if text in ("True", "False"):
            return text == "True"
        try:
            return float(text)
        except ValueError:
            return text

    with open(path, newline="", encoding="utf-8") as handle:
        return [
            {key: text if key == "method" else value(text) for key, text in entry.items()}
            for entry in csv.DictReader(handle)
        ]
