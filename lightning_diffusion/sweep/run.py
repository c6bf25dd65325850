"""The sweep's run loop: for each row and scale, N samples per seed set, their metrics, one row of the table.

Sample i of seed set k draws its label, initial noise and sampler noise from a generator seeded by
(seed, i, k) (set 0: by (seed, i)), so rows do not depend on the batch size or the number of processes,
and every scale sees the same noise (common random numbers). The seed sets of a row are an axis of its
plan (``RowPlan.seed_sets``): the loop samples each set in turn and ``sweep.seed_sets`` folds them into
the row. With ``bootstrap`` rank 0 resamples each set's gathered samples for the row's intervals
(``sweep.bootstrap``) and saves them for paired comparisons (``sweep.saved_features``). Ranks take
samples i = rank, rank + W, ...; metric states are reduced over ranks. Samples that are not finite (NaN or
inf, e.g. at an extreme scale) are counted in the row's ``non_finite`` column and left out of every metric,
with a warning. Rows are written as each scale finishes (atomically); a re-run with the same output folder
skips finished rows. Every row's method, models,
options and settings are checked, and every row's sampler built, before the first sample is drawn.
With ``share_trajectories`` the pending scales of a row whose guidance is scale-free at first (outside a
guidance interval, where a schedule is zero) sample each batch together and compute that prefix once
(``sweep.sharing``): bit-identical samples; NFE and seconds charge each scale an equal share of it.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from lightning_diffusion import distributed
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import sample_generators
from lightning_diffusion.metrics import NON_FINITE, SampleMetrics
from lightning_diffusion.metrics.clip_score import clip_scores
from lightning_diffusion.sweep import outputs, seed_sets
from lightning_diffusion.sweep.bootstrap import (
    bootstrap_generator,
    draw_resamples,
    interval_columns,
    resampled_values,
)
from lightning_diffusion.sweep.context import SweepContext
from lightning_diffusion.sweep.frontier import write_frontier
from lightning_diffusion.sweep.grids import save_grid, sorted_grid
from lightning_diffusion.sweep.methods import RowSampler, SweepMethod
from lightning_diffusion.sweep.models import SweepModels, check_compatible
from lightning_diffusion.sweep.plans import RowPlan
from lightning_diffusion.sweep.prompts import Drawn, Prompts
from lightning_diffusion.sweep.reference import reference_features, reference_key
from lightning_diffusion.sweep.sample_files import save_npz
from lightning_diffusion.sweep.saved_features import SweepRecord, row_tag, save_reference, save_set
from lightning_diffusion.sweep.settings import SweepSettings
from lightning_diffusion.sweep.sharing import ScaleGroup, shares_prefix

log = logging.getLogger(__name__)


@dataclass
class Kept:
    """The samples a rank keeps for rank 0 to write (grid, npz), with their sample indices."""

    indices: list[int] = field(default_factory=list)
    images: list[Tensor] = field(default_factory=list)
    labels: list[Tensor] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)

    def add(self, indices: list[int], images: Tensor, drawn: Drawn, count: int) -> None:
        """Keep the samples with index < ``count``: the grid's, or all of them with ``save_samples``."""
        keep = [position for position, index in enumerate(indices) if index < count]
        if not keep:
            return
        self.indices += [indices[p] for p in keep]
        self.images.append(images[keep].cpu())
        if drawn.labels is not None:
            self.labels.append(drawn.labels[keep].cpu())
        if drawn.captions is not None:
            self.captions += [drawn.captions[p] for p in keep]

    def gather(self) -> tuple[Tensor, Tensor | None, list[str] | None]:
        """Every rank's kept samples ordered by sample index: images, labels and captions (if any)."""
        parts = [part for part in distributed.gather_objects(self) if part.indices]
        order = torch.tensor([i for part in parts for i in part.indices]).argsort()
        images = torch.cat([image for part in parts for image in part.images])[order]
        labels = [label for part in parts for label in part.labels]
        captions = [caption for part in parts for caption in part.captions]
        return (
            images,
            torch.cat(labels)[order] if labels else None,
            [captions[i] for i in order.tolist()] if captions else None,
        )


def run_sweep(
    models: SweepModels,
    settings: SweepSettings,
    out: str | Path,
    context: SweepContext,
    first_seed_set: int = 0,
) -> list[dict[str, Any]]:
    """Run every (row label, scale) not yet in ``out/sweep.json``; return all rows. With ``settings.search``
    run the scale search instead (``sweep.search``) and return its result rows. ``first_seed_set`` shifts
    every row's seed sets (the search samples each round with fresh sets). Every rank must call this
    (metrics are collectives).
    """
    settings.validate()
    if settings.search:
        from lightning_diffusion.sweep.search import run_search

        return run_search(models, settings, out, context)
    prompts = context.prompts or Prompts(num_classes=models.num_classes)
    plans = [
        dataclasses.replace(plan, seed_sets=tuple(first_seed_set + k for k in plan.seed_sets))
        for plan in settings.plans()
    ]
    check_compatible(models, plans, prompts)
    out = Path(out)
    rows = distributed.broadcast_object(outputs.read_rows(out))
    _check_finished_sets(rows, plans, out)
    done = {outputs.row_key(row) for row in rows}
    planned = [
        (plan, scale, plan.method.sampler(models, plan, scale))
        for plan in plans
        for scale in plan.scales
        if (plan.label, plan.ema, scale) not in done
    ]
    denoiser = models.denoiser
    device = next(denoiser.parameters()).device
    rank, world = distributed.rank(), distributed.world_size()
    num_real = settings.num_real or settings.num_samples
    key = reference_key(
        context.reference_id, denoiser.image_shape, settings.real_split, models.extractor.name, num_real
    )
    real = reference_features(
        lambda: context.real_batches(num_real),
        models.extractor,
        Path(context.cache_dir) / f"real_{key}.pt",
        settings.batch_size,
        device,
    )
    if len(real) < 2:
        raise ConfigError(f"the {settings.real_split} split has {len(real)} images; metrics need at least 2.")
    resampling = None
    if settings.resamples:
        record = SweepRecord(settings.seed, settings.num_samples, key, models.extractor.name)
        resampling = Resampling(out, record, real.to(device) if rank == 0 else real)
        if rank == 0 and planned:
            save_reference(out, key, real)
    pool = [SampleMetrics(real.shape[1]).to(device)]  # one per scale of the largest group
    pool[0].update_real(real[rank::world].to(device))
    my_indices = list(range(rank, settings.num_samples, world))
    wanted = settings.num_samples if settings.save_samples else settings.grid_size
    for entries in _groups(planned, settings, prompts, my_indices, device):
        while len(pool) < len(entries):
            pool.append(SampleMetrics(real.shape[1]).to(device))
            pool[-1].update_real(real[rank::world].to(device))
        plan = entries[0][0]
        models.use_ema(plan.ema)  # the rows of one EMA length are planned together
        group = ScaleGroup([sampler for *_, sampler in entries])
        runs = [ScaleRun(*entry, metrics) for entry, metrics in zip(entries, pool, strict=False)]
        for seed_set in plan.seed_sets:
            show = context.progress and rank == 0
            _sample_set(runs, group, models, settings, prompts, my_indices, wanted, seed_set, device, show)
            for run in runs:
                _measure(run, seed_set, settings, resampling)
        for index, run in enumerate(runs):
            _finish(run, group, index, settings, rows, out, context.log_row)
    if rank == 0:
        from lightning_diffusion.sweep.compare import PairedRows
        from lightning_diffusion.sweep.curves import plot_curves

        plot_curves(rows, out / "curves.png")
        paired = PairedRows(settings.resamples) if settings.resamples else None
        write_frontier(rows, out / "frontier.csv", paired=paired, folder=out)
    distributed.barrier()
    return rows


def _check_finished_sets(rows: list[dict[str, Any]], plans: list[RowPlan], out: Path) -> None:
    """Refuse to add rows of K seed sets to a table whose finished rows of the same plans have another
    count: their means, held-out selection and intervals would not compare."""
    wanted = {(plan.label, plan.ema): len(plan.seed_sets) for plan in plans}
    for row in rows:
        count = len(row.get(seed_sets.SETS_KEY) or [None])
        sets = wanted.get((row["method"], row.get("ema")))
        if sets is not None and sets != count:
            raise ConfigError(
                f"{out / 'sweep.json'} holds row {row['method']} s={row['scale']:g} of {count} seed set(s), "
                f"and this sweep draws {sets}; use another --out, or the --seed_sets of the finished rows."
            )


@dataclass
class Resampling:
    """What rank 0 needs to resample a row's samples: the output folder, the sweep's record (seed, N,
    reference) and the real features in their cached order (the same on any number of ranks)."""

    out: Path
    record: SweepRecord
    real: Tensor


@dataclass
class SetValues:
    """One seed set of a (row, scale): its metric values and (rank 0, with bootstrap) each column's draws."""

    seed_set: int
    values: dict[str, Any]
    draws: dict[str, Tensor] | None = None


@dataclass
class ScaleRun:
    """One (row, scale) being sampled: its plan, scale and sampler, the metrics it feeds, the samples it
    keeps (of its first seed set), its seconds besides sampling (drawing prompts, metrics) and the values
    of the seed sets sampled so far."""

    plan: RowPlan
    scale: float
    sampler: RowSampler
    metrics: SampleMetrics
    kept: Kept = field(default_factory=Kept)
    seconds: float = 0.0
    sets: list[SetValues] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.plan.label

    @property
    def method(self) -> SweepMethod:
        return self.plan.method

    @property
    def ema(self) -> float | None:
        return self.plan.ema


Planned = tuple[RowPlan, float, RowSampler]


def _sample_set(
    runs: list[ScaleRun],
    group: ScaleGroup,
    models: SweepModels,
    settings: SweepSettings,
    prompts: Prompts,
    my_indices: list[int],
    wanted: int,
    seed_set: int,
    device: torch.device,
    show: bool,
) -> None:
    """Sample this rank's share of one seed set at every scale of a group, feeding each scale's metrics
    (reset first); the first set's samples below ``wanted`` are kept for the grid and npz."""
    for run in runs:
        run.metrics.reset_generated()
    keep = seed_set == runs[0].plan.seed_sets[0]
    batches = range(0, len(my_indices), settings.batch_size)
    description = f"{runs[0].label} s={','.join(f'{run.scale:g}' for run in runs)}"
    if len(runs[0].plan.seed_sets) > 1:
        description += f" set {seed_set}"
    for first in tqdm(batches, desc=description, disable=not show):
        start = time.perf_counter()
        indices = my_indices[first : first + settings.batch_size]
        generators = sample_generators(settings.seed, indices, device, seed_set)
        drawn = prompts.draw(generators)
        index_tensor = torch.tensor(indices, device=device)
        drawing = (time.perf_counter() - start) / len(runs)
        with torch.no_grad():
            raws = group.sample(generators, drawn.cond)
        for run, raw in zip(runs, raws, strict=True):
            start = time.perf_counter()
            with torch.no_grad():
                images = raw.clamp(-1, 1)
                features, logits = models.extractor.features_and_logits(images)
                outcomes = _judged_outcomes(models, run.method, images, features, logits, drawn)
                finite = raw.flatten(1).isfinite().all(dim=1)  # clamping would hide an inf
                inputs = {"features": features, "logits": logits, **outcomes}
                run.metrics.update_generated(inputs, finite, index_tensor)
            if keep:
                run.kept.add(indices, images, drawn, wanted)
            run.seconds += drawing + time.perf_counter() - start


def _groups(
    planned: list[Planned],
    settings: SweepSettings,
    prompts: Prompts,
    indices: list[int],
    device: torch.device,
) -> list[list[Planned]]:
    """The planned (row, scale) entries in order: a row's pending scales together where they share a
    trajectory prefix (``sweep.sharing``; probed on this rank's first batch), each alone otherwise."""
    groups: list[list[Planned]] = []
    for _, same_row in itertools.groupby(planned, key=lambda entry: (entry[0].label, entry[0].ema)):
        entries = list(same_row)
        if settings.share_trajectories and len(entries) > 1 and indices:
            plan = entries[0][0]
            generators = sample_generators(
                settings.seed, indices[: settings.batch_size], device, plan.seed_sets[0]
            )
            drawn = prompts.draw(generators)
            with torch.no_grad():
                if shares_prefix(plan.method, entries[0][2], generators, drawn.cond):
                    groups.append(entries)
                    continue
        groups.extend([entry] for entry in entries)
    return groups


def _measure(run: ScaleRun, seed_set: int, settings: SweepSettings, resampling: Resampling | None) -> None:
    """A sampled seed set's metric values (a collective); with bootstrap, rank 0 resamples the gathered
    samples (draws seeded by (seed, set)) and saves them for paired comparisons."""
    start = time.perf_counter()
    values, gathered = run.metrics.compute_and_gather()
    draws = None
    if distributed.rank() == 0:
        if values[NON_FINITE]:
            where = run.label if len(run.plan.seed_sets) == 1 else f"{run.label} (seed set {seed_set})"
            warn_non_finite(where, run.scale, values[NON_FINITE], settings.num_samples)
        if resampling is not None and gathered is not None:
            gathered = dataclasses.replace(gathered, real=resampling.real)
            generator = bootstrap_generator(settings.seed, seed_set)
            count, real = len(gathered.generated), resampling.real
            resamples = draw_resamples(count, len(real), settings.resamples, generator, real.device)
            draws = resampled_values(run.metrics.metrics.values(), gathered, resamples, values)
            save_set(resampling.out, run.label, run.scale, seed_set, gathered, resampling.record, run.ema)
    run.sets.append(SetValues(seed_set, values, draws))
    run.seconds += time.perf_counter() - start


def _finish(
    run: ScaleRun,
    group: ScaleGroup,
    index: int,
    settings: SweepSettings,
    rows: list[dict[str, Any]],
    out: Path,
    log_row: Callable[[dict[str, Any], Path], None] | None,
) -> None:
    """A sampled scale's row from its seed sets (``sweep.seed_sets``), with amortised NFE and seconds and
    (bootstrap) intervals; rank 0 writes its grid, its samples and the table."""
    start = time.perf_counter()
    rank = distributed.rank()
    evaluations = sum(distributed.gather_objects(group.evaluations(index)))
    spent = run.seconds + group.seconds(index) + time.perf_counter() - start
    seconds = max(distributed.gather_objects(spent))
    samples, labels, captions = run.kept.gather()
    row = {
        "method": run.label,
        "scale": run.scale,
        "ema": run.ema,
        **seed_sets.combine([entry.values for entry in run.sets]),
        "nfe": evaluations / (settings.num_samples * len(run.sets)),
        "seconds": seconds,
    }
    row.update(_statistics(run.sets, settings.resamples > 0 and rank == 0))
    if len(run.sets) > 1:
        row[seed_sets.SETS_KEY] = [{"seed_set": entry.seed_set, **entry.values} for entry in run.sets]
    if settings.resamples:
        row = distributed.broadcast_object(row)  # rank 0's intervals
    rows.append(row)
    if rank == 0:
        tag = row_tag(run.label, run.scale, run.ema)
        grid_labels = labels[: settings.grid_size] if labels is not None else None
        grid = sorted_grid(samples[: settings.grid_size], grid_labels)  # by index
        grid_path = save_grid(grid, out / f"grid_{tag}.png")
        if settings.save_samples:
            extra = {} if captions is None else {"captions": np.array(captions)}
            save_npz(out / f"samples_{tag}.npz", samples, labels, **extra)
        outputs.write_rows(out, rows)
        if log_row is not None:
            log_row(row, grid_path)


def _statistics(sets: list[SetValues], intervals: bool) -> dict[str, Any]:
    """The columns beside a row's values, grouped by metric column: over K >= 2 sets its mean, sd and
    minimum; with ``intervals`` its 95 % bootstrap interval (of the mean over the sets)."""
    per_column = seed_sets.set_statistics([entry.values for entry in sets]) if len(sets) > 1 else {}
    drawn = [entry for entry in sets if entry.draws is not None]
    bounds = interval_columns([e.values for e in drawn], [e.draws for e in drawn]) if intervals else {}
    found: dict[str, Any] = {}
    for name in dict.fromkeys([*per_column, *(key.rsplit("_", 1)[0] for key in bounds)]):
        for statistic, value in per_column.get(name, {}).items():
            found[f"{name}_{statistic}"] = value
        for end in ("lo", "hi"):
            if f"{name}_{end}" in bounds:
                found[f"{name}_{end}"] = bounds[f"{name}_{end}"]
    return found


def _judged_outcomes(
    models: SweepModels, method: SweepMethod, images: Tensor, features: Tensor, logits: Tensor, drawn: Drawn
) -> dict[str, Tensor]:
    """Per-sample outcomes beyond FID, IS and PR, where the models and the prompts allow: whether the
    evaluator reads a sample as its label (conditioned methods), its CLIP score against its caption and
    the fraction of its caption's attributes the evaluator reads back. The evaluator's features and logits
    are the extractor's own when it is the extractor, a second pass otherwise (Inception features)."""
    outcomes = {}
    evaluated = None
    if models.evaluator is not None:
        same = models.evaluator is models.extractor
        evaluated = (features, logits) if same else models.evaluator.features_and_logits(images)
    if evaluated is not None and drawn.labels is not None and method.conditioned(models):
        outcomes["class_correct"] = (evaluated[1].argmax(dim=1) == drawn.labels).float()
    if drawn.captions is not None and models.scorer is not None:
        outcomes["clip_scores"] = clip_scores(models.scorer, images, drawn.captions)
    if evaluated is not None and drawn.attributes is not None and models.attribute_evaluator is not None:
        predicted = models.attribute_evaluator.attribute_predictions_from(evaluated[0])
        outcomes["attribute_correct"] = (predicted == drawn.attributes).float().mean(dim=1)
    return outcomes


def warn_non_finite(label: str, scale: float, count: int, total: int) -> None:
    """Log that ``count`` of a row's ``total`` samples are not finite and that the metrics leave them out."""
    if count == total:
        what = f"all {total} samples are not finite (NaN or inf); the row's metrics are null"
    else:
        what = f"{count} of {total} samples are not finite (NaN or inf); the metrics leave them out"
    log.warning("%s s=%g: %s", label, scale, what)
