"""An upsampler's fidelity on real images: downsample them, upsample them again with the upsampler and
with bilinear interpolation, and score both with ``metrics.upsampling.UpsamplingMetrics``."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_diffusion.components.upsampler import Upsampler
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import SamplerSpec, sample_generators
from lightning_diffusion.guidance import ClassifierFree
from lightning_diffusion.metrics.upsampling import UpsamplingMetrics
from lightning_diffusion.resampling import upsample_images
from lightning_diffusion.sampling import generate


@torch.no_grad()
def evaluate_upsampler(
    upsampler: Upsampler,
    images: Tensor,
    batch_size: int = 64,
    sampler: SamplerSpec | str = "ddim",
    seed: int = 0,
    aug_level: float = 0.0,
    labels: Tensor | None = None,
) -> dict[str, float]:
    """Downsample real ``images`` (N, C, H, W) in [-1, 1] with the upsampler's filter, upsample them
    again with the upsampler (its low-res input noised at ``aug_level``; ``labels`` for a class-
    conditional one, else ∅) and with bilinear interpolation, and score both against the originals.

    Returns ``psnr``, ``consistency``, ``bilinear_psnr`` and ``bilinear_consistency``; sample i draws
    its noise from a generator seeded by (seed, i)."""
    if tuple(images.shape[1:]) != tuple(upsampler.image_shape):
        raise ConfigError(
            f"the upsampler makes images of shape {tuple(upsampler.image_shape)} but the real images have "
            f"shape {tuple(images.shape[1:])}; evaluate it on the data it was trained on."
        )
    if labels is not None and len(labels) != len(images):
        raise ConfigError(f"got {len(labels)} labels for {len(images)} images; give one label per image.")
    device = next(upsampler.parameters()).device
    metrics = {
        name: UpsamplingMetrics(upsampler.low_res_size, upsampler.downsample).to(device)
        for name in ("upsampler", "bilinear")
    }
    guidance = ClassifierFree(1.0)
    for start in range(0, len(images), batch_size):
        target = images[start : start + batch_size].to(device)
        low_res = upsampler.low_res_of(target)
        generators = sample_generators(seed, range(start, start + len(target)), device)
        cond = upsampler.low_res_condition(low_res, aug_level, generators)
        if labels is not None:
            cond["label"] = labels[start : start + batch_size].to(device)
        output = generate(upsampler, guidance, generators, cond, sampler)
        metrics["upsampler"].update(output, target, low_res)
        metrics["bilinear"].update(upsample_images(low_res, target.shape[-2:]), target, low_res)
    values = metrics["upsampler"].compute()
    values.update({f"bilinear_{name}": value for name, value in metrics["bilinear"].compute().items()})
    return values
