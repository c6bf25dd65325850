"""Sampling from trained components: the Python API that ``make demo`` and ``evaluate.py`` build on."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from lightning_diffusion import shared_prefix
from lightning_diffusion.components.denoiser import Denoiser
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import SamplerSpec, randn, sample_generators
from lightning_diffusion.guidance import ClassifierFree, Condition, Guidance, GuidedDenoiser
from lightning_diffusion.registry import load_component


def _as_denoiser(model: Denoiser | str | Path, device: torch.device | str | None) -> Denoiser:
    if isinstance(model, (str, Path)):
        model = load_component(model, kind="denoiser", map_location=device or "cpu")
    elif device is not None:
        model = model.to(device)
    return model


def labels_for(model: Any, labels: Sequence[int] | Tensor | None, n: int | None) -> Tensor | None:
    """The labels to sample as a long tensor (None for ``n`` unconditional samples), after refusing
    labels for an unconditional ``model`` (anything with ``num_classes``), labels that are not classes of
    it, or a count that is not a positive integer or disagrees with the labels."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ConfigError(
            f"give the labels to sample, or the number n of unconditional samples (a positive integer), got "
            f"n={n!r}."
        )
    if labels is None:
        if n is None:
            raise ConfigError("give the labels to sample, or the number n of unconditional samples (n >= 1).")
        return None
    labels = _as_labels(labels)
    if labels.numel() == 0:
        raise ConfigError("the list of labels to sample is empty; give at least one label.")
    if model.num_classes is None:
        raise ConfigError(
            "this denoiser is unconditional (num_classes: null): sample with n=..., not labels."
        )
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= model.num_classes:
        raise ConfigError(
            f"labels must lie in [0, {model.num_classes - 1}] (the classes of this model), got values from "
            f"{low} to {high}; for samples that ignore the label use guidance_scale=0."
        )
    if n is not None and n != labels.numel():
        raise ConfigError(f"n={n} disagrees with the {labels.numel()} labels given; pass one of them.")
    return labels


def _as_labels(labels: Sequence[int] | Tensor) -> Tensor:
    """``labels`` as a flat long tensor, refusing values that are not whole numbers (rather than
    truncating 1.5 to 1)."""
    try:
        values = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"labels must be a list of class indices (integers), got {labels!r}.") from None
    fractional = values.is_floating_point() or values.is_complex() or values.dtype == torch.bool
    if values.numel() and fractional:
        raise ConfigError(f"labels must be class indices (integers), got {values.dtype} values {labels!r}.")
    return values.to(torch.long).reshape(-1)


class CountingModel:
    """Proxy that counts the rows a model denoises, to report network evaluations per sample (NFE). It is
    where a shared trajectory prefix (``shared_prefix``) records network calls and replays them uncounted."""

    def __init__(self, model: Denoiser) -> None:
        self.model = model
        self.rows = 0

    def denoise(self, z: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        prefix = shared_prefix.active()
        replayed = None if prefix is None else prefix.replayed(self.model, z, t, cond)
        if replayed is not None:
            return replayed
        self.rows += z.shape[0]
        output = self.model.denoise(z, t, cond)
        if prefix is not None:
            prefix.record(self.model, z, t, cond, output)
        return output

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def draw_labels(generators: Sequence[torch.Generator], num_classes: int) -> Tensor:
    """One uniformly random label per sample, each from its own generator (drawn before its noise)."""
    return torch.cat([torch.randint(num_classes, (1,), generator=g, device=g.device) for g in generators])


def generate(
    model: Denoiser | CountingModel,
    guidance: Guidance,
    generators: Sequence[torch.Generator],
    cond: Condition,
    sampler: SamplerSpec | str = "ddim",
) -> Tensor:
    """One batch: sample i starts from noise of generator i and draws its sampler noise from it too;
    ``sampler`` is a spec or a solver name (with its defaults)."""
    device = next(model.parameters()).device
    noise = randn(generators, model.sample_shape).to(device)
    denoise = GuidedDenoiser(model, guidance, cond)
    prefix = shared_prefix.active()
    if prefix is not None:
        denoise = prefix.guard(denoise, model, guidance)
    return SamplerSpec.of(sampler).sample(denoise, noise, model.schedule, generators)


@torch.no_grad()
def sample_in_batches(
    generate_batch: Callable[[Sequence[torch.Generator], Condition], Tensor],
    conditions: Mapping[str, Tensor] | None,
    total: int,
    device: torch.device,
    seed: int = 0,
    first_index: int = 0,
    batch_size: int = 256,
    desc: str = "sampling",
    progress: bool = False,
) -> Tensor:
    """``total`` images from ``generate_batch(generators, cond)``, batch by batch: sample i (counting
    from ``first_index``) draws its noise from a generator seeded by (seed, i), so a sample is the same
    whatever the batch size; ``conditions`` (e.g. ``{"label": labels}``, one row per sample, if given)
    condition the samples."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
    batches = []
    for start in tqdm(range(0, total, batch_size), desc=desc, disable=not progress):
        stop = min(start + batch_size, total)
        generators = sample_generators(seed, range(first_index + start, first_index + stop), device)
        cond = {key: value[start:stop].to(device) for key, value in (conditions or {}).items()}
        batches.append(generate_batch(generators, cond).cpu())
    return torch.cat(batches).clamp(-1, 1)


def sample(
    model: Denoiser | str | Path,
    labels: Sequence[int] | Tensor | None = None,
    n: int | None = None,
    guidance_scale: float = 1.0,
    guidance: Guidance | None = None,
    sampler: SamplerSpec | str | Mapping[str, Any] = "ddim",
    seed: int = 0,
    first_index: int = 0,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Tensor:
    """Draw images in [-1, 1], shape (N, C, H, W), from a denoiser or its checkpoint.

    Sample i (counting from ``first_index``) draws its noise from a generator seeded by (seed, i), so
    a sample is the same whatever the batch size. ``guidance`` defaults to classifier-free guidance at
    ``guidance_scale`` (s = 1 conditional, s = 0 unconditional, s > 1 guided). ``sampler`` is a
    ``SamplerSpec``, a solver name or a mapping of its fields, e.g. ``{"name": "dpmpp_2m", "steps": 20}``.
    """
    sampler = SamplerSpec.of(sampler)
    if not math.isfinite(guidance_scale):
        raise ConfigError(f"guidance_scale must be a finite number, got {guidance_scale}.")
    model = _as_denoiser(model, device)
    labels = labels_for(model, labels, n)
    guidance = guidance or ClassifierFree(guidance_scale)
    return sample_in_batches(
        lambda generators, cond: generate(model, guidance, generators, cond, sampler),
        None if labels is None else {"label": labels},
        labels.numel() if labels is not None else n,
        next(model.parameters()).device,
        seed,
        first_index,
        batch_size,
        f"sampling s={guidance_scale:g}",
        progress,
    )


def to_uint8(images: Tensor) -> Tensor:
    """Map images in [-1, 1] to uint8 in [0, 255] (the rounding guided-diffusion's npz files use)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
