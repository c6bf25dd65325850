"""Scale search by successive halving (Jamieson & Talwalkar 2016; the inner loop of Li et al. 2018's
Hyperband): spend samples where each row's frontier is instead of on a full grid.

Round 0 samples every scale of a row at the sweep's ``num_samples``; each later round keeps the best third
of the previous round's scales (rounded up) and samples them at twice the samples, until one scale is
left and has been sampled alone (at the largest N), or until the next round would spend more than
``search_budget`` generated samples on the row. "Best" is the lowest (or highest) ``search_metric`` among
the scales whose class accuracy reaches ``search_target``; scales short of it rank after, the most
accurate first. Each round is an ordinary sweep (``run_sweep``: DDP, shared trajectories, resume) into
``round<r>/`` with fresh noise, seed sets r·K .. r·K + K - 1, so the last round measures the scale it
chose on samples the choice never saw; its rows carry bootstrap intervals (``bootstrap``, else
``DEFAULT_RESAMPLES``). ``search.json`` (the result per row with every round's ranking) and ``search.csv``
hold the result: the scale found, its metrics with their intervals, the samples spent; ``curves.png`` and
``frontier.csv`` draw the results.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lightning_diffusion import distributed
from lightning_diffusion.atomic import atomic_write
from lightning_diffusion.config import ConfigError
from lightning_diffusion.metrics import Column, column
from lightning_diffusion.sweep.context import SweepContext
from lightning_diffusion.sweep.frontier import reaches_accuracy, write_frontier
from lightning_diffusion.sweep.models import SweepModels
from lightning_diffusion.sweep.outputs import row_columns
from lightning_diffusion.sweep.plans import RowPlan
from lightning_diffusion.sweep.prompts import Prompts
from lightning_diffusion.sweep.settings import SweepSettings

KEEP = 3  # each round keeps the best 1/KEEP of the scales (rounded up)
GROWTH = 2  # and samples them with GROWTH times the samples
DEFAULT_RESAMPLES = 1000  # bootstrap resamples of the last round when the sweep set none


def schedule(scales: int, num_samples: int, seed_sets: int, budget: int | None) -> list[tuple[int, int]]:
    """The rounds of a row with ``scales`` scales: (scales sampled, samples per set) each, within
    ``budget`` generated samples (None: until one scale has been sampled alone)."""
    rounds: list[tuple[int, int]] = []
    count, samples, spent = scales, num_samples, 0
    while True:
        cost = count * samples * seed_sets
        if budget is not None and spent + cost > budget:
            break
        rounds.append((count, samples))
        spent += cost
        if count == 1:
            break
        count, samples = math.ceil(count / KEEP), samples * GROWTH
    return rounds


def ranked(rows: Iterable[dict[str, Any]], metric: Column, target: float | None) -> list[dict[str, Any]]:
    """Rows best first: those reaching ``target`` class accuracy by ``metric``, then the others by class
    accuracy (the closest to the target first), then rows without a value."""

    def key(row: dict[str, Any]) -> tuple[int, float]:
        value, accuracy = row.get(metric.name), row.get("class_accuracy")
        if value is None:
            return 2, 0.0
        if reaches_accuracy(row, target):
            return 0, -value if metric.higher_is_better else value
        return 1, -(accuracy if accuracy is not None else -math.inf)

    return sorted(rows, key=key)


def check_objective(
    models: SweepModels, plans: Sequence[RowPlan], target: float | None, prompts: Prompts | None = None
) -> None:
    """Refuse an accuracy target where no class accuracy can be measured, before the first sample."""
    if target is None:
        return
    if prompts is not None and prompts.kind != "label" and prompts.labels is None:
        raise ConfigError(
            f"--search aims at class accuracy >= {target:g} (--search_target), and this sweep's "
            f"{prompts.prompt_kind.human} carry no class labels to measure it; search the best of a metric "
            "alone with --search_metric (e.g. clip_score) and no --search_target."
        )
    if models.evaluator is None:
        raise ConfigError(
            f"--search aims at the best FID at class accuracy >= {target:g} (--search_target; a plain "
            "--search aims at 0.95), and this sweep has no evaluator of the data's classes to measure class "
            "accuracy (--features inception gives none); pass --evaluator PATH, or search the best of a "
            "metric alone with --search_metric fid and no --search_target."
        )
    blind = [plan.label for plan in plans if not plan.method.conditioned(models)]
    if blind:
        raise ConfigError(
            f"the rows {blind} do not follow class labels, so they have no class accuracy for "
            f"--search_target {target:g}; search them with --search_metric and no --search_target, or drop "
            "them from --methods."
        )


def run_search(
    models: SweepModels, settings: SweepSettings, out: str | Path, context: SweepContext
) -> list[dict[str, Any]]:
    """The search's result rows, one per sweep row (and EMA length), after running its rounds into
    ``out/round<r>/``; rank 0 writes ``search.json``, ``search.csv``, ``curves.png`` and ``frontier.csv``.
    Every rank must call this (each round is a sweep)."""
    from lightning_diffusion.sweep.run import run_sweep

    metric_name, target = settings.search_objective()
    metric = column(metric_name)
    plans = settings.plans()
    check_objective(models, plans, target, context.prompts)
    out = Path(out)
    rounds = {
        _key(plan): schedule(
            len(plan.scales), settings.num_samples, settings.seed_sets, settings.search_budget
        )
        for plan in plans
    }
    survivors = {_key(plan): list(plan.scales) for plan in plans}
    history: dict[tuple[str, float | None], list[dict[str, Any]]] = {_key(plan): [] for plan in plans}
    results: dict[tuple[str, float | None], dict[str, Any]] = {}
    for index in range(max(len(entry) for entry in rounds.values())):
        active = [plan for plan in plans if index < len(rounds[_key(plan)])]
        samples = settings.num_samples * GROWTH**index
        last = any(index == len(rounds[_key(plan)]) - 1 for plan in active)
        resamples = settings.bootstrap or (DEFAULT_RESAMPLES if last else None)
        folder = out / f"round{index}"
        rows = []
        for ema, group in _by_ema(active).items():
            round_settings = dataclasses.replace(
                settings,
                methods=[_entry(settings, plan) for plan in group],
                scales={plan.label: survivors[_key(plan)] for plan in group},
                num_samples=samples,
                bootstrap=resamples,
                ema_lengths=None if ema is None else [ema],
                search=False,
                search_target=None,
                search_metric=None,
                search_budget=None,
            ).without_unused(())
            rows = run_sweep(
                models, round_settings, folder, context, first_seed_set=index * settings.seed_sets
            )
        for plan in active:
            key = _key(plan)
            mine = [
                row
                for row in rows
                if (row["method"], row.get("ema")) == key and float(row["scale"]) in survivors[key]
            ]
            order = ranked(mine, metric, target)
            spent = len(survivors[key]) * samples * settings.seed_sets
            history[key].append(
                {
                    "round": index,
                    "num_samples": samples,
                    "seed_sets": [index * settings.seed_sets + k for k in range(settings.seed_sets)],
                    "samples": spent,
                    "ranking": [
                        {
                            "scale": row["scale"],
                            metric.name: row.get(metric.name),
                            "class_accuracy": row.get("class_accuracy"),
                        }
                        for row in order
                    ],
                }
            )
            if index == len(rounds[key]) - 1:
                results[key] = _result(order[0], history[key], metric, target, folder)
            else:
                survivors[key] = [float(row["scale"]) for row in order[: rounds[key][index + 1][0]]]
    found = [results[_key(plan)] for plan in plans]
    if distributed.rank() == 0:
        _write(out, found, [history[_key(plan)] for plan in plans])
    distributed.barrier()
    return found


def _key(plan: RowPlan) -> tuple[str, float | None]:
    return plan.label, getattr(plan, "ema", None)


def _by_ema(plans: Sequence[RowPlan]) -> dict[float | None, list[RowPlan]]:
    grouped: dict[float | None, list[RowPlan]] = {}
    for plan in plans:
        grouped.setdefault(getattr(plan, "ema", None), []).append(plan)
    return grouped


def _entry(settings: SweepSettings, plan: RowPlan) -> Any:
    """The ``methods`` entry of ``settings`` that made ``plan`` (labels are unique)."""
    for entry in settings.methods:
        label = entry if isinstance(entry, str) else str(entry.get("label", entry.get("method")))
        if label == plan.label:
            return entry
    raise KeyError(plan.label)


def _result(
    row: dict[str, Any], history: list[dict[str, Any]], metric: Column, target: float | None, folder: Path
) -> dict[str, Any]:
    """A row's search result: its last round's best row (metrics and intervals) and what it cost."""
    return {
        **{key: value for key, value in row.items() if key != "seed_sets"},
        "search_metric": metric.name,
        "search_target": target,
        "reached_target": reaches_accuracy(row, target),
        "num_samples": history[-1]["num_samples"],
        "samples": sum(entry["samples"] for entry in history),
        "rounds": len(history),
        "scales_searched": len(history[0]["ranking"]),
        "round_folder": folder.name,
    }


def _write(out: Path, found: list[dict[str, Any]], histories: list[list[dict[str, Any]]]) -> None:
    from lightning_diffusion.sweep.curves import plot_curves

    record = [{**result, "history": history} for result, history in zip(found, histories, strict=True)]
    atomic_write(out / "search.json", lambda handle: json.dump(record, handle, indent=2), mode="w")
    keys = row_columns(found)

    def write_csv(handle: Any) -> None:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(found)

    atomic_write(out / "search.csv", write_csv, mode="w")
    plot_curves(found, out / "curves.png")
    write_frontier(found, out / "frontier.csv")
