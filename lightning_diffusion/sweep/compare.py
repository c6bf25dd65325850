"""Paired comparisons of sweep rows, from the per-sample data a sweep saves with ``bootstrap``.

Rows of one sweep (and of two sweeps run with the same seed, N and reference) draw sample i of seed set k
from the same noise, so the difference of two rows' metrics is paired: resampling the sample indices the
two rows share, the same draws for both (and the same real draws), lets the noise they have in common
cancel, and the 95 % interval of the B differences (``sweep.bootstrap.bootstrap_interval``: percentile,
moved by the bootstrap's bias estimate) says whether the rows are distinguishable. Over several seed sets
each set is resampled on its own and the differences averaged. ``frontier.csv``'s ties and
``python -m lightning_diffusion compare`` use this.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_diffusion.config import ConfigError
from lightning_diffusion.metrics import METRICS, columns
from lightning_diffusion.metrics.registry import Resamples, RowMetric
from lightning_diffusion.sweep.bootstrap import (
    LEVEL,
    bootstrap_generator,
    check_resamples,
    draw_resamples,
    interval_over_sets,
    resampled_values,
)
from lightning_diffusion.sweep.saved_features import SavedRow, load_reference, load_row


@dataclass(frozen=True)
class Estimate:
    """A row's value of a metric (over the sets asked for) and its 95 % interval (None where unknown)."""

    value: float
    low: float | None
    high: float | None


@dataclass(frozen=True)
class Difference:
    """``second - first`` of a metric for two paired rows, its 95 % interval and both values."""

    first: float
    second: float
    difference: float
    low: float | None
    high: float | None

    @property
    def distinguishable(self) -> bool | None:
        """Whether the interval excludes 0 (None without an interval)."""
        if self.low is None or self.high is None:
            return None
        return not self.low <= 0 <= self.high


def parse_row(text: str) -> tuple[str, float, float | None]:
    """``cfg@2`` -> ("cfg", 2.0, None): a row label and a guidance scale; ``cfg@2@0.1``: and an EMA length."""
    label, *numbers = text.split("@")
    try:
        values = [float(number) for number in numbers]
    except ValueError:
        values = []
    if not label or len(values) not in (1, 2) or not all(np.isfinite(values)):
        raise ConfigError(
            f"a row is named LABEL@SCALE (or LABEL@SCALE@EMA for a row of an EMA length) as in sweep.json, "
            f"e.g. cfg@2 or cfgpp@0.6; got {text!r}."
        )
    return label, values[0], values[1] if len(values) == 2 else None


def check_shared_noise(first: SavedRow, second: SavedRow) -> list[int]:
    """The seed sets two rows share, after refusing rows that do not share their noise (another seed or
    N) or were measured against other real features."""
    where = f"{first.name} ({first.folder}) and {second.name} ({second.folder})"
    a, b = first.record, second.record
    fix = (
        "rows share their noise only when sampled with the same --seed and --num_samples, so only then is "
        "their difference paired; compare rows of sweeps run with the same seed and N."
    )
    if a.seed != b.seed:
        raise ConfigError(f"{where} were sampled with seeds {a.seed} and {b.seed}: {fix}")
    if a.num_samples != b.num_samples:
        raise ConfigError(f"{where} were sampled with N = {a.num_samples} and {b.num_samples} samples: {fix}")
    if a.reference != b.reference:
        raise ConfigError(
            f"{where} were measured against different real features (another data set, split, feature "
            f"network or --num_real: {a.extractor} vs {b.extractor}); their metrics do not compare."
        )
    shared = sorted(set(first.sets) & set(second.sets))
    if not shared:
        raise ConfigError(
            f"{where} share no seed set ({sorted(first.sets)} vs {sorted(second.sets)}); their noise differs."
        )
    return shared


def shared_positions(first: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
    """Positions in two ascending index lists of the sample indices both hold (finite in both rows)."""
    _, in_first, in_second = np.intersect1d(first.numpy(), second.numpy(), return_indices=True)
    return torch.from_numpy(in_first).long(), torch.from_numpy(in_second).long()


class PairedRows:
    """Bootstrap estimates and paired differences of saved rows (``resamples`` draws per seed set, seeded
    as the sweep's own, so a row's interval here is the one in its sweep.json), loading each row and
    reference once."""

    def __init__(self, resamples: int, level: float = LEVEL) -> None:
        check_resamples(resamples, "the number of resamples")
        self.resamples = resamples
        self.level = level
        self._rows: dict[tuple[str, str, float, float | None], SavedRow] = {}
        self._references: dict[tuple[str, str], Tensor] = {}
        self._metrics: dict[int, list[RowMetric]] = {}
        self._values: dict[tuple[Any, ...], list[tuple[dict[str, float], dict[str, Tensor]]]] = {}

    def row(self, folder: str | Path, label: str, scale: float, ema: float | None = None) -> SavedRow:
        key = (str(folder), label, float(scale), ema)
        if key not in self._rows:
            self._rows[key] = load_row(folder, label, scale, ema)
        return self._rows[key]

    def _real(self, row: SavedRow) -> Tensor:
        key = (str(row.folder), row.record.reference)
        if key not in self._references:
            self._references[key] = load_reference(row.folder, row.record.reference)
        return self._references[key]

    def _metrics_of(self, dim: int, only: Collection[str] | None) -> list[RowMetric]:
        if dim not in self._metrics:
            with warnings.catch_warnings():  # torchmetrics' memory notes on states these never fill
                warnings.simplefilter("ignore", UserWarning)
                self._metrics[dim] = [metric(dim) for metric in METRICS.values()]
        if only is None:
            return self._metrics[dim]
        return [m for m in self._metrics[dim] if any(c.name in only for c in m.columns)]

    def _set_values(
        self,
        rows: Sequence[SavedRow],
        seed_set: int,
        positions: Sequence[Tensor | None],
        only: Collection[str] | None = None,
    ) -> list[tuple[dict[str, float], dict[str, Tensor]]]:
        """Each row's (value, draws) per column on one seed set, the rows resampled with the same draws
        (``only``: the columns wanted; None: every metric's); kept for the next call with the same rows."""
        key = (tuple((str(r.folder), r.label, r.scale, r.ema) for r in rows), seed_set, _frozen(only))
        if key not in self._values:
            self._values[key] = self._compute_set_values(rows, seed_set, positions, only)
        return self._values[key]

    def _compute_set_values(
        self,
        rows: Sequence[SavedRow],
        seed_set: int,
        positions: Sequence[Tensor | None],
        only: Collection[str] | None,
    ) -> list[tuple[dict[str, float], dict[str, Tensor]]]:
        real = self._real(rows[0])
        count = len(positions[0]) if positions[0] is not None else len(rows[0].sets[seed_set].indices)
        generator = bootstrap_generator(rows[0].record.seed, seed_set)
        draws = draw_resamples(count, len(real), self.resamples, generator)
        identity = Resamples.identity(count, len(real))
        found = []
        for row, where in zip(rows, positions, strict=True):
            gathered = row.gathered(seed_set, real, where)
            metrics = self._metrics_of(gathered.generated.shape[1], only)
            values = {name: float(v[0]) for name, v in resampled_values(metrics, gathered, identity).items()}
            found.append((values, resampled_values(metrics, gathered, draws)))
        return found

    def interval(
        self, row: SavedRow, sets: Sequence[int] | None = None, only: Collection[str] | None = None
    ) -> dict[str, Estimate]:
        """Each column's value over ``sets`` (default: every saved set) and its interval (``only``: of these
        columns)."""
        sets = _sets(row, sets)
        per_set = [self._set_values([row], k, [None], only)[0] for k in sets]
        estimates = {}
        for name in _shared_columns([values for values, _ in per_set]):
            value = float(np.mean([values[name] for values, _ in per_set]))
            draws = [d[name] for _, d in per_set]
            low, high = interval_over_sets(draws, value, self.level) or (None, None)
            estimates[name] = Estimate(value, low, high)
        return estimates

    def difference(
        self,
        first: SavedRow,
        second: SavedRow,
        sets: Sequence[int] | None = None,
        only: Collection[str] | None = None,
    ) -> dict[str, Difference]:
        """Each column's ``second - first`` over the seed sets both rows have (of ``sets`` if given),
        paired over the sample indices both share, and its interval (``only``: of these columns)."""
        shared = check_shared_noise(first, second)
        if sets is not None:
            shared = [k for k in shared if k in set(sets)]
            if not shared:
                raise ConfigError(f"{first.name} and {second.name} share none of the seed sets {list(sets)}.")
        per_set = []
        for k in shared:
            where = shared_positions(first.sets[k].indices, second.sets[k].indices)
            if len(where[0]) < 2:
                raise ConfigError(
                    f"{first.name} and {second.name} have {len(where[0])} finite samples in common in seed "
                    f"set {k}; a paired comparison needs at least 2."
                )
            per_set.append(self._set_values([first, second], k, list(where), only))
        found = {}
        for name in _shared_columns([values for pair in per_set for values, _ in pair]):
            a = float(np.mean([pair[0][0][name] for pair in per_set]))
            b = float(np.mean([pair[1][0][name] for pair in per_set]))
            draws = [pair[1][1][name] - pair[0][1][name] for pair in per_set]
            low, high = interval_over_sets(draws, b - a, self.level) or (None, None)
            found[name] = Difference(a, b, b - a, low, high)
        return found


def _frozen(only: Collection[str] | None) -> tuple[str, ...] | None:
    return None if only is None else tuple(sorted(only))


def _sets(row: SavedRow, sets: Sequence[int] | None) -> list[int]:
    if sets is None:
        return list(row.sets)
    missing = [k for k in sets if k not in row.sets]
    if missing:
        raise ConfigError(f"{row.folder} has no saved features of {row.name} in seed set(s) {missing}.")
    return list(sets)


def _shared_columns(per_row: Sequence[dict[str, Any]]) -> list[str]:
    """Registry columns every entry has a finite value of, in registry order."""
    names = [column.name for column in columns()]
    return [n for n in names if all(n in values and np.isfinite(values[n]) for values in per_row)]


def comparison_table(first: SavedRow, second: SavedRow, found: dict[str, Difference], resamples: int) -> str:
    """The printed comparison: a header naming the rows and the pairing, then one line per metric."""
    sets = sorted(set(first.sets) & set(second.sets))
    width = max(14, len(first.name) + 2, len(second.name) + 2)
    lines = [
        f"{second.name} ({second.folder}) minus {first.name} ({first.folder}): seed {first.record.seed}, "
        f"N = {first.record.num_samples}, seed sets {sets}, {resamples} paired resamples, 95 % intervals",
        f"{'metric':<20}{first.name:>{width}}{second.name:>{width}}{'difference':>13}   95 % interval",
    ]
    for name, entry in found.items():
        interval = "" if entry.low is None else f"[{_signed(entry.low)}, {_signed(entry.high)}]"
        verdict = {True: "differ", False: "not distinguishable", None: ""}[entry.distinguishable]
        lines.append(
            f"{name:<20}{entry.first:>{width}.4g}{entry.second:>{width}.4g}{_signed(entry.difference):>13}   "
            f"{interval:<28}{verdict}"
        )
    return "\n".join(lines)


def _signed(value: float) -> str:
    """A difference with its sign, 4 significant digits, rounding's last bits shown as 0."""
    return f"{0.0 if abs(value) < 1e-12 else value:+.4g}"


def compare_rows(
    folder: str | Path, rows: Sequence[str], other: str | Path | None = None, resamples: int = 1000
) -> tuple[str, dict[str, Difference]]:
    """Compare two rows (``LABEL@SCALE``) of one sweep folder, or the first of ``folder`` with the second
    of ``other``: the printed table and each metric's difference."""
    check_resamples(resamples, "--bootstrap")
    if len(rows) != 2:
        raise ConfigError(f"--rows takes two rows, LABEL@SCALE each (e.g. cfg@2 cfgpp@0.6), got {len(rows)}.")
    for where in (folder, other):
        if where is not None and not Path(where).is_dir():
            raise ConfigError(f"{where} is not a folder; pass a sweep's --out folder.")
    paired = PairedRows(resamples)
    first = paired.row(folder, *parse_row(rows[0]))
    second = paired.row(other if other is not None else folder, *parse_row(rows[1]))
    found = paired.difference(first, second)
    return comparison_table(first, second, found, resamples), found
