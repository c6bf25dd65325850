"""The guidance sweep: for each method and scale, N samples, their metrics, one row.

Sample i draws its label, initial noise and sampler noise from a generator seeded by (seed, i), so
rows do not depend on the batch size or the number of processes, and every scale sees the same
noise (common random numbers). Ranks take samples i = rank, rank + W, ...; metric states are reduced
over ranks. Rows are written as each scale finishes (atomically); a re-run with the same output
folder skips finished rows. Real-data reference features are cached on disk.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from lightning_diffusion import distributed
from lightning_diffusion.components.prior import check_candidates
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import SamplerSpec, sample_generators
from lightning_diffusion.grid import save_grid, sorted_grid
from lightning_diffusion.guidance.factory import build_guidance
from lightning_diffusion.guidance.registry import get_method, method_names
from lightning_diffusion.metrics import FeatureExtractor, SampleMetrics
from lightning_diffusion.metrics.clip_score import clip_scores
from lightning_diffusion.pipeline import Cascade, Unclip
from lightning_diffusion.prompts import Drawn, Prompts
from lightning_diffusion.resampling import check_aug_level
from lightning_diffusion.samples_io import save_npz, scale_tag
from lightning_diffusion.sampling import CountingModel, generate

log = logging.getLogger(__name__)
CASCADE = "cascade"  # base denoiser + upsamplers; its scale is the base stage's CFG scale
UNCLIP = "unclip"  # prior + unCLIP decoder (+ upsamplers); its scale is the decoder's CFG scale
METRIC_KEYS = (
    "fid",
    "inception_score",
    "precision",
    "recall",
    "class_accuracy",
    "clip_score",
    "attribute_accuracy",
)
ROW_KEYS = ("method", "scale", *METRIC_KEYS, "nfe", "seconds")


@dataclass
class SweepSettings:
    """What a sweep runs: methods x scales, N samples each, sampler (a spec; in YAML
    ``sampler: {name: ddim, steps: 50}``, on the command line ``--sampler.steps 25``) and seeds."""

    methods: list[str] = field(default_factory=lambda: ["cfg"])
    scales: list[float] | dict[str, list[float]] = field(default_factory=lambda: [0.0, 1.0, 2.0, 3.0])
    num_samples: int = 500
    batch_size: int = 100
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    seed: int = 0
    num_real: int | None = None
    real_split: str = "train"  # the reference set papers use; the small CPU configs hold out "test"
    interval: list[float] | None = None  # noise levels (sigma_min, sigma_max] of the *_interval methods
    rescale: float | None = None
    threshold: float | None = None
    save_samples: bool = False
    grid_size: int = 64
    aug_level: float = 0.0  # method cascade: augmentation level of each upsampler's low-res input
    upsampler_scale: float = 1.0  # methods cascade, unclip: CFG scale of the upsampler stages
    prior_scale: float = 1.0  # method unclip: CFG scale of the prior
    prior_candidates: int = 1  # method unclip: prior samples per caption, the best by C_T · C_I kept

    def __post_init__(self) -> None:
        self.sampler = SamplerSpec.of(self.sampler)

    def scales_for(self, method: str) -> list[float]:
        """The scales of one method: ``scales`` is one list for all methods or a dict per method."""
        return list(self.scales.get(method, []) if isinstance(self.scales, dict) else self.scales)

    def validate(self) -> None:
        """Refuse settings that cannot make a sweep, with the fix in the message."""
        known = (*method_names(), CASCADE, UNCLIP)
        if not self.methods:
            raise ConfigError(f"the list of methods is empty; choose from {', '.join(known)}.")
        unknown = [m for m in self.methods if m not in known]
        if unknown:
            raise ConfigError(f"unknown guidance method(s) {unknown}; choose from {', '.join(known)}.")
        if self.num_samples < 2:
            raise ConfigError(
                f"num_samples must be at least 2 (FID needs two samples), got {self.num_samples}."
            )
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}.")
        if self.num_real is not None and self.num_real < 2:
            raise ConfigError(f"num_real must be at least 2, got {self.num_real}.")
        check_aug_level(self.aug_level)
        check_candidates(self.prior_candidates)
        for method in self.methods:
            if not self.scales_for(method):
                raise ConfigError(
                    f"the list of guidance scales for {method!r} is empty; give at least one, "
                    "e.g. --scales '[0,1,3]'."
                )


@dataclass
class SweepModels:
    """The trained components a sweep uses; ``classifier``, ``guide`` and ``contrastive`` only for their
    methods. ``extractor`` gives the features and logits of FID, IS and precision/recall; ``evaluator``
    (the evaluator as an extractor, possibly the same object) reads classes: class accuracy comes from its
    logits, and is None without one (Inception's ImageNet logits know nothing of the data's classes).
    ``scorer`` (a contrastive encoder trained apart from the guiding one) gives the CLIP score,
    ``attribute_evaluator`` (an evaluator with attribute heads) the attribute accuracy from the
    evaluator's features."""

    denoiser: Any
    extractor: FeatureExtractor
    classifier: Any = None
    guide: Any = None
    num_classes: int | None = 10
    contrastive: Any = None
    scorer: Any = None
    attribute_evaluator: Any = None
    cascade: Any = None
    unclip: Any = None
    evaluator: FeatureExtractor | None = None

    def conditioned(self, method: str) -> bool:
        """Whether samples of ``method`` follow their label or caption (so class accuracy means something)."""
        if method == CASCADE:
            return self.cascade.num_classes is not None
        if method == UNCLIP:
            return True
        return (
            self.denoiser.num_classes is not None
            or getattr(self.denoiser, "text_encoder", None) is not None
            or method.startswith(("classifier", "clip"))
        )


def check_compatible(models: SweepModels, settings: SweepSettings, prompts: Prompts) -> None:
    """Refuse components that were trained on different data than the denoiser, or that cannot follow
    the prompts."""
    denoiser = models.denoiser
    roles = (
        ("classifier", models.classifier),
        ("guide", models.guide),
        ("contrastive encoder", models.contrastive),
        ("CLIP scorer", models.scorer),
    )
    for role, other in roles:
        if other is None:
            continue
        if tuple(other.image_shape) != tuple(denoiser.image_shape):
            raise ConfigError(
                f"the {role} takes images of shape {tuple(other.image_shape)} but the denoiser makes "
                f"{tuple(denoiser.image_shape)}; pass a {role} trained on the same data."
            )
        if getattr(other, "num_classes", None) != denoiser.num_classes and role == "classifier":
            raise ConfigError(
                f"the classifier knows {other.num_classes} classes but the denoiser {denoiser.num_classes}; "
                "pass a classifier trained on the same data."
            )
    chains = (
        (CASCADE, models.cascade, "--cascade '[BASE.ckpt, UPSAMPLER.ckpt]'"),
        (UNCLIP, models.unclip, "--unclip '[PRIOR.ckpt, DECODER.ckpt(, UPSAMPLER.ckpt)]'"),
    )
    for method, chain, option in chains:
        if method in settings.methods:
            _check_chain(method, chain, denoiser, option)
    if UNCLIP in settings.methods and not prompts.text:
        raise ConfigError(
            "method unclip generates from captions: sample a captioned data set or pass --captions."
        )
    text_model = getattr(denoiser, "text_encoder", None) is not None
    if prompts.text:
        wrong = [m for m in settings.methods if not m.startswith(("cfg", "clip", "autoguidance", UNCLIP))]
        if wrong:
            raise ConfigError(
                f"methods {wrong} guide towards class labels; with captions use cfg, clip or unclip."
            )
        if not text_model and any(m.startswith("cfg") for m in settings.methods):
            raise ConfigError(
                "classifier-free guidance on captions needs a text-conditional denoiser (with a "
                "text_encoder); use --methods '[clip]' with --contrastive PATH for this one."
            )
    elif any(m.startswith("clip") for m in settings.methods):
        raise ConfigError(
            "CLIP guidance needs captions: sample from a captioned data set or pass --captions."
        )
    elif denoiser.num_classes is None and any(m.startswith("cfg") for m in settings.methods):
        raise ConfigError(
            "classifier-free guidance needs a class-conditional denoiser, and this one is unconditional; "
            "use --methods '[classifier]' with --classifier PATH, or a conditional denoiser."
        )
    if not prompts.text and denoiser.num_classes not in (None, models.num_classes):
        raise ConfigError(
            f"the evaluator knows {models.num_classes} classes but the denoiser {denoiser.num_classes}: "
            "it was trained on another data set; pass an evaluator trained on the denoiser's data."
        )


def _check_chain(method: str, chain: Any, denoiser: Any, option: str) -> None:
    """Refuse a chained method (cascade, unclip) without its stages, or whose final images differ in
    shape from the denoiser's (metrics compare every row at one resolution)."""
    if chain is None:
        raise ConfigError(f"method {method} needs its stages: pass {option}.")
    if tuple(chain.image_shape) != tuple(denoiser.image_shape):
        raise ConfigError(
            f"the {method} stages make images of shape {tuple(chain.image_shape)} but the denoiser "
            f"{tuple(denoiser.image_shape)}; metrics compare both at one resolution, so pass a denoiser "
            "trained at the final resolution of the stages."
        )


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str = "w") -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, mode, newline="" if "b" not in mode else None) as handle:
        write(handle)
    os.replace(tmp, path)


def write_rows(out: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``sweep.json`` and ``sweep.csv`` atomically (a killed run leaves the last complete table)."""
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / "sweep.json", lambda f: json.dump(rows, f, indent=2))

    def write_csv(handle: Any) -> None:
        writer = csv.DictWriter(handle, fieldnames=ROW_KEYS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    _atomic_write(out / "sweep.csv", write_csv)


def read_rows(out: Path) -> list[dict[str, Any]]:
    """Rows a previous run already wrote to ``out/sweep.json`` (none if it does not exist)."""
    path = out / "sweep.json"
    if not path.is_file():
        return []
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{path} is not valid JSON ({error}); move it away to start the sweep afresh."
        ) from None


def reference_key(
    source_spec: Any, image_shape: Sequence[int], split: str, extractor: str, count: int
) -> str:
    """Cache key of real-data features: data source, split, image shape, extractor (network and a digest
    of its weights, see ``FeatureExtractor.name``) and count."""
    payload = json.dumps([source_spec, list(image_shape), split, extractor, count], sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def reference_features(
    real_batches: Callable[[], Iterable[Tensor]],
    extractor: FeatureExtractor,
    cache_file: Path,
    batch_size: int,
    device: torch.device,
) -> Tensor:
    """Real-data features (N, D) in float32, computed once by rank 0 and cached on disk; every rank
    memory-maps the file (50,000 x 2048 Inception features are 400 MB). Rank 0 logs how many real images
    it encoded: 0 on a cache hit."""
    if distributed.rank() == 0:
        if cache_file.is_file():
            log.info("reference features: cache hit (0 real images encoded), %s", cache_file)
        else:
            features = torch.cat(
                [
                    extractor.features_and_logits(chunk.to(device))[0].float().cpu()
                    for batch in real_batches()
                    for chunk in batch.split(batch_size)
                ]
            )
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(cache_file, lambda f: torch.save(features, f), mode="wb")
            log.info(
                "reference features: %d real images encoded with %s, cached in %s",
                len(features),
                extractor.name,
                cache_file,
            )
    distributed.barrier()
    return torch.load(cache_file, weights_only=True, mmap=True)


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
    """Run every (method, scale) row not yet in ``out/sweep.json``; return all rows.

    ``real_batches(n)`` yields n real images of the reference split, batch by batch; ``reference_id``
    identifies that data (source spec) in the cache key. ``prompts`` says what samples are conditioned
    on (default: uniform labels over the evaluator's classes). Every rank must call this (metrics are
    collectives).
    """
    settings.validate()
    prompts = prompts or Prompts(num_classes=models.num_classes)
    check_compatible(models, settings, prompts)
    out = Path(out)
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

    rows = distributed.broadcast_object(read_rows(out))
    done = {(row["method"], float(row["scale"])) for row in rows}
    my_indices = list(range(rank, settings.num_samples, world))
    for method in settings.methods:
        for scale in settings.scales_for(method):
            if (method, float(scale)) in done:
                continue
            sample_batch, evaluations_so_far = _row_sampler(models, settings, method, scale)
            metrics.reset_generated()
            start = time.perf_counter()
            kept = Kept()
            wanted = settings.num_samples if settings.save_samples else settings.grid_size
            batches = range(0, len(my_indices), settings.batch_size)
            for first in tqdm(batches, desc=f"{method} s={scale:g}", disable=not progress or rank != 0):
                indices = my_indices[first : first + settings.batch_size]
                generators = sample_generators(settings.seed, indices, device)
                drawn = prompts.draw(generators)
                with torch.no_grad():
                    images = sample_batch(generators, drawn.cond).clamp(-1, 1)
                    features, logits = models.extractor.features_and_logits(images)
                    metrics.update_generated(
                        features, logits, **_judged_outcomes(models, method, images, features, logits, drawn)
                    )
                kept.add(indices, images, drawn, wanted)
            values = metrics.compute()
            evaluations = sum(distributed.gather_objects(evaluations_so_far()))
            seconds = max(distributed.gather_objects(time.perf_counter() - start))
            samples, labels, captions = kept.gather()
            row = {
                "method": method,
                "scale": float(scale),
                **values,
                "nfe": evaluations / settings.num_samples,
                "seconds": seconds,
            }
            rows.append(row)
            if rank == 0:
                tag = f"{method}_{scale_tag(scale)}"
                grid_labels = labels[: settings.grid_size] if labels is not None else None
                grid = sorted_grid(samples[: settings.grid_size], grid_labels)  # by index
                grid_path = save_grid(grid, out / f"grid_{tag}.png")
                if settings.save_samples:
                    extra = {} if captions is None else {"captions": np.array(captions)}
                    save_npz(out / f"samples_{tag}.npz", samples, labels, **extra)
                write_rows(out, rows)
                if log_row is not None:
                    log_row(row, grid_path)
    if rank == 0:
        from lightning_diffusion.curves import plot_curves

        plot_curves(rows, out / "curves.png")
    distributed.barrier()
    return rows


def _row_sampler(
    models: SweepModels, settings: SweepSettings, method: str, scale: float
) -> tuple[Callable[[Sequence[torch.Generator], dict[str, Any]], Tensor], Callable[[], int]]:
    """How one row samples a batch ``(generators, cond) -> images``, and a count of the network rows
    it has denoised so far (for NFE): a guided denoiser, the cascade with its base stage at ``scale``, or
    the unCLIP chain with its decoder at ``scale`` (image rows only: the prior's are embedding vectors)."""
    if method == CASCADE:
        cascade = _configured_cascade(models.cascade, settings, scale)
        return cascade.generate, lambda: cascade.rows
    if method == UNCLIP:
        prior = replace(
            models.unclip.prior,
            guidance_scale=settings.prior_scale,
            candidates=settings.prior_candidates,
            sampler=settings.sampler,
        )
        chain = Unclip(prior, _configured_cascade(models.unclip.cascade, settings, scale))
        return chain.generate, lambda: chain.rows
    counted = CountingModel(models.denoiser)
    guide = CountingModel(models.guide) if models.guide is not None else None
    guidance = build_guidance(
        method,
        scale,
        classifier=models.classifier,
        guide_model=guide,
        contrastive=models.contrastive,
        interval=settings.interval if "interval" in get_method(method).required else None,
        rescale=settings.rescale,
        threshold=settings.threshold,
    )

    def sample_batch(generators: Sequence[torch.Generator], cond: dict[str, Any]) -> Tensor:
        return generate(counted, guidance, generators, cond, settings.sampler)

    return sample_batch, lambda: counted.rows + (guide.rows if guide is not None else 0)


def _configured_cascade(cascade: Cascade, settings: SweepSettings, scale: float) -> Cascade:
    """``cascade`` sampled with the sweep's sampler and steps, its base stage at CFG ``scale`` and its
    upsamplers at ``upsampler_scale`` and ``aug_level``."""
    return Cascade(
        [
            replace(
                stage,
                sampler=settings.sampler,
                guidance_scale=scale if index == 0 else settings.upsampler_scale,
                aug_level=0.0 if index == 0 else settings.aug_level,
            )
            for index, stage in enumerate(cascade.stages)
        ]
    )


def _judged_outcomes(
    models: SweepModels, method: str, images: Tensor, features: Tensor, logits: Tensor, drawn: Drawn
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
    if evaluated is not None and drawn.labels is not None and models.conditioned(method):
        outcomes["class_correct"] = (evaluated[1].argmax(dim=1) == drawn.labels).float()
    if drawn.captions is not None and models.scorer is not None:
        outcomes["clip_scores"] = clip_scores(models.scorer, images, drawn.captions)
    if evaluated is not None and drawn.attributes is not None and models.attribute_evaluator is not None:
        predicted = models.attribute_evaluator.attribute_predictions_from(evaluated[0])
        outcomes["attribute_correct"] = (predicted == drawn.attributes).float().mean(dim=1)
    return outcomes
