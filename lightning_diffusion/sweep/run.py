"""The sweep's run loop: for each row and scale, N samples, their metrics, one row of the table.

Sample i draws its label, initial noise and sampler noise from a generator seeded by (seed, i), so
rows do not depend on the batch size or the number of processes, and every scale sees the same
noise (common random numbers). Ranks take samples i = rank, rank + W, ...; metric states are reduced
over ranks. Samples that are not finite (NaN or inf, e.g. at an extreme scale) are counted in the row's
``non_finite`` column and left out of every metric, with a warning. Rows are written as each scale finishes
(atomically); a re-run with the same output folder skips finished rows. Every row's method, models,
options and settings are checked, and every row's sampler built, before the first sample is drawn.
"""

from __future__ import annotations

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
from lightning_diffusion.sweep.methods import SweepMethod
from lightning_diffusion.sweep.models import SweepModels, check_compatible
from lightning_diffusion.sweep.prompts import Drawn, Prompts
from lightning_diffusion.sweep.reference import reference_features, reference_key
from lightning_diffusion.sweep.sample_files import save_npz, scale_tag
from lightning_diffusion.sweep.settings import SweepSettings

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
    done = {(row["method"], float(row["scale"])) for row in rows}
    planned = [
        (plan.label, plan.method, scale, plan.method.sampler(models, plan, scale))
        for plan in plans
        for scale in plan.scales
        if (plan.label, scale) not in done
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
    metrics = SampleMetrics(real.shape[1]).to(device)
    metrics.update_real(real[rank::world].to(device))

    my_indices = list(range(rank, settings.num_samples, world))
    for label, method, scale, sampler in planned:
        metrics.reset_generated()
        start = time.perf_counter()
        kept = Kept()
        wanted = settings.num_samples if settings.save_samples else settings.grid_size
        batches = range(0, len(my_indices), settings.batch_size)
        for first in tqdm(batches, desc=f"{label} s={scale:g}", disable=not progress or rank != 0):
            indices = my_indices[first : first + settings.batch_size]
            generators = sample_generators(settings.seed, indices, device)
            drawn = prompts.draw(generators)
            with torch.no_grad():
                raw = sampler.sample_batch(generators, drawn.cond)
                images = raw.clamp(-1, 1)
                features, logits = models.extractor.features_and_logits(images)
                outcomes = _judged_outcomes(models, method, images, features, logits, drawn)
                finite = raw.flatten(1).isfinite().all(dim=1)  # clamping would hide an inf
                metrics.update_generated({"features": features, "logits": logits, **outcomes}, finite)
            kept.add(indices, images, drawn, wanted)
        values = metrics.compute()
        if rank == 0 and values[NON_FINITE]:
            warn_non_finite(label, scale, values[NON_FINITE], settings.num_samples)
        evaluations = sum(distributed.gather_objects(sampler.evaluations()))
        seconds = max(distributed.gather_objects(time.perf_counter() - start))
        samples, labels, captions = kept.gather()
        row = {
            "method": label,
            "scale": scale,
            **values,
            "nfe": evaluations / settings.num_samples,
            "seconds": seconds,
        }
        rows.append(row)
        if rank == 0:
            tag = f"{label}_{scale_tag(scale)}"
            grid_labels = labels[: settings.grid_size] if labels is not None else None
            grid = sorted_grid(samples[: settings.grid_size], grid_labels)  # by index
            grid_path = save_grid(grid, out / f"grid_{tag}.png")
            if settings.save_samples:
                extra = {} if captions is None else {"captions": np.array(captions)}
                save_npz(out / f"samples_{tag}.npz", samples, labels, **extra)
            outputs.write_rows(out, rows)
            if log_row is not None:
                log_row(row, grid_path)
    if rank == 0:
        from lightning_diffusion.sweep.curves import plot_curves

        plot_curves(rows, out / "curves.png")
        write_frontier(rows, out / "frontier.csv")
    distributed.barrier()
    return rows


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
