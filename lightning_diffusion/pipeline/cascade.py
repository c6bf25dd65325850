"""Cascaded diffusion (Ho et al. 2021): a base denoiser at low resolution followed by SR3 upsamplers.

Each stage samples with its own sampler spec and classifier-free guidance scale; an upsampler stage
takes the previous stage's output (clamped to [-1, 1]) as its low-res condition, noised at the stage's
``aug_level`` (Gaussian conditioning augmentation, Sec. 3). Every random draw of sample i, in every stage,
comes from generator i, so a sample does not depend on the batch it is drawn in.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_diffusion.compatibility import Trained, check_together, recorded_data
from lightning_diffusion.components.denoiser import Denoiser
from lightning_diffusion.components.upsampler import Upsampler
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import SamplerSpec
from lightning_diffusion.guidance import Condition, Guidance, build_guidance
from lightning_diffusion.registry import load_component
from lightning_diffusion.resampling import check_aug_level
from lightning_diffusion.sampling import CountingModel, generate, labels_for, sample_in_batches


@dataclass
class CascadeStage:
    """One stage and how to sample it: ``guidance_scale`` is the scale of the stage's guidance ``method``
    (a registered guidance method needing no extra model, classifier-free guidance on the stage's
    label/caption by default; 1 = plain conditional) with ``method_options`` (e.g. multi_cfg's per-condition
    scales on an unCLIP decoder), ``aug_level`` the augmentation level of an upsampler's low-res input
    (0 = clean; the base stage has none); ``sampler`` a spec or a solver name."""

    model: Denoiser
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    guidance_scale: float = 1.0
    aug_level: float = 0.0
    method: str = "cfg"
    method_options: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        self.sampler = SamplerSpec.of(self.sampler)
        check_aug_level(self.aug_level)
        self.guidance().check_model(self.model)  # a bad method, option or model is refused here, once

    def guidance(self) -> Guidance:
        """The stage's guidance, built afresh for each sampling run."""
        return build_guidance(self.method, self.guidance_scale, options=self.method_options)


def _stage_name(index: int, stage: CascadeStage) -> str:
    shape = "x".join(map(str, getattr(stage.model, "image_shape", ())))
    return f"stage {index} ({type(stage.model).__name__}, {shape})"


def _check_stages(stages: Sequence[CascadeStage]) -> None:
    """Refuse a cascade whose stages do not chain: a base denoiser, then upsamplers of matching sizes."""
    if not stages:
        raise ConfigError("a cascade needs at least one stage (the base denoiser).")
    base = stages[0]
    if isinstance(base.model, Upsampler) or not isinstance(base.model, Denoiser):
        raise ConfigError(
            f"{_stage_name(0, base)} must be a base denoiser (kind 'denoiser'), not an upsampler; put the "
            "upsamplers after it."
        )
    if base.aug_level != 0.0:
        raise ConfigError(f"{_stage_name(0, base)} has no low-res input: leave its aug_level at 0.")
    for index, stage in enumerate(stages):
        if stage.guidance_scale != 1.0 and not stage.model.null_condition(1, torch.device("cpu")):
            raise ConfigError(
                f"{_stage_name(index, stage)} has no label or caption to guide: set its guidance_scale to 1."
            )
        if index == 0:
            continue
        previous = stages[index - 1].model
        if not isinstance(stage.model, Upsampler):
            raise ConfigError(
                f"{_stage_name(index, stage)} follows {_stage_name(index - 1, stages[index - 1])} and must "
                "be an upsampler (kind 'upsampler')."
            )
        if stage.model.low_res_shape != tuple(previous.image_shape):
            raise ConfigError(
                f"{_stage_name(index, stage)} takes low-res images of shape {stage.model.low_res_shape} but "
                f"{_stage_name(index - 1, stages[index - 1])} makes {tuple(previous.image_shape)}; chain an "
                f"upsampler with low_res_size {previous.image_shape[-1]} and {previous.image_shape[0]} "
                "channels."
            )
        if None not in (stage.model.num_classes, base.model.num_classes) and (
            stage.model.num_classes != base.model.num_classes
        ):
            raise ConfigError(
                f"{_stage_name(index, stage)} knows {stage.model.num_classes} classes but the base "
                f"{base.model.num_classes}; use stages trained on the same classes."
            )


def check_stage_data(
    models: Sequence[nn.Module], paths: Sequence[str | Path], allow_cross_data: bool
) -> None:
    """Refuse an upsampler trained on another data set, other classes or another caption vocabulary than
    the base stage (their image sizes chain by construction, checked with the stages)."""
    base = Trained(f"the base stage ({paths[0]})", models[0], recorded_data(paths[0]))
    for index, (model, path) in enumerate(zip(models[1:], paths[1:], strict=True), start=1):
        stage = Trained(f"cascade stage {index} ({path})", model, recorded_data(path))
        fix = "chain stages trained on the same data (or allow_cross_data to mix them on purpose)."
        check_together(stage, base, ("classes", "vocabulary", "source"), fix, allow_cross_data)


def _per_stage(value: Any, count: int, name: str) -> list[Any]:
    """``value`` repeated ``count`` times, or the ``count`` values of a list."""
    if not isinstance(value, (list, tuple)):
        return [value] * count
    if len(value) != count:
        raise ConfigError(f"{name} lists {len(value)} values for {count} stages; give one value or {count}.")
    return list(value)


class Cascade:
    """A base denoiser and upsamplers used like one generator of final-resolution images.

    Offers what a sweep needs of a denoiser: ``image_shape`` (the final one), ``num_classes`` (the
    base's), ``parameters()``, ``device``, ``generate(generators, cond)`` and network-evaluation counts
    per stage (``rows_per_stage``: denoised rows, i.e. NFE times samples, guidance included)."""

    def __init__(self, stages: Sequence[CascadeStage]) -> None:
        _check_stages(stages)
        self.stages = list(stages)
        self.counters = [CountingModel(stage.model) for stage in self.stages]

    @classmethod
    def from_checkpoints(
        cls,
        paths: Sequence[str | Path],
        sampler: SamplerSpec | str | Sequence[SamplerSpec | str] = "ddim",
        guidance_scale: float | Sequence[float] = 1.0,
        aug_level: float | Sequence[float] = 0.0,
        map_location: torch.device | str = "cpu",
        allow_cross_data: bool = False,
    ) -> Cascade:
        """Load stage 0 as a ``denoiser`` checkpoint and the others as ``upsampler`` checkpoints; every
        upsampler must have been trained on the base's data set, classes and caption vocabulary (unless
        ``allow_cross_data``).

        Each setting is one value for every stage or a list with one per stage; ``aug_level`` is one
        value or one per upsampler (the base stage takes none)."""
        if not paths:
            raise ConfigError("a cascade needs at least one checkpoint (the base denoiser).")
        count = len(paths)
        models = [
            load_component(path, kind="denoiser" if index == 0 else "upsampler", map_location=map_location)
            for index, path in enumerate(paths)
        ]
        check_stage_data(models, paths, allow_cross_data)
        levels = [0.0, *_per_stage(aug_level, count - 1, "aug_level")]
        settings = zip(
            models,
            _per_stage(sampler, count, "sampler"),
            _per_stage(guidance_scale, count, "guidance_scale"),
            levels,
            strict=True,
        )
        return cls([CascadeStage(*values) for values in settings])

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) of the final images."""
        return tuple(self.stages[-1].model.image_shape)

    @property
    def num_classes(self) -> int | None:
        """The base denoiser's number of classes (None when unconditional)."""
        return self.stages[0].model.num_classes

    def parameters(self) -> Iterator[nn.Parameter]:
        """Every stage's parameters."""
        return itertools.chain.from_iterable(stage.model.parameters() for stage in self.stages)

    @property
    def device(self) -> torch.device:
        """The device of the base stage."""
        return next(self.stages[0].model.parameters()).device

    @property
    def rows_per_stage(self) -> list[int]:
        """Rows each stage's network has denoised since the last ``reset_counts``."""
        return [counter.rows for counter in self.counters]

    @property
    def rows(self) -> int:
        """Rows denoised by all stages together since the last ``reset_counts``."""
        return sum(self.rows_per_stage)

    def reset_counts(self) -> None:
        """Start counting network evaluations afresh."""
        for counter in self.counters:
            counter.rows = 0

    @torch.no_grad()
    def generate(self, generators: Sequence[torch.Generator], cond: Condition) -> Tensor:
        """Final-resolution images in [-1, 1] for one batch; ``cond`` (e.g. ``{"label": labels}``)
        reaches every stage, sample i draws all its noise from ``generators[i]``, stage after stage."""
        images: Tensor | None = None
        for stage, counter in zip(self.stages, self.counters, strict=True):
            stage_cond = dict(cond)
            if images is not None:
                images = images.to(next(stage.model.parameters()).device)
                stage_cond.update(stage.model.low_res_condition(images, stage.aug_level, generators))
            images = generate(counter, stage.guidance(), generators, stage_cond, stage.sampler).clamp(-1, 1)
        return images


def sample_cascade(
    cascade: Cascade,
    labels: Sequence[int] | Tensor | None = None,
    n: int | None = None,
    seed: int = 0,
    first_index: int = 0,
    batch_size: int = 64,
    progress: bool = False,
) -> Tensor:
    """Draw final-resolution images in [-1, 1], shape (N, C, H, W), from a cascade, on its device.

    As ``sampling.sample``: sample i (counting from ``first_index``) draws its noise from a generator
    seeded by (seed, i), so it is the same whatever the batch size; give ``labels`` for a
    class-conditional base, or ``n`` for an unconditional one."""
    labels = labels_for(cascade, labels, n)
    total = labels.numel() if labels is not None else n
    return sample_in_batches(
        cascade.generate,
        None if labels is None else {"label": labels},
        total,
        cascade.device,
        seed,
        first_index,
        batch_size,
        "cascade",
        progress,
    )
