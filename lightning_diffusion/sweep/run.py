"""The sweep's run loop: for each row and scale, N samples, their metrics, one row of the table.

Sample i draws its label, initial noise and sampler noise from a generator seeded by (seed, i), so
rows do not depend on the batch size or the number of processes, and every scale sees the same
noise (common random numbers). Ranks take samples i = rank, rank + W, ...; metric states are reduced
over ranks. Samples that are not finite (NaN or inf, e.g. at an extreme scale) are counted in the row's
``non_finite`` column and left out of every metric, with a warning. Rows are written as each scale finishes
(atomically); a re-run with the same output folder skips finished rows. Every row's method, models,
options and settings are checked, and every row's sampler built, before the first sample is drawn.
With ``share_trajectories`` the pending scales of a row whose guidance is scale-free at first (outside a
guidance interval, where a schedule is zero) sample each batch together and compute that prefix once
(``sweep.sharing``): bit-identical samples; NFE and seconds charge each scale an equal share of it.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable
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
from lightning_diffusion.sweep import outputs
from lightning_diffusion.sweep.frontier import write_frontier
from lightning_diffusion.sweep.grids import save_grid, sorted_grid
from lightning_diffusion.sweep.methods import RowSampler, SweepMethod
from lightning_diffusion.sweep.models import SweepModels, check_compatible
from lightning_diffusion.sweep.prompts import Drawn, Prompts
from lightning_diffusion.sweep.reference import reference_features, reference_key
from lightning_diffusion.sweep.sample_files import save_npz, scale_tag
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
    real_batches: Callable[[int], Iterable[Tensor]],
    reference_id: Any,
    cache_dir: str | Path,
    log_row: Callable[[dict[str, Any], Path], None] | None = None,
    progress: bool = True,
    prompts: Prompts | None = None,
) -> list[dict[str, Any]]:
    """Run every (row label, scale) not yet in ``out/sweep.json``; return all rows.

    ``real_batches(n)`` yields n real images of the reference split, batch by batch; ``reference_id``
    identifies that data (source spec) in the cache key. ``prompts`` says what samples are conditioned
    on (default: uniform labels over the evaluator's classes). Every rank must call this (metrics are
    collectives).
    """
    settings.validate()
    prompts = prompts or Prompts(num_classes=models.num_classes)
    plans = settings.plans()
    check_compatible(models, plans, prompts)
    out = Path(out)
    rows = distributed.broadcast_object(outputs.read_rows(out))
    done = {outputs.row_key(row) for row in rows}
    planned = [
        (plan.label, plan.method, scale, plan.method.sampler(models, plan, scale), plan.ema)
        for plan in plans
        for scale in plan.scales
        if (plan.label, plan.ema, scale) not in done
    ]
    denoiser = models.denoiser
    device = next(denoiser.parameters()).device
    rank, world = distributed.rank(), distributed.world_size()
    num_real = settings.num_real or settings.num_samples
    key = reference_key(
        reference_id, denoiser.image_shape, settings.real_split, models.extractor.name, num_real
    )
    real = reference_features(
        lambda: real_batches(num_real),
        models.extractor,
        Path(cache_dir) / f"real_{key}.pt",
        settings.batch_size,
        device,
    )
    if len(real) < 2:
        raise ConfigError(f"the {settings.real_split} split has {len(real)} images; metrics need at least 2.")
    pool = [SampleMetrics(real.shape[1]).to(device)]  # one per scale of the largest group
    pool[0].update_real(real[rank::world].to(device))
    my_indices = list(range(rank, settings.num_samples, world))
    wanted = settings.num_samples if settings.save_samples else settings.grid_size
    for entries in _groups(planned, settings, prompts, my_indices, device):
        while len(pool) < len(entries):
            pool.append(SampleMetrics(real.shape[1]).to(device))
            pool[-1].update_real(real[rank::world].to(device))
        models.use_ema(entries[0][4])  # the rows of one EMA length are planned together
        group = ScaleGroup([entry[3] for entry in entries])
        runs = [ScaleRun(*entry, metrics) for entry, metrics in zip(entries, pool, strict=False)]
        for run in runs:
            run.metrics.reset_generated()
        batches = range(0, len(my_indices), settings.batch_size)
        description = f"{entries[0][0]} s={','.join(f'{entry[2]:g}' for entry in entries)}"
        for first in tqdm(batches, desc=description, disable=not progress or rank != 0):
            start = time.perf_counter()
            indices = my_indices[first : first + settings.batch_size]
            generators = sample_generators(settings.seed, indices, device)
            drawn = prompts.draw(generators)
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
                    run.metrics.update_generated(inputs, finite)
                run.kept.add(indices, images, drawn, wanted)
                run.seconds += drawing + time.perf_counter() - start
        for index, run in enumerate(runs):
            _finish(run, group, index, settings, rows, out, log_row)
    if rank == 0:
        from lightning_diffusion.sweep.curves import plot_curves

        plot_curves(rows, out / "curves.png")
        write_frontier(rows, out / "frontier.csv")
    distributed.barrier()
    return rows


@dataclass
class ScaleRun:
    """One (row, scale) being sampled: its label, method, scale, sampler and EMA length, the metrics it feeds,
    the samples it keeps and its seconds besides sampling (drawing prompts, metrics)."""

    label: str
    method: SweepMethod
    scale: float
    sampler: RowSampler
    ema: float | None
    metrics: SampleMetrics
    kept: Kept = field(default_factory=Kept)
    seconds: float = 0.0


Planned = tuple[str, SweepMethod, float, RowSampler, float | None]  # label, method, scale, sampler, EMA


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
    for _, same_row in itertools.groupby(planned, key=lambda entry: (entry[0], entry[4])):
        entries = list(same_row)
        if settings.share_trajectories and len(entries) > 1 and indices:
            generators = sample_generators(settings.seed, indices[: settings.batch_size], device)
            drawn = prompts.draw(generators)
            with torch.no_grad():
                if shares_prefix(entries[0][1], entries[0][3], generators, drawn.cond):
                    groups.append(entries)
                    continue
        groups.extend([entry] for entry in entries)
    return groups


def _finish(
    run: ScaleRun,
    group: ScaleGroup,
    index: int,
    settings: SweepSettings,
    rows: list[dict[str, Any]],
    out: Path,
    log_row: Callable[[dict[str, Any], Path], None] | None,
) -> None:
    """A sampled scale's row: its metrics (a collective), amortised NFE and seconds; rank 0 writes its grid,
    its samples and the table."""
    start = time.perf_counter()
    rank = distributed.rank()
    values = run.metrics.compute()
    if rank == 0 and values[NON_FINITE]:
        warn_non_finite(run.label, run.scale, values[NON_FINITE], settings.num_samples)
    evaluations = sum(distributed.gather_objects(group.evaluations(index)))
    spent = run.seconds + group.seconds(index) + time.perf_counter() - start
    seconds = max(distributed.gather_objects(spent))
    samples, labels, captions = run.kept.gather()
    row = {
        "method": run.label,
        "scale": run.scale,
        "ema": run.ema,
        **values,
        "nfe": evaluations / settings.num_samples,
        "seconds": seconds,
    }
    rows.append(row)
    if rank == 0:
        tag = f"{run.label}{'' if run.ema is None else f'_ema{run.ema:g}'}_{scale_tag(run.scale)}"
        grid_labels = labels[: settings.grid_size] if labels is not None else None
        grid = sorted_grid(samples[: settings.grid_size], grid_labels)  # by index
        grid_path = save_grid(grid, out / f"grid_{tag}.png")
        if settings.save_samples:
            extra = {} if captions is None else {"captions": np.array(captions)}
            save_npz(out / f"samples_{tag}.npz", samples, labels, **extra)
        outputs.write_rows(out, rows)
        if log_row is not None:
            log_row(row, grid_path)


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
