"""Seed sets: K disjoint noise sets per row, one row per scale.

Sample i of seed set k draws its prompt and noise from the generator of (seed, i, k)
(``diffusion.noise.sample_generators``); set 0 is the sweep's noise without seed sets, so one set gives
exactly the rows it always gave. Every scale and method of a sweep sees the same noise in each set, so
rows stay paired. A row of K >= 2 sets holds in each metric column the mean over the sets (``non_finite``:
the sum), beside it ``<column>_mean``, ``_sd`` (sample standard deviation) and ``_min`` (EDM and EDM2
report the minimum FID over three sets), and under ``seed_sets`` each set's own values (``sweep.json``
only), from which ``frontier.csv`` chooses each method's scale on the first set and reports it on the
others (``frontier.py``).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from lightning_diffusion.metrics import NON_FINITE, columns

STATISTICS = ("mean", "sd", "min")
SETS_KEY = "seed_sets"  # a row's per-set values, in sweep.json


def combine(per_set: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The row's values from each set's: one set's as they are; over K sets each column's mean (over the
    sets where it has a value; None where none has) and the sum of ``non_finite``."""
    if len(per_set) == 1:
        return dict(per_set[0])
    combined: dict[str, Any] = {}
    for key in per_set[0]:
        present = [values[key] for values in per_set if values.get(key) is not None]
        if key == NON_FINITE:
            combined[key] = sum(present)
        else:
            combined[key] = statistics.fmean(present) if present else None
    return combined


def set_statistics(per_set: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per metric column with a value in some set (registry order), its mean, standard deviation and
    minimum over the sets where it has one (sd needs two)."""
    found = {}
    for column in columns():
        present = [values[column.name] for values in per_set if values.get(column.name) is not None]
        if not present:
            continue
        found[column.name] = {
            "mean": statistics.fmean(present),
            "sd": statistics.stdev(present) if len(present) >= 2 else None,
            "min": min(present),
        }
    return found


def row_sets(row: dict[str, Any]) -> list[dict[str, Any]] | None:
    """A row's per-set values (each with its ``seed_set``), None for a row of one set."""
    sets = row.get(SETS_KEY)
    return sets if isinstance(sets, list) and len(sets) >= 2 else None
